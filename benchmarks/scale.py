"""Scale on one node: `hnl-ray prepare` on a ~10M-interaction synthetic dataset (400k users x 100k items), then one
LightGCN epoch and one full-ranking evaluation of every validation user, each phase in its own process with its
time and the peak RSS of its whole process tree (benchmarks/memwatch.py).

    python -m benchmarks.scale             # the full size (needs ~16 GiB free; check `free -g` on a shared machine)
    python -m benchmarks.scale --smoke     # 1/100 of it, a minute
    python -m benchmarks.scale --fraction 0.1

Writes benchmarks/results/scale[-<fraction>].json (the smoke: benchmarks/.work/smoke/scale-smoke.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import yaml

from ._common import WORK, report
from .memwatch import watch

FULL = {"n_users": 400_000, "n_items": 100_000, "mean_interactions": 25}

TRAIN_CHILD = r"""
import json, sys, time
from hnl_ray.artifacts import Artifacts
from hnl_ray.cf.trainer import Trainer
from hnl_ray.config.cf import TrainConfig
from hnl_ray.storage import RunDir
t0 = time.perf_counter()
run = RunDir(sys.argv[1])
data = Artifacts(run).cf_data()
load_s = time.perf_counter() - t0
cfg = TrainConfig.model_validate({"model": {"name": "lightgcn", "dim": 64, "layers": 3},
                                  "optim": {"batch_size": int(sys.argv[2])}, "eval": {"ks": [20]}})
trainer = Trainer(cfg, data, run.sub("cf", "scale"), "scale", 0, progress=False)
out = {"load_s": load_s, "n_users": data.n_users, "n_items": data.n_items, "n_train": int(data.n_train)}
max_steps = int(sys.argv[3])
steps = -(-data.n_train // cfg.optim.batch_size)
if max_steps and max_steps < steps:  # a capped epoch: the same steps (memory peaks in the first), time extrapolated
    import numpy as np
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for k in range(max_steps):
        idx = rng.integers(0, data.n_train, cfg.optim.batch_size)
        trainer._step(data.train[0][idx], data.train[1][idx], 1, k)
    step_s = (time.perf_counter() - t0) / max_steps
    out.update({"steps_run": max_steps, "steps_per_epoch": steps, "step_s": step_s,
                "epoch_s_extrapolated": step_s * steps})
else:
    t0 = time.perf_counter(); losses = trainer._epoch(1)
    out.update({"epoch_s": time.perf_counter() - t0, "steps_per_epoch": steps, "loss": losses["loss"]})
print(json.dumps(out), flush=True)  # a partial line first: a run killed during evaluation keeps the epoch
t0 = time.perf_counter(); res = trainer.evaluate("valid"); eval_s = time.perf_counter() - t0
out.update({"eval_s": eval_s, "valid_users": len(res.users),
            "metrics": {k: float(v) for k, v in res.metrics.items()}})
print(json.dumps(out), flush=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="1/100 of the full size")
    ap.add_argument("--fraction", type=float, default=1.0, help="share of the full users and items")
    ap.add_argument("--batch-size", type=int, default=8192, help="LightGCN positive pairs per step")
    ap.add_argument("--max-steps", type=int, default=0,
                    help="run only this many steps of the epoch and extrapolate its time (0: the whole epoch)")
    args = ap.parse_args()
    fraction = 0.01 if args.smoke else args.fraction
    tag = "scale-smoke" if args.smoke else ("scale" if fraction == 1.0 else f"scale-{fraction:g}")
    data = {"format": "synthetic", "n_users": int(FULL["n_users"] * fraction),
            "n_items": int(FULL["n_items"] * fraction), "mean_interactions": FULL["mean_interactions"]}
    work = WORK / tag
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({"name": tag, "seed": 0, "data": data,
                                      "split": {"method": "random", "ratios": [0.8, 0.1, 0.1]}}))
    run_dir = work / "run"
    prep = watch([sys.executable, "-m", "hnl_ray.cli", "prepare", "--config", str(config), "--run-dir",
                  str(run_dir)])
    if prep["rc"]:
        raise SystemExit(f"prepare failed (rc {prep['rc']})")
    stats = json.loads((run_dir / "prepared" / "stats.json").read_text())
    out_file = work / "train.json"
    train = watch(["bash", "-c", f'"$0" -c "$1" "$2" "$3" "$4" > "{out_file}"', sys.executable, TRAIN_CHILD,
                   str(run_dir), str(args.batch_size), str(args.max_steps)])
    lines = out_file.read_text().strip().splitlines()
    if train["rc"] and not lines:
        raise SystemExit(f"LightGCN epoch / evaluation failed (rc {train['rc']})")
    t = json.loads(lines[-1])
    epoch = (f"{t['epoch_s']:.1f} s" if "epoch_s" in t else
             f"{t['epoch_s_extrapolated']:.0f} s (extrapolated from {t['steps_run']} steps of {t['step_s']:.2f} s)")
    gib = 2**30
    rows = [["prepare (generate, filter, split, write)", f"{prep['wall_s']:.1f} s",
             f"{prep['peak_tree_rss_bytes'] / gib:.2f} GiB"],
            ["load prepared data + build LightGCN", f"{t['load_s']:.1f} s", ""],
            [f"one LightGCN epoch ({t['n_train']:,} pairs, {t['steps_per_epoch']} steps of {args.batch_size})",
             epoch, ""],
            [f"full-ranking evaluation ({t.get('valid_users', 0):,} users x {t['n_items']:,} items)",
             f"{t['eval_s']:.1f} s" if "eval_s" in t else f"did not finish (rc {train['rc']})", ""],
            ["train + evaluate process", f"{train['wall_s']:.1f} s", f"{train['peak_tree_rss_bytes'] / gib:.2f} GiB"]]
    report(tag, f"Scale: {data['n_users']:,} users x {data['n_items']:,} items synthetic", ["phase", "time",
           "peak RSS (process tree)"], rows,
           {"fraction": fraction, "data": data, "batch_size": args.batch_size, "max_steps": args.max_steps, "prepare": prep, "train": train,
            "train_detail": t, "prepare_stats": stats,
            "load_average_at_end": os.getloadavg(),
            "note": "timings are distorted when anything else runs on the machine: see load_average_at_end"},
           smoke=args.smoke)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
