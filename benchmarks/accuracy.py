"""Accuracy of the CF engine on the shared data, model chosen on validation, test evaluated once.

Parts (run all, or some with --part; each part's result is merged into benchmarks/results/accuracy.json):

* `mf-yelp`: MF-BPR on Yelp2018 (LightGCN split, validation carved from train) against the NGCF paper's MF
  figures (Recall@20 0.0433, NDCG@20 0.0354).
* `lightgcn-toys`: LightGCN on amazon-toys-p5 (per-user 8:1:1) with RecBole's settings (d 64, 3 layers, lr 1e-3,
  batch 2048, reg 1e-4, one uniform negative, full ranking, early stopping on valid NDCG@20, patience 10,
  evaluation every epoch).
* `recbole`: RecBole 1.2.1's LightGCN on the *same split* (exported as RecBole benchmark files) with the same
  settings, installed into its own virtual environment (benchmarks/.work/recbole-venv), wall time included.
* `side-by-side`: `lightgcn-toys` and `recbole` started together, each pinned to its own CPU core with one torch
  thread (`taskset`), so both wall times come from the same run under the same conditions.
* `samplers-toys`: uniform, DNS and MixGCF negatives for LightGCN on amazon-toys-p5, 3 seeds each.

Settings: configs/bench/pipeline/{yelp2018-mf,toys-lightgcn-recbole,toys-samplers}.yaml (they were lists of --set
strings here; benchmarks/results/accuracy.json keeps the settings each recorded figure ran with). The sampler
comparison with equal tuning budgets and intervals is the verdict table (`python -m benchmarks.verdict`).

    python -m benchmarks.accuracy [--part mf-yelp --part lightgcn-toys --part recbole --part side-by-side
                                   --part samplers-toys]
    python -m benchmarks.accuracy --smoke   # the hnl-ray parts on the demo's tiny synthetic data, 2 epochs each
                                            # (RecBole's parts need their own venv install: not in the smoke)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from hnl_ray.stages.train import train_one
from hnl_ray.config import load_config

from ._common import RESULTS, ROOT, WORK, console, prepared, report, smoke_prepared

PARTS = ("mf-yelp", "lightgcn-toys", "recbole", "side-by-side", "samplers-toys")

# Each part's settings are a pipeline config (configs/bench/pipeline/), validated like every config.
PIPELINES = ROOT / "configs" / "bench" / "pipeline"
SEEDS = (1, 2, 3)
SMOKE = {"on": False, "sets": ["train.optim.epochs=2", "train.eval.patience=1"]}
SMOKE_PARTS = ("mf-yelp", "lightgcn-toys", "samplers-toys")


def _load(config: str, run_dir: str | None = None):
    return load_config(PIPELINES / config, SMOKE["sets"] if SMOKE["on"] else [], run_dir=run_dir)


def _run(config: str, data_config: str, data_name: str, run_name: str, tcfg=None, force: bool = True) -> dict:
    # smoke: every part on the demo's tiny synthetic data instead of the shared dataset
    _, run = smoke_prepared("accuracy") if SMOKE["on"] else prepared(data_config, data_name)
    cfg = _load(config, run_dir=run.path())
    t0 = time.perf_counter()
    res = train_one(cfg, run, run_name, force=force, progress=True, tcfg=tcfg or cfg.train.for_run(run_name))
    res["wall_s"] = time.perf_counter() - t0  # data loading, graph, training, evaluation: like run_recbole's
    return res


def _settings(config: str) -> dict:
    return _load(config).train.model_dump(mode="json")


def mf_yelp() -> dict:
    res = _run("yelp2018-mf.yaml", "yelp2018-lightgcn.yaml", "yelp2018", "bench-mf")
    return {"settings": _settings("yelp2018-mf.yaml"), "result": _brief(res),
            "target": {"recall@20": 0.0433, "ndcg@20": 0.0354}}


def lightgcn_toys() -> dict:
    res = _run("toys-lightgcn-recbole.yaml", "amazon-toys-p5.yaml", "amazon-toys-p5", "bench-lightgcn")
    return {"settings": _settings("toys-lightgcn-recbole.yaml"), "result": _brief(res)}


def _claim(path: Path) -> bool:
    """Take a run for this process (several processes may share the sampler grid); a dead owner's claim lapses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            os.kill(int(path.read_text() or 0), 0)
            return False
        except (ProcessLookupError, ValueError):
            path.unlink(missing_ok=True)
            return _claim(path)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def samplers_toys() -> dict:
    """9 runs; finished runs are reused (train_one skips an up-to-date run), and two processes started at once
    (e.g. `taskset -c 0 ...` and `taskset -c 1 ...`) share the grid through claim files."""
    cfg = _load("toys-samplers.yaml")
    out: dict = {"settings": _settings("toys-samplers.yaml"), "seeds": list(SEEDS), "runs": {}}
    grid = [(name, seed) for seed in SEEDS for name in cfg.train.runs]

    def one(name: str, seed: int) -> dict:
        return _run("toys-samplers.yaml", "amazon-toys-p5.yaml", "amazon-toys-p5", f"bench-{name}-s{seed}",
                    tcfg=cfg.train.for_run(name).model_copy(update={"seed": seed}), force=False)

    claims = WORK / ("smoke/claims" if SMOKE["on"] else "claims")
    for name, seed in grid:
        if _claim(claims / f"{name}-s{seed}"):
            one(name, seed)
            (claims / f"{name}-s{seed}").unlink()
    for name, seed in grid:
        while (claims / f"{name}-s{seed}").exists():  # another process is still on it
            time.sleep(10)
        res = one(name, seed)
        brief = _brief(res)
        brief.pop("wall_s")  # a reused run's wall time is its loading time; seconds per epoch are in the brief
        out["runs"].setdefault(name, []).append(brief)
    out["mean"] = {name: {m: statistics.mean(r["test"][m] for r in runs) for m in ("recall@20", "ndcg@20")}
                   for name, runs in out["runs"].items()}
    return out


