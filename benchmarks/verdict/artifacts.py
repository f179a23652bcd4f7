"""LLM-stage outputs kept in the repository (benchmarks/artifacts/<dataset>/<stage folder>/), so that a fresh
machine with an empty runs/ skips a stage whose fingerprint matches instead of redoing hours of CPU work.

`seed_run` copies a stored stage folder (its manifest and outputs) into a run directory that lacks it; the stage's
own manifest check then decides: same fingerprint -> skipped, anything else -> redone as usual. `save` stores a
finished stage folder when it is compact (the dataset's folder < 20 MB; a file over 2 MB is stored in parts under
2 MB, joined byte for byte when seeded).

    python -m benchmarks.verdict.artifacts save --dataset amazon-scientific --run-dir RUN --folder hardneg

A fine-tuning that outlasts a session is carried instead: `carry` stores the latest checkpoint of the unfinished
run (adapter, optimiser state, progress; ~8 MB on the encoder rung) under carried/finetune/, and `seed_run`
puts it in a fresh run directory's finetune/carried/, where the stage resumes from it when the fingerprint matches:

    python -m benchmarks.verdict.artifacts carry --dataset amazon-toys-p5 --run-dir RUN
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from hnl_ray.storage import RunDir

ROOT = Path(__file__).resolve().parents[2]
STORE = Path(os.environ.get("HNL_BENCH_ARTIFACTS") or ROOT / "benchmarks" / "artifacts")  # tests: a temp folder
FILE_LIMIT = 2 * 1024 * 1024
FOLDER_LIMIT = 20 * 1024 * 1024
SKIP = ("checkpoint", "run.json", ".tmp")  # resumable scratch, not results
SCRATCH_DIRS = ("ray", "carried")  # Ray Train's / Tune's own storage under a stage folder; a carried checkpoint
CARRIED = "carried"  # benchmarks/artifacts/<dataset>/carried/<folder>/: an unfinished stage's latest checkpoint


def _files(folder: Path) -> list[Path]:
    def kept(p: Path) -> bool:
        rel = p.relative_to(folder).parts
        return not (rel[0] in SCRATCH_DIRS or p.name.startswith(".") or any(s in part for s in SKIP for part in rel))

    return sorted(p for p in folder.rglob("*") if p.is_file() and kept(p))


def stored(dataset: str) -> list[str]:
    """Stage folders stored for a dataset (relative paths, e.g. `hardneg`, `profiles/users`)."""
    base = STORE / dataset
    return sorted(str(m.parent.relative_to(base)) for m in base.rglob("manifest.json")
                  if m.relative_to(base).parts[0] not in (RESULTS, CARRIED)) if base.exists() else []


PART = ".part-"  # a file over the limit is stored as <name>.part-000, .part-001, ... and joined when seeded


def _copy_in(src: Path, files: list[Path], run: RunDir, dst: str) -> None:
    """Write stored files into the run folder `dst`, joining the parts of a split file byte for byte."""
    joined: dict[str, list[Path]] = {}
    for f in files:
        name = str(f.relative_to(src))
        if PART in f.name:
            joined.setdefault(name.rpartition(PART)[0], []).append(f)
        else:
            run.write_bytes(f"{dst}/{name}", f.read_bytes())
    for name, parts in joined.items():
        run.write_bytes(f"{dst}/{name}", b"".join(p.read_bytes() for p in sorted(parts)))


def seed_run(dataset: str, run: RunDir) -> list[str]:
    """Copy stored stage folders into `run` where it has no manifest for them, and a carried checkpoint into an
    unfinished stage that has none or an older one; returns what was copied."""
    copied = []
    for folder in stored(dataset):
        if run.exists(folder, "manifest.json"):
            continue  # the run's own result wins; its stage decides whether it is fresh
        src = STORE / dataset / folder
        _copy_in(src, _files(src), run, folder)
        copied.append(folder)
    base = STORE / dataset / CARRIED
    for info in sorted(base.glob("*/carried.json")) if base.exists() else []:
        folder, src = info.parent.name, info.parent
        if run.exists(folder, "manifest.json"):
            continue
        have = run.read_json(f"{folder}/{CARRIED}/carried.json") if run.exists(folder, CARRIED, "carried.json") \
            else None
        new = json.loads(info.read_text())
        if have is not None and have.get("fingerprint") == new["fingerprint"] and have.get("step", 0) >= new["step"]:
            continue  # the run already holds this checkpoint or a later one
        _copy_in(src, sorted(p for p in src.iterdir() if p.is_file()), run, f"{folder}/{CARRIED}")
        copied.append(f"{folder} (carried checkpoint, step {new['step']})")
    return copied


# A table's finished work, kept so that a table resumes on a fresh machine (a session is one sitting): per CF run
# what the statistics read (manifest, metrics, per-user test metrics, test ranks; not the weights, which would
# not fit), and per row its record, its sweep's choice and its false-hard-negative diagnostic. ~70 KB per run.
RESULTS = "results"
RUN_RESULTS = ("per_user_test.parquet", "ranks_test.parquet")


def _result_files(run: RunDir, rows: list[str], seeds: list[int]) -> list[str]:
    from .config import base_row, draw_folder

    out = []
    for name in rows:
        out += [p for p in (f"bench/rows/{name}.json", f"bench/sweeps/{name}/sweep.json", f"bench/fhn/{name}.json")
                if run.exists(p)]
        cf = "/".join(p for p in (draw_folder(name), "cf") if p)  # a further draw's runs: draws/<S>/cf
        for folder in (f"v-{base_row(name)}-s{seed}" for seed in seeds):
            if run.exists(cf, folder, "manifest.json") and all(
                    run.exists(cf, folder, f) for f in ("metrics.json", *RUN_RESULTS)):
                out += [f"{cf}/{folder}/{f}" for f in ("manifest.json", "metrics.json", *RUN_RESULTS)]
    return out


def keep_results(bench, run: RunDir, rows: list[str]) -> int:
    """With `keep_results` set, copy the finished results of `rows` into benchmarks/artifacts/<dataset>/results/
    (new or changed files only); returns the number of files written."""
    if not bench.keep_results:
        return 0
    dataset, seeds = bench.dataset, bench.seeds
    base = STORE / dataset / RESULTS
    written = 0
    for rel in _result_files(run, rows, seeds):
        data = run.read_bytes(rel)
        dst = base / rel
        if dst.exists() and dst.read_bytes() == data:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        written += 1
    return written


def seed_results(dataset: str, run: RunDir) -> int:
    """Copy kept results into a run directory that lacks them; a CF run whose config or inputs changed since
    has another fingerprint and is trained again (train_one's `results_kept`)."""
    base = STORE / dataset / RESULTS
    if not base.exists():
        return 0
    copied = 0
    for f in sorted(p for p in base.rglob("*") if p.is_file()):
        rel = str(f.relative_to(base))
        if not run.exists(rel):
            run.write_bytes(rel, f.read_bytes())
            copied += 1
    return copied


def save(dataset: str, run_dir: str, folder: str) -> dict:
    src = Path(run_dir) / folder
    if not (src / "manifest.json").exists():
        raise SystemExit(f"{src}: no manifest.json (the stage did not finish)")
    manifest = json.loads((src / "manifest.json").read_text())
    files = _files(src)
    dst = STORE / dataset / folder
    carried = STORE / dataset / CARRIED / folder  # superseded by the finished stage: removed with this save
    others = _store_bytes(dataset, dst, carried)
    total = others + sum(f.stat().st_size for f in files)
    if total >= FOLDER_LIMIT:
        raise SystemExit(f"benchmarks/artifacts/{dataset} would hold {total / 2**20:.1f} MB (limit 20 MB)")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.rmtree(carried, ignore_errors=True)
    for f in files:
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_limited(out, f.read_bytes())
    return {"folder": folder, "files": len(files), "bytes": sum(f.stat().st_size for f in files),
            "fingerprint": manifest.get("fingerprint"), "dataset_total_bytes": total}


def carry(dataset: str, run_dir: str, folder: str = "finetune", fingerprint: str | None = None) -> dict:
    """Store the latest checkpoint of an unfinished fine-tuning (Ray Train's snapshot names it) for the next
    machine: carried/<folder>/ with carried.json (the run's fingerprint, the step). A run directory that holds
    fine-tunings of several configs (one Ray Train run per fingerprint) needs `fingerprint` to say which."""
    src = Path(run_dir) / folder
    if (src / "manifest.json").exists():
        raise SystemExit(f"{src} is finished: store it with `save --folder {folder}` instead")
    snaps = sorted((src / "ray").glob("hnlmrec-*/checkpoint_manager_snapshot.json"), key=lambda p: p.stat().st_mtime)
    if not snaps:
        raise SystemExit(f"{src}/ray: no Ray Train run with a checkpoint")
    found = [p.parent.name.removeprefix("hnlmrec-") for p in snaps]
    if fingerprint is not None:
        if fingerprint not in found:
            raise SystemExit(f"--fingerprint {fingerprint}: no such Ray Train run in {src}/ray "
                             f"(there: {', '.join(found)})")
        snaps = [p for p, f in zip(snaps, found) if f == fingerprint]
    elif len(found) > 1:  # the newest need not be the config's: never carry another config's progress silently
        raise SystemExit(f"{src}/ray holds fine-tunings of {len(found)} configs ({', '.join(found)}): say which "
                         "with --fingerprint (the stage's log names it: hnlmrec-<fingerprint>)")
    snap = json.loads(snaps[-1].read_text())
    latest = (snap.get("latest_checkpoint_result") or {}).get("checkpoint_dir_name")
    if not latest:
        raise SystemExit(f"{snaps[-1]}: no checkpoint reported yet")
    ck = snaps[-1].parent / latest
    fp = snaps[-1].parent.name.removeprefix("hnlmrec-")
    state = json.loads((ck / "state.json").read_text())
    step = state["step"]
    dst = STORE / dataset / CARRIED / folder
    others = _store_bytes(dataset, dst)
    files = sorted(p for p in ck.iterdir() if p.is_file())
    total = others + sum(f.stat().st_size for f in files)
    if total >= FOLDER_LIMIT:
        raise SystemExit(f"benchmarks/artifacts/{dataset} would hold {total / 2**20:.1f} MB (limit 20 MB)")
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for f in files:
        _write_limited(dst / f.name, f.read_bytes())
    # which teacher targets it trained on: the next machine's stage compares them with its own. The checkpoint's
    # own record first (the run directory's current targets may be another config's); runs begun before the
    # record existed fall back to the run directory's.
    from hnl_ray.stages.finetune import supervisions

    digest = (supervisions(state.get("history") or []) or [None])[-1] or carried_digest(Path(run_dir))
    (dst / "carried.json").write_text(json.dumps({"fingerprint": fp, "step": step, "from": latest,
                                                  **({"teacher_pairs": digest} if digest else {})}) + "\n")
    return {"folder": folder, "step": step, "fingerprint": fp, "bytes": total - others, "dataset_total_bytes": total}


def carried_digest(run_dir: Path) -> str | None:
    """The digest of the run directory's teacher targets (finetune.targets_digest), None without them."""
    from hnl_ray.artifacts import Artifacts
    from hnl_ray.stages.finetune import targets_digest
    from hnl_ray.storage import RunDir

    pairs = Artifacts(RunDir(str(run_dir))).teacher_pairs()
    return targets_digest(pairs) if pairs is not None else None


def _store_bytes(dataset: str, *replaced: Path) -> int:
    """Bytes of everything stored for a dataset (results and carried checkpoints included) outside `replaced`."""
    base = STORE / dataset
    return sum(f.stat().st_size for f in base.rglob("*")
               if f.is_file() and not any(r == f or r in f.parents for r in replaced)) if base.exists() else 0


def _write_limited(out: Path, data: bytes) -> None:
    """One file, or its parts under the per-file limit."""
    if len(data) < FILE_LIMIT:
        out.write_bytes(data)
        return
    step = FILE_LIMIT - 1
    for k, start in enumerate(range(0, len(data), step)):
        out.with_name(f"{out.name}{PART}{k:03d}").write_bytes(data[start: start + step])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save", help="store a finished stage folder of a run directory")
    s.add_argument("--dataset", required=True)
    s.add_argument("--run-dir", required=True)
    s.add_argument("--folder", action="append", required=True)
    c = sub.add_parser("carry", help="store the latest checkpoint of an unfinished fine-tuning")
    c.add_argument("--dataset", required=True)
    c.add_argument("--run-dir", required=True)
    c.add_argument("--folder", default="finetune")
    c.add_argument("--fingerprint", help="which fine-tuning, when the run directory holds several")
    sub.add_parser("list", help="what is stored").add_argument("--dataset", required=True)
    args = ap.parse_args()
    if args.cmd == "save":
        for folder in args.folder:
            print(json.dumps(save(args.dataset, args.run_dir, folder)))
    elif args.cmd == "carry":
        print(json.dumps(carry(args.dataset, args.run_dir, args.folder, args.fingerprint)))
    else:
        print("\n".join(stored(args.dataset)) or "(nothing stored)")


if __name__ == "__main__":
    main()
