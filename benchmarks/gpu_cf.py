"""LightGCN on Yelp2018 on one GPU: seconds per epoch and per full-ranking evaluation, with the CF engine as is.

    mkdir -p .gpu && cp -r ../shared/data/yelp2018 .gpu/   # here: the GPU machine cannot see ../shared
    python -m benchmarks.gpu_cf --data .gpu/yelp2018         # on the GPU machine (no Ray needed)

The settings are `configs/yelp2018-lightgcn.yaml`'s (3 layers, d 64, batch 2048, one uniform negative) with
`train.device=cuda`. A one-epoch run calibrates; a second run trains as many epochs as fit in `--budget-s` (at most
`--epochs`), evaluating every 5; both are far short of the 1000 epochs a converged LightGCN needs, so the accuracy
printed is a waypoint, not a result.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=".gpu/yelp2018", help="the dataset folder ('' = the config's own)")
    ap.add_argument("--config", default="yelp2018-lightgcn.yaml", help="a config under configs/")
    ap.add_argument("--out", default=os.environ.get("OUT"))
    ap.add_argument("--budget-s", type=float, default=200)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="the demo's tiny synthetic data on the CPU, 2 epochs")
    args = ap.parse_args()
    if args.smoke:
        args.data, args.config, args.device, args.epochs, args.budget_s = "", "demo.yaml", "cpu", 2, 5

    from hnl_ray.stages.train import train_one
    from hnl_ray.config import load_config
    from hnl_ray.stages import run_stage
    from hnl_ray.storage import RunDir

    run_dir = "/tmp/gpu-cf-smoke" if args.smoke else "/tmp/gpu-cf-yelp2018"
    base = [f"train.device={args.device}", "train.eval.every=5"]
    if args.smoke:
        base += ["data.n_users=60", "data.n_items=40", "train.runs={}"]
    if args.data:
        base.append(f"data.path={Path(args.data).resolve()}")
    conf = ROOT / "configs" / args.config
    t0 = time.perf_counter()
    run_stage("prepare", load_config(conf, base, run_dir=run_dir))
    prep_s = time.perf_counter() - t0
    results = {}
    cal = load_config(conf, [*base, "train.optim.epochs=1"], run_dir=run_dir)
    r1 = train_one(cal, RunDir(run_dir), "calibrate", progress=False)
    per_epoch = max(r1["seconds_per_epoch_median"], 1e-3)
    epochs = max(2, min(args.epochs, int(args.budget_s / (per_epoch + r1["eval_seconds_median"] / 5))))
    cfg = load_config(conf, [*base, f"train.optim.epochs={epochs}"],
                      run_dir=run_dir)
    t1 = time.perf_counter()
    r = train_one(cfg, RunDir(run_dir), "short", progress=False)
    results = {
        "device": r.get("device"), "prepare_s": round(prep_s, 1), "first_epoch_s": round(per_epoch, 2),
        "epochs": r["epochs_run"], "seconds_per_epoch_median": round(r["seconds_per_epoch_median"], 2),
        "eval_seconds_median": round(r["eval_seconds_median"], 3), "wall_s": round(time.perf_counter() - t1, 1),
        "best_epoch": r["best_epoch"], "valid": r["valid"], "test": r["test"],
    }
    import torch

    if torch.cuda.is_available():
        results["gpu"] = torch.cuda.get_device_name(0)
        results["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(results, indent=1, default=float))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_cf.json").write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
