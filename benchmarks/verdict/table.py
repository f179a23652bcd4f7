"""Runs one benchmark table end to end, resuming where it stopped: pipeline stages (skipped by their manifests),
one Ray Tune sweep per row with a grid (through `hnl-ray tune`'s run_tune, chosen on validation), the chosen
setting over every seed (CF runs skipped by their manifests), then the statistics, groups and diagnostics.

Each row's record (bench/rows/<row>.json in the run directory) carries the git commit and the full CF config
it ran; the test split is read only after every choice is made.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hnl_ray import manifest
from hnl_ray.config import Config, load_config
from hnl_ray.config.cf import TrainConfig
from hnl_ray.config.tune import TuneConfig
from hnl_ray.storage import RunDir

from .._common import commit
from . import artifacts
from .config import DRAW, BenchConfig, RowConfig, missing_need, redrawn_rows, row_train

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


git_commit = commit  # the benchmarks' one definition of the code version


def pipeline_config(bench: BenchConfig, here: Path, run_dir: str) -> Config:
    cfg = load_config(here / bench.config if bench.config else None, bench.sets, run_dir=run_dir)
    cfg.train = TrainConfig.model_validate(bench.train)  # the shared CF settings, also the teacher's base
    return cfg


def stage_progress(bench: BenchConfig, cfg: Config, run: RunDir) -> dict[str, str]:
    """Each of the table's stages: `done` (every stage folder it writes has a manifest), `not run yet`, or for an
    unfinished fine-tuning the step of its latest checkpoint (Ray Train's, or the one carried from another
    machine) out of about how many. A progress line, not a check: the stages decide by fingerprint."""
    from hnl_ray import artifacts as A
    from hnl_ray.stages import get

    out = {}
    for name in bench.stages:
        # cf/ holds one manifest per CF run; hardneg-base is written only with hardneg.base_control
        folders = [f for f in get(name).writes if f != "cf" and (f != A.HARDNEG_BASE or cfg.hardneg.base_control)]
        if all(manifest.load(run, f) is not None for f in folders):
            out[name] = "done"
        elif name == "finetune" and (step := finetune_step(run)) is not None:
            out[name] = f"step {step:,} of {finetune_total(cfg, run)} (checkpointed)"
        else:
            out[name] = "not run yet"
    return out


def finetune_step(run: RunDir) -> int | None:
    """The step of an unfinished fine-tuning's latest checkpoint: in the newest Ray Train run (as `carry` takes
    it), else the carried one's. None when there is none or it cannot be read (a run writing it meanwhile)."""
    import json

    from hnl_ray import artifacts as A
    from hnl_ray.artifacts import Artifacts
    from hnl_ray.stages.finetune import carried_info

    try:
        if run.is_local:
            snaps = sorted(Path(run.path(A.FINETUNE, "ray")).glob("hnlmrec-*/checkpoint_manager_snapshot.json"),
                           key=lambda p: p.stat().st_mtime)
            if snaps:
                snap = json.loads(snaps[-1].read_text())
                latest = (snap.get("latest_checkpoint_result") or {}).get("checkpoint_dir_name")
                if latest:
                    return int(json.loads((snaps[-1].parent / latest / "state.json").read_text())["step"])
        info = carried_info(Artifacts(run))
        return int(info["step"]) if info else None
    except (OSError, ValueError, KeyError):
        return None


def finetune_total(cfg: Config, run: RunDir) -> str:
    """About how many steps the fine-tuning takes: its epochs over the teacher's pairs (at most pairs_limit) less
    the held-out share, in batches per worker, capped by max_steps (~: repeated pairs are merged when the stage
    builds its table)."""
    ft = cfg.finetune
    teacher = manifest.load(run, "teacher")
    pairs = (teacher or {}).get("counts", {}).get("pairs_with_target")
    if pairs is None:
        return f"{ft.max_steps:,}" if ft.max_steps else "?"
    pairs = min(pairs, ft.pairs_limit) if ft.pairs_limit else pairs
    per_epoch = int(pairs * (1 - ft.valid_share)) // ft.num_workers // ft.batch_size // ft.grad_accum
    return f"~{min(per_epoch * ft.epochs, ft.max_steps or 10**12):,}"


