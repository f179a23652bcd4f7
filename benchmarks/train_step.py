"""Training cost on the Yelp2018 graph: LightGCN step (forward + backward + Adam, 3 layers, d 64, batch 2048) with
hnl-ray's symmetric-spmm backward against plain torch.sparse.mm autograd, in one run; a full LightGCN epoch; a
full MF epoch.

    python -m benchmarks.train_step
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

import hnl_ray.cf.models as models
from hnl_ray.cf.data import CFData
from hnl_ray.cf.trainer import Trainer
from hnl_ray.config.cf import TrainConfig

from ._common import prepared, report


def step_times(trainer: Trainer, data: CFData, n: int, warmup: int = 2) -> list[float]:
    rng = np.random.default_rng(0)
    times = []
    for k in range(n + warmup):
        idx = rng.integers(0, data.n_train, 2048)
        t0 = time.perf_counter()
        trainer._step(data.train[0][idx], data.train[1][idx], 1, k)
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    _, run = prepared("yelp2018-lightgcn.yaml", "yelp2018")
    data = CFData.from_run(run)
    cfg = TrainConfig.model_validate({"model": {"name": "lightgcn", "dim": 64, "layers": 3},
                                      "optim": {"batch_size": 2048}})
    ours = Trainer(cfg, data, run, "bench-step", 0, progress=False)
    t_ours = step_times(ours, data, 20)
    fwd = []
    for _ in range(5):
        t0 = time.perf_counter()
        with torch.no_grad():
            ours.model()
        fwd.append(time.perf_counter() - t0)

    original = models.propagate
    models.propagate = lambda adj, x: torch.sparse.mm(adj, x)  # plain autograd through the CSR product
    try:
        plain = Trainer(cfg, data, run, "bench-step-plain", 0, progress=False)
        t_plain = step_times(plain, data, 3, warmup=1)
    finally:
        models.propagate = original

    t0 = time.perf_counter()
    ours._epoch(1)
    lgn_epoch = time.perf_counter() - t0
    mf_cfg = TrainConfig.model_validate({"model": {"name": "mf", "dim": 64}, "optim": {"batch_size": 2048}})
    mf = Trainer(mf_cfg, data, run, "bench-mf", 0, progress=False)
    mf_epochs = []
    for e in range(3):
        t0 = time.perf_counter()
        mf._epoch(e + 1)
        mf_epochs.append(time.perf_counter() - t0)

    med = statistics.median
    steps = int(np.ceil(data.n_train / 2048))
    rows = [
        ["LightGCN step, symmetric-spmm backward (hnl-ray)", f"{med(t_ours):.3f} s", "median of 20"],
        ["LightGCN step, plain torch.sparse.mm autograd", f"{med(t_plain):.3f} s", "median of 3"],
        ["LightGCN forward only (3 propagations)", f"{med(fwd):.3f} s", "median of 5"],
        [f"LightGCN epoch ({steps} steps)", f"{lgn_epoch:.1f} s", "one epoch"],
        [f"MF epoch ({steps} steps)", f"{med(mf_epochs):.2f} s", "median of 3"],
    ]
    report("train_step", f"Training cost on Yelp2018 ({data.n_train:,} train pairs, d 64, batch 2048)",
           ["what", "time", "runs"], rows, {
               "lightgcn_step_s_median": med(t_ours), "lightgcn_step_s_runs": t_ours,
               "plain_autograd_step_s_median": med(t_plain), "plain_autograd_step_s_runs": t_plain,
               "forward_s_median": med(fwd), "lightgcn_epoch_s": lgn_epoch, "mf_epoch_s_median": med(mf_epochs),
               "mf_epoch_s_runs": mf_epochs, "steps_per_epoch": steps,
           })


if __name__ == "__main__":
    main()
