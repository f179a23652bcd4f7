"""LightGCN training step on the Yelp2018 graph (forward + backward + Adam, 3 layers, d 64, batch 2048, one uniform
negative): the custom propagation backward of hnl_ray/cf/graph.py against plain autograd through torch.sparse.mm
(`train.model.backward: custom | autograd`).

The two paths run interleaved in one process (A B B A A B ...: each run of one path is next to a run of the
other, and which goes first alternates), on the same batches, warm-up runs excluded; so a shared, loaded machine
slows both alike. Reported: medians, ranges, and the median of the per-pair ratios. `--epoch` adds a full
LightGCN and MF epoch (minutes on 2 cores).

    python -m benchmarks.train_step [--runs 12] [--warmup 2] [--epoch]
    python -m benchmarks.train_step --smoke      # tiny synthetic graph, seconds; writes under benchmarks/.work
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch

from hnl_ray.artifacts import Artifacts
from hnl_ray.cf.data import CFData
from hnl_ray.cf.graph import BACKWARDS
from hnl_ray.cf.trainer import Trainer
from hnl_ray.config.cf import TrainConfig
from hnl_ray.storage import RunDir

from ._common import cpu_model, prepared, report, synthetic


def trainer(data: CFData, run: RunDir, backward: str, batch: int, name: str = "lightgcn") -> Trainer:
    cfg = TrainConfig.model_validate({"model": {"name": name, "dim": 64, "layers": 3, "backward": backward},
                                      "optim": {"batch_size": batch}})
    return Trainer(cfg, data, run.sub("cf", f"bench-{name}-{backward}"), f"bench-{name}-{backward}", 0,
                   progress=False)


def interleaved(trainers: dict[str, Trainer], data: CFData, runs: int, warmup: int, batch: int
                ) -> dict[str, list[float]]:
    """Step times per path; run k of every path uses the same batch, and the order of the paths alternates."""
    rng = np.random.default_rng(0)
    names = list(trainers)
    times: dict[str, list[float]] = {k: [] for k in names}
    for k in range(runs + warmup):
        idx = rng.integers(0, data.n_train, batch)
        users, pos = data.train[0][idx], data.train[1][idx]
        for name in (names if k % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            trainers[name]._step(users, pos, 1, k)
            if k >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def epoch_time(tr: Trainer) -> float:
    t0 = time.perf_counter()
    tr._epoch(1)
    return time.perf_counter() - t0


def load() -> list[float]:
    return list(os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=12, help="timed steps per path (>= 10 for the README figure)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per path first")
    ap.add_argument("--epoch", action="store_true", help="also time one full LightGCN and one MF epoch")
    ap.add_argument("--smoke", action="store_true", help="tiny synthetic graph, 3 runs: checks that it runs")
    args = ap.parse_args()
    batch = 2048
    if args.smoke:
        data, tmp = synthetic(), tempfile.TemporaryDirectory()
        run, runs, warmup, batch, title = RunDir(tmp.name), 3, 1, 256, "synthetic smoke graph"
    else:
        _, run = prepared("yelp2018-lightgcn.yaml", "yelp2018")
        data, runs, warmup, title = Artifacts(run).cf_data(), args.runs, args.warmup, "Yelp2018"
    load_before = load()
    trainers = {b: trainer(data, run, b, batch) for b in BACKWARDS}
    times = interleaved(trainers, data, runs, warmup, batch)
    ratios = [a / c for a, c in zip(times["autograd"], times["custom"])]  # > 1: custom is faster
    med = statistics.median
    payload = {"smoke": args.smoke, "data": title, "train_pairs": data.n_train, "batch": batch, "dim": 64,
               "layers": 3, "runs_per_path": runs, "warmup_per_path": warmup, "interleaved": True,
               "load_avg_1_5_15_before": load_before, "load_avg_1_5_15_after": load(),
               "torch_threads": torch.get_num_threads(), "cpu": cpu_model(),
               "autograd_over_custom_ratio_median": med(ratios), "faster": min(BACKWARDS, key=lambda b: med(times[b]))}
    rows = []
    for b in BACKWARDS:
        t = times[b]
        payload[f"{b}_step_s_median"], payload[f"{b}_step_s_range"], payload[f"{b}_step_s_runs"] = \
            med(t), [min(t), max(t)], t
        label = "custom backward (graph.py)" if b == "custom" else "plain torch.sparse.mm autograd"
        rows.append([f"LightGCN step, {label}", f"{med(t):.3f} s", f"{min(t):.3f}-{max(t):.3f} s",
                     f"median of {runs}"])
    rows.append(["autograd / custom, per interleaved pair", f"{med(ratios):.2f}x",
                 f"{min(ratios):.2f}-{max(ratios):.2f}x", f"median of {runs}"])
    if args.epoch:
        steps = int(np.ceil(data.n_train / batch))
        lgn = epoch_time(trainers[payload["faster"]])
        mf = epoch_time(trainer(data, run, "custom", batch, name="mf"))
        payload.update(lightgcn_epoch_s=lgn, mf_epoch_s=mf, steps_per_epoch=steps)
        rows += [[f"LightGCN epoch ({steps} steps, {payload['faster']})", f"{lgn:.1f} s", "", "one epoch"],
                 [f"MF epoch ({steps} steps)", f"{mf:.1f} s", "", "one epoch"]]
    report("train_step", f"LightGCN step on {title} ({data.n_train:,} train pairs, d 64, batch {batch}); "
                         f"load avg before {load_before[0]:.1f}", ["what", "median", "range", "runs"], rows, payload,
           smoke=args.smoke)


if __name__ == "__main__":
    main()