def row_status(bench: BenchConfig, row: RowConfig, run: RunDir) -> str | None:
    """None when the row can run here, else why it is not run (shown in the table)."""
    for need in row.needs:
        if (why := missing_need(need)) is not None:
            return f"not run (sampler missing: {why})"
    for folder in row.needs_stages:
        if manifest.load(run, folder) is None:
            return f"not run (LLM stage output {folder}/ not in the run directory)"
    row_train(bench, row)  # a typo in a runnable row is an error, not a skipped row
    return None


def sweep(cfg: Config, bench: BenchConfig, name: str, row: RowConfig, run: RunDir) -> dict:
    """The row's grid as one Ray Tune sweep; its chosen point (best validation metric) is cached by fingerprint."""
    base = row_train(bench, row)
    space = {k: {"grid": v} for k, v in row.grid.items()}
    fp = manifest.fingerprint({"train": base.model_dump(mode="json"), "space": space,
                               "sweep": bench.sweep.model_dump(), "metric": bench.metric, "seed": cfg.seed},
                              {"prepared": (manifest.load(run, "prepared") or {}).get("fingerprint", "missing"),
                               **{f: (manifest.load(run, f) or {}).get("fingerprint") for f in row.needs_stages}})
    folder = f"bench/sweeps/{name}"
    if run.exists(folder, "sweep.json") and run.read_json(f"{folder}/sweep.json").get("fingerprint") == fp:
        return run.read_json(f"{folder}/sweep.json")
    from hnl_ray.tune import run_tune

    c = cfg.model_copy(deep=True)
    c.train = base
    s = bench.sweep
    c.tune = TuneConfig(name=f"bench-{name}-{fp[:8]}", metric=bench.metric, search="grid", num_samples=1,
                        max_concurrent_trials=s.max_concurrent_trials, cpus_per_trial=s.cpus_per_trial,
                        scheduler=s.scheduler, grace_period=s.grace_period, reduction_factor=s.reduction_factor,
                        space=space)
    t0 = time.perf_counter()
    for attempt in range(3):  # a local Ray's start can time out on an overloaded machine: try again
        try:
            res = run_tune(c, run)
            break
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == 2:
                raise
            import ray

            ray.shutdown()
            time.sleep(10)
    import csv
    import io

    points = [{**{k: _parse(r[k]) for k in row.grid}, "best_valid": float(r["best_valid"]),
               "epochs": int(r["epochs"])}
              for r in csv.DictReader(io.StringIO(run.read_text(f"tune/{c.tune.name}/results.csv")))]
    failed = [p for p in points if not p["best_valid"] == p["best_valid"]]  # NaN: the trial errored
    if failed:  # an incomplete grid is not an equal budget: nothing is chosen until every point has run
        raise RuntimeError(f"sweep of row {name}: {len(failed)} of {len(points)} trials failed (see "
                           f"{run.path('tune', c.tune.name)}); run the table again: Tune retries errored trials")
    out = {"fingerprint": fp, "tune_name": c.tune.name, "metric": bench.metric, "chosen": res["params"],
           "chosen_valid": res["best_valid"], "points": points, "seconds": time.perf_counter() - t0}
    run.write_json(f"{folder}/sweep.json", out)
    return out