def _brief(res: dict) -> dict:
    return {k: res[k] for k in ("best_epoch", "epochs_run", "valid", "test", "seconds_per_epoch_median",
                                "eval_seconds_median", "wall_s") if k in res}


# ------------------------------------------------------------------------------------------------ RecBole

RECBOLE_VENV = WORK / "recbole-venv"
RECBOLE_PINS = ["recbole==1.2.1", "setuptools<81",  # RecBole imports ray 2.x, which needs pkg_resources
                "numpy==1.26.4", "pandas==2.1.4", "scipy==1.11.4", "torch==2.13.0"]
RECBOLE_DRIVER = r"""
import json, sys, time
import torch
_load = torch.load
torch.load = lambda *a, **k: _load(*a, **{**k, "weights_only": False})  # RecBole 1.2 predates torch's default
from recbole.quick_start import run_recbole
t0 = time.perf_counter()
res = run_recbole(model="LightGCN", dataset="toys", config_file_list=[sys.argv[1]])
res["wall_s"] = time.perf_counter() - t0
print("RESULT " + json.dumps(res, default=float))
"""


def _recbole_python() -> str:
    py = RECBOLE_VENV / "bin" / "python"
    if not py.exists():
        console.print("creating RecBole's virtual environment (one time)")
        subprocess.run([sys.executable, "-m", "venv", str(RECBOLE_VENV)], check=True)
        subprocess.run([str(RECBOLE_VENV / "bin" / "pip"), "install", "-q", *RECBOLE_PINS], check=True)
    return str(py)


def export_split(run, folder) -> None:
    """Our prepared split as RecBole benchmark files (toys.train.inter / .valid.inter / .test.inter)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        t = run.read_parquet(f"prepared/{split}.parquet", columns=["user_idx", "item_idx"])
        lines = ["user_id:token\titem_id:token"] + [f"u{u}\ti{i}" for u, i in zip(
            t["user_idx"].to_pylist(), t["item_idx"].to_pylist())]
        (folder / f"toys.{split}.inter").write_text("\n".join(lines) + "\n")


def recbole(epochs: int = 500, pin: list[str] | None = None) -> dict:
    """RecBole's LightGCN on our split; `pin` prefixes the command (e.g. taskset) for side-by-side runs."""
    _, run = prepared("amazon-toys-p5.yaml", "amazon-toys-p5")
    data_dir = WORK / "recbole-data"
    export_split(run, data_dir / "toys")
    conf = WORK / "recbole-lightgcn.yaml"
    conf.write_text(json.dumps({
        "data_path": str(data_dir), "benchmark_filename": ["train", "valid", "test"],
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "load_col": {"inter": ["user_id", "item_id"]},
        "embedding_size": 64, "n_layers": 3, "reg_weight": 1e-4, "learning_rate": 1e-3, "train_batch_size": 2048,
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1},
        "eval_args": {"group_by": "user", "order": "RO", "mode": "full"},
        "metrics": ["Recall", "NDCG"], "topk": [20], "valid_metric": "NDCG@20", "stopping_step": 10,
        "epochs": epochs, "eval_step": 1, "seed": 2025, "reproducibility": True, "show_progress": False,
        "checkpoint_dir": str(WORK / "recbole-saved"), "log_wandb": False, "gpu_id": "", "use_gpu": False,
        "worker": 0,
    }))
    py = _recbole_python()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log_path = WORK / "recbole.log"
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run([*(pin or []), py, "-c", RECBOLE_DRIVER, str(conf)], cwd=str(WORK), env=env,
                              stdout=subprocess.PIPE, stderr=log, text=True, check=False)
    wall = time.perf_counter() - t0
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"RecBole failed (exit {proc.returncode}); see {log_path}")
    res = json.loads(line[7:])
    return {"valid": {k.lower(): v for k, v in res["best_valid_result"].items()},
            "test": {k.lower(): v for k, v in res["test_result"].items()}, "best_valid_score": res["best_valid_score"],
            "wall_s": wall, "log": str(log_path.relative_to(ROOT))}


