"""Sampler throughput on the Yelp2018 train pairs: the vectorised uniform sampler against a per-sample Python loop
that re-draws while the item is a training positive (the reference code's pattern), in one run; plus the cost per
batch of DNS and MixGCF (M = 32 candidates, LightGCN d 64, 3 layers).

    python -m benchmarks.sampler [--smoke]
"""

from __future__ import annotations

import random

import numpy as np
import torch

from hnl_ray.artifacts import Artifacts
from hnl_ray.cf.models import build_model
from hnl_ray.cf.samplers import build_sampler
from hnl_ray.config.cf import ModelConfig, SamplerConfig

from ._common import median_time, prepared, report, smoke_flag, synthetic


def loop_sampler(users: np.ndarray, user_sets: list[set], n_items: int) -> list[int]:
    """The reference pattern: one Python draw per positive, re-drawn while it is a training item."""
    out = []
    for u in users:
        j = random.randint(0, n_items - 1)
        while j in user_sets[u]:
            j = random.randint(0, n_items - 1)
        out.append(j)
    return out


def main() -> None:
    smoke = smoke_flag(__doc__)
    if smoke:
        data, title, batch, repeats, k = synthetic(), "a tiny synthetic graph", 256, 1, 2000
    else:
        _, run = prepared("yelp2018-lightgcn.yaml", "yelp2018")
        data, title, batch, repeats, k = Artifacts(run).cf_data(), "Yelp2018 train pairs", 2048, 5, 300_000
    users, pos = data.train
    n = len(users)
    rng = np.random.default_rng(0)
    uni = build_sampler(SamplerConfig(name="uniform"), data, rng)

    def epoch_in_batches():
        for s in range(0, n, batch):
            uni.sample(users[s:s + batch], pos[s:s + batch])

    t_batched, runs_batched = median_time(epoch_in_batches, repeats=repeats)
    t_whole, runs_whole = median_time(lambda: uni.sample(users, pos), repeats=repeats)

    indptr, idx = data.train_csr
    user_sets = [set(idx[indptr[u]:indptr[u + 1]].tolist()) for u in range(data.n_users)]
    random.seed(0)
    k = min(k, n)  # a slice keeps the loop's run short; its rate is per negative
    t_loop, runs_loop = median_time(lambda: loop_sampler(users[:k], user_sets, data.n_items),
                                    repeats=min(3, repeats))

    rate_batched, rate_whole, rate_loop = n / t_batched, n / t_whole, k / t_loop
    model = build_model(ModelConfig(name="lightgcn", dim=64, layers=3), data.n_users, data.n_items, *data.train)
    per_batch = {}
    for name in ("uniform", "dns", "mixgcf"):
        s = build_sampler(SamplerConfig(name=name, candidates=32), data, np.random.default_rng(1))
        with torch.no_grad():  # the embeddings the trainer hands this sampler: per layer for MixGCF
            emb = model(layers=s.needs_layers)
        starts = np.random.default_rng(2).integers(0, n - batch, 20)
        it = iter(starts)

        def one():
            st = next(it)
            with torch.no_grad():
                s.sample(users[st:st + batch], pos[st:st + batch], emb, model)

        per_batch[name], _ = median_time(one, repeats=15 if not smoke else 2, warmup=2 if not smoke else 1)

    rows = [
        ["uniform, vectorised, one call per epoch (the trainer's path)", f"{rate_whole / 1e6:.1f} M/s",
         f"{t_whole:.3f} s per epoch"],
        [f"uniform, vectorised, one call per batch of {batch}", f"{rate_batched / 1e6:.1f} M/s",
         f"{t_batched:.3f} s per epoch"],
        ["uniform, per-sample Python loop (reference pattern)", f"{rate_loop / 1e6:.2f} M/s",
         f"{n / rate_loop:.1f} s per epoch"],
        ["speed-up: per epoch / loop", f"{rate_whole / rate_loop:.0f}x", ""],
        ["speed-up: per batch / loop", f"{rate_batched / rate_loop:.0f}x", ""],
    ] + [[f"{name} per batch of {batch} (M=32)", f"{v * 1000:.1f} ms", ""] for name, v in per_batch.items()]
    report("sampler", f"Negative sampling on {title} ({n:,} positives, {data.n_items:,} items)",
           ["what", "throughput", "time"], rows, {
               "pairs": n, "negatives_per_s_batched": rate_batched, "negatives_per_s_whole_epoch": rate_whole,
               "negatives_per_s_loop": rate_loop, "speedup_batched_vs_loop": rate_batched / rate_loop,
               "speedup_epoch_vs_loop": rate_whole / rate_loop,
               "epoch_s_batched_runs": runs_batched, "epoch_s_whole_runs": runs_whole, "loop_s_runs": runs_loop,
               "loop_sample_size": k, "ms_per_batch": {k: v * 1000 for k, v in per_batch.items()},
               "method": "median of 5 (vectorised), 3 (loop) runs; per-batch costs median of 15 batches",
               "batch": batch, "smoke": smoke,
           }, smoke=smoke)


if __name__ == "__main__":
    main()