def _parse(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def seed_from_store(bench: BenchConfig, run: RunDir, say: Callable[[str], None]) -> None:
    """The stored stage folders and finished rows' results into a run directory that lacks them (copies only)."""
    if copied := artifacts.seed_run(bench.dataset, run):
        say(f"seeded from benchmarks/artifacts/{bench.dataset}: {', '.join(copied)}")
    if kept := artifacts.seed_results(bench.dataset, run):
        say(f"seeded {kept} files of finished rows from benchmarks/artifacts/{bench.dataset}/results")


def kept_records(bench: BenchConfig, here: Path, run_dir: str, say: Callable[[str], None] = print
                 ) -> dict[str, dict]:
    """The finished rows' records without training (`--report-only`): on a fresh machine the kept results are
    seeded first and the data prepared (the groups need it), so the tables regenerate from a clean checkout. The
    stored stage folders are seeded too (copies only): an unfinished table's progress line then reads the stored
    stages, a carried fine-tuning's step included, as a full run would."""
    from hnl_ray.pipeline import run_pipeline

    run = RunDir(run_dir)
    seed_from_store(bench, run, say)
    records = {n: run.read_json(f"bench/rows/{n}.json") for n in table_rows(bench)
               if run.exists("bench/rows", f"{n}.json")}
    if records:
        run_pipeline(pipeline_config(bench, here, run_dir), run, only="prepare")  # skipped when prepared
    return records


def run_rows(bench: BenchConfig, here: Path, run_dir: str, only: list[str] | None = None,
             say: Callable[[str], None] = print, diagnostics: bool = True,
             stages: list[str] | None = None) -> dict[str, dict]:
    """Everything that trains; returns each row's record. Interrupt and run again: finished work is skipped.
    A finished row's false-hard-negative epoch runs at once, while its seed-1 weights are here (results kept
    for a fresh machine carry no weights)."""
    from hnl_ray.artifacts import Artifacts
    from hnl_ray.pipeline import run_pipeline
    from hnl_ray.stages.train import train_one

    run = RunDir(run_dir)
    cfg = pipeline_config(bench, here, run_dir)
    seed_from_store(bench, run, say)
    for stage in stages if stages is not None else bench.stages:
        run_pipeline(cfg, run, only=stage)
    data = Artifacts(run).cf_data()
    commit = git_commit()
    records: dict[str, dict] = {}
    text = None
    for name, row in bench.rows.items():
        if only and name not in only:
            if run.exists("bench/rows", f"{name}.json"):
                records[name] = run.read_json(f"bench/rows/{name}.json")
            continue
        status = row_status(bench, row, run)
        if status is not None:
            say(f"{name}: {status}")
            records[name] = {"row": name, "kind": row.kind, "status": status, "note": row.note}
            continue
        sw = sweep(cfg, bench, name, row, run) if row.grid else None
        setting = sw["chosen"] if sw else {}
        if row.setting_from:
            src = records.get(row.setting_from) or {}
            if src.get("status") != "run":
                say(f"{name}: not run (its setting comes from row {row.setting_from}, which has not finished)")
                records[name] = {"row": name, "kind": row.kind, "status": f"not run (needs row "
                                 f"{row.setting_from}'s chosen setting first)", "note": row.note}
                continue
            setting = dict(src["setting"])
        tcfg = row_train(bench, row, setting)
        rec = {"row": name, "kind": row.kind, "status": "run", "note": row.note, "commit": commit,
               "setting": setting, "sweep": sw, "config": tcfg.model_dump(mode="json"), "seeds": {}}
        for seed in bench.seeds:
            res = train_one(cfg, run, f"v-{name}-s{seed}", data=data, progress=False,
                            tcfg=tcfg.model_copy(update={"seed": seed}), results_kept=artifacts.RUN_RESULTS)
            artifacts.keep_results(bench, run, [name])  # a fresh machine resumes here
            rec["seeds"][str(seed)] = {"run": f"v-{name}-s{seed}", "best_epoch": res["best_epoch"],
                                       "valid": res["valid"], "test": res["test"],
                                       "skipped": bool(res.get("skipped"))}
            say(f"{name} seed {seed}: valid {bench.metric} {res['valid'][bench.metric]:.4f}"
                + (" (up to date)" if res.get("skipped") else ""))
        prev = run.read_json(f"bench/rows/{name}.json") if run.exists("bench/rows", f"{name}.json") else {}
        if prev.get("config") == rec["config"] and all(s["skipped"] for s in rec["seeds"].values()):
            rec["commit"] = prev.get("commit", commit)  # nothing re-ran: the commit that produced the figures
            rec["finished_at"] = prev.get("finished_at")  # and when it did
        rec["finished_at"] = rec.get("finished_at") or time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        run.write_json(f"bench/rows/{name}.json", rec)
        records[name] = rec
        if diagnostics and bench.diagnostics.false_negatives:
            from .analysis import false_negatives

            if text is None:
                text = item_text_vectors(cfg, run, bench.diagnostics.text_model)
            false_negatives(bench, name, rec, run, data, text)  # cached: skipped when done
        artifacts.keep_results(bench, run, [name])
    for draw in bench.draws:
        records.update(run_draw(bench, here, run_dir, draw, records, commit, only, say, diagnostics,
                                stages if stages is not None else bench.stages))
    return records


def table_rows(bench: BenchConfig) -> list[str]:
    """The bench rows, then each further draw's rows (`hnlmrec@2`)."""
    return list(bench.rows) + [f"{n}{DRAW}{d}" for d in bench.draws for n in redrawn_rows(bench)]


def draw_config(bench: BenchConfig, here: Path, run_dir: str, draw: int) -> Config:
    cfg = load_config(here / bench.config if bench.config else None,
                      [*bench.sets, *bench.draw_sets, f"llm_seed={draw}"], run_dir=f"{run_dir}/draws/{draw}")
    cfg.train = TrainConfig.model_validate(bench.train)
    return cfg


def run_draw(bench: BenchConfig, here: Path, run_dir: str, draw: int, records: dict[str, dict], commit: str,
             only: list[str] | None, say: Callable[[str], None], diagnostics: bool, stages: list[str]
             ) -> dict[str, dict]:
    """Draw `draw` of the LLM stages in RUN/draws/<draw>: the stages outside `draw_stages` are copied from the
    table's run (same fingerprints: skipped), `draw_stages` run with llm_seed = draw, then each row that reads
    them trains at the setting its first-draw row chose (one validation choice per row: the draws measure the
    stages' spread, not a second tuning), over the same CF seeds, into rows `<row>@<draw>`."""
    import shutil

    from hnl_ray.artifacts import Artifacts
    from hnl_ray.pipeline import run_pipeline
    from hnl_ray.stages import get
    from hnl_ray.stages.train import train_one

    run, cfg = RunDir(run_dir), draw_config(bench, here, run_dir, draw)
    if cfg.draw_seed == pipeline_config(bench, here, run_dir).draw_seed:
        raise ValueError(f"draws: {draw} is the first draw's own seed (the pipeline's seed)")
    if not run.is_local:
        raise ValueError(f"draws need a local run directory ({run.uri})")
    drun = RunDir(cfg.run_dir)
    todo = [n for n in redrawn_rows(bench) if not only or n in only or f"{n}{DRAW}{draw}" in only]
    out: dict[str, dict] = {}
    for name in redrawn_rows(bench):
        rel = f"bench/rows/{name}{DRAW}{draw}.json"
        if name not in todo and run.exists(rel):
            out[f"{name}{DRAW}{draw}"] = run.read_json(rel)
    if not todo:
        return out
    shared = [f for s in stages if s not in bench.draw_stages for f in get(s).writes]
    for folder in shared:  # the draw's inputs are the first draw's, byte for byte
        if run.exists(folder, "manifest.json") and not drun.exists(folder, "manifest.json"):
            shutil.copytree(run.path(folder), drun.path(folder), dirs_exist_ok=True)
    for stage in stages:
        run_pipeline(cfg, drun, only=stage)
    data = Artifacts(drun).cf_data()
    text = None
    for name in todo:
        row, tname = bench.rows[name], f"{name}{DRAW}{draw}"
        first = records.get(name) or {}
        status = row_status(bench, row, drun)
        if status is None and first.get("status") != "run":
            status = "not run (its first-draw row has not finished: its setting is chosen there)"
        if status is not None:
            say(f"{tname}: {status}")
            out[tname] = {"row": tname, "kind": row.kind, "status": status, "note": row.note}
            continue
        tcfg = row_train(bench, row, first["setting"])
        rec = {"row": tname, "kind": row.kind, "status": "run", "draw": draw, "run_dir": f"draws/{draw}",
               "note": f"draw {draw} of the LLM stages ({', '.join(bench.draw_stages)}; llm_seed {draw}) at "
                       f"{name}'s chosen setting", "commit": commit, "setting": first["setting"], "sweep": None,
               "config": tcfg.model_dump(mode="json"), "seeds": {}}
        for seed in bench.seeds:
            res = train_one(cfg, drun, f"v-{name}-s{seed}", data=data, progress=False,
                            tcfg=tcfg.model_copy(update={"seed": seed}), results_kept=artifacts.RUN_RESULTS)
            artifacts.keep_results(bench, run, [tname])
            rec["seeds"][str(seed)] = {"run": f"v-{name}-s{seed}", "best_epoch": res["best_epoch"],
                                       "valid": res["valid"], "test": res["test"],
                                       "skipped": bool(res.get("skipped"))}
            say(f"{tname} seed {seed}: valid {bench.metric} {res['valid'][bench.metric]:.4f}"
                + (" (up to date)" if res.get("skipped") else ""))
        prev = run.read_json(f"bench/rows/{tname}.json") if run.exists("bench/rows", f"{tname}.json") else {}
        if prev.get("config") == rec["config"] and all(s["skipped"] for s in rec["seeds"].values()):
            rec["commit"] = prev.get("commit", commit)
            rec["finished_at"] = prev.get("finished_at")  # and when it did
        rec["finished_at"] = rec.get("finished_at") or time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        run.write_json(f"bench/rows/{tname}.json", rec)
        out[tname] = rec
        if diagnostics and bench.diagnostics.false_negatives:
            from .analysis import false_negatives

            if text is None:
                text = item_text_vectors(cfg, run, bench.diagnostics.text_model)
            false_negatives(bench, tname, rec, run, data, text)
        artifacts.keep_results(bench, run, [tname])
    return out


def item_text_vectors(cfg: Config, run: RunDir, model: str | None) -> np.ndarray | None:
    """L2-normalised sentence vectors of every item's text (cached in bench/item_text.parquet)."""
    import pyarrow as pa

    from hnl_ray.arrays import vector_column, vectors
    from hnl_ray.artifacts import Artifacts
    from hnl_ray.llm.embedder import SentenceEmbedder
    from hnl_ray.llm.models import resolve_sentence_model
    from hnl_ray.stages.embed import item_texts

    path = resolve_sentence_model(model or cfg.embed.model)
    fields = [f for f in cfg.embed.item_fields if f != "profile"] or ["title"]
    fp = manifest.fingerprint({"model": path, "fields": fields},
                              {"prepared": (manifest.load(run, "prepared") or {}).get("fingerprint")})
    if run.exists("bench", "item_text.parquet") and run.exists("bench", "item_text.json") and \
            run.read_json("bench/item_text.json").get("fingerprint") == fp:
        return vectors(run.read_parquet("bench/item_text.parquet")["vector"])
    items = Artifacts(run).prepared()["items"].sort_by("item_idx")
    vecs = SentenceEmbedder(path, 128, None, "cpu", "float32").encode(item_texts(items, fields, {}))
    run.write_parquet("bench/item_text.parquet", pa.table({"item_idx": items["item_idx"],
                                                           "vector": vector_column(vecs)}))
    run.write_json("bench/item_text.json", {"fingerprint": fp, "model": path, "fields": fields})
    return vecs