def side_by_side() -> dict:
    """Both systems at once, one core and one torch thread each: the fairest wall-time comparison on 2 cores."""
    if (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        raise SystemExit("side-by-side needs 2 CPU cores and taskset (util-linux)")
    prepared("amazon-toys-p5.yaml", "amazon-toys-p5")  # prepare once, before the clocks start
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = WORK / "side-by-side-hnl-ray.json"
    ours = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-m", "benchmarks.accuracy", "--worker",
                             "lightgcn-toys", "--worker-out", str(out)], cwd=str(ROOT), env=env)
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # inherited by RecBole's process
    theirs = recbole(pin=["taskset", "-c", "0"])
    if ours.wait() != 0:
        raise SystemExit(f"hnl-ray's side of the comparison failed (exit {ours.returncode})")
    mine = json.loads(out.read_text())
    return {"conditions": "started together; hnl-ray on core 1, RecBole on core 0; one torch thread each",
            "hnl-ray": mine, "recbole": theirs, "wall_ratio": mine["result"]["wall_s"] / theirs["wall_s"]}


# ------------------------------------------------------------------------------------------------ main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", action="append", choices=PARTS, help="run only these parts (repeatable)")
    ap.add_argument("--worker", choices=["lightgcn-toys"], help=argparse.SUPPRESS)  # side-by-side's child
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true", help="the hnl-ray parts on tiny synthetic data, 2 epochs; "
                                                          "results under benchmarks/.work/smoke")
    args = ap.parse_args()
    SMOKE["on"] = args.smoke
    if args.worker:
        import torch

        res = lightgcn_toys()
        res["torch_threads"] = torch.get_num_threads()
        Path(args.worker_out).write_text(json.dumps(res, default=float))
        return
    path = (WORK / "smoke" if args.smoke else RESULTS) / "accuracy.json"
    parts = args.part or (SMOKE_PARTS if args.smoke else PARTS)
    if args.smoke and (skipped := sorted(set(parts) - set(SMOKE_PARTS))):
        raise SystemExit(f"--smoke runs {', '.join(SMOKE_PARTS)}; not {', '.join(skipped)} (RecBole's own venv)")
    for part in parts:
        console.rule(part)
        result = {"mf-yelp": mf_yelp, "lightgcn-toys": lightgcn_toys, "recbole": recbole,
                  "side-by-side": side_by_side, "samplers-toys": samplers_toys}[part]()
        result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        # read again: another process may have written other parts meanwhile
        results = json.loads(path.read_text()).get("parts", {}) if path.exists() else {}
        results[part] = result
        _write(results, smoke=args.smoke)


def _write(results: dict, smoke: bool = False) -> None:
    rows = []
    if "mf-yelp" in results:
        r = results["mf-yelp"]["result"]
        rows.append(["MF-BPR, Yelp2018", "hnl-ray", _fmt(r["test"]), r["best_epoch"], f"{r['wall_s'] / 60:.1f} min"])
        rows.append(["MF-BPR, Yelp2018", "NGCF paper (target)", "0.0433 / 0.0354", "-", "-"])
    if "lightgcn-toys" in results:
        r = results["lightgcn-toys"]["result"]
        rows.append(["LightGCN, toys-p5", "hnl-ray", _fmt(r["test"]), r["best_epoch"],
                     f"{r['wall_s'] / 60:.1f} min"])
    if "recbole" in results:
        r = results["recbole"]
        rows.append(["LightGCN, toys-p5", "RecBole 1.2.1, same split", _fmt(r["test"]), "-",
                     f"{r['wall_s'] / 60:.1f} min"])
    if "side-by-side" in results:
        r = results["side-by-side"]
        for label, res in (("hnl-ray", r["hnl-ray"]["result"]), ("RecBole 1.2.1, same split", r["recbole"])):
            rows.append(["LightGCN, toys-p5 (1 core each, together)", label, _fmt(res["test"]),
                         res.get("best_epoch", "-"), f"{res['wall_s'] / 60:.1f} min"])
    if "samplers-toys" in results:
        for name, m in results["samplers-toys"]["mean"].items():
            rows.append([f"LightGCN {name}, toys-p5", "hnl-ray, mean of 3 seeds",
                         f"{m['recall@20']:.4f} / {m['ndcg@20']:.4f}", "-", "-"])
    report("accuracy", "CF accuracy (test Recall@20 / NDCG@20, model chosen on validation)"
           + (" - SMOKE: the demo's tiny synthetic data, not these datasets" if smoke else ""),
           ["model, data", "system", "test R@20 / N@20", "best epoch", "wall"], rows, {"parts": results}, smoke=smoke)


def _fmt(m: dict) -> str:
    return f"{m['recall@20']:.4f} / {m['ndcg@20']:.4f}"


if __name__ == "__main__":
    main()
