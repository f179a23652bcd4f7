"""Embedding throughput: the embed stage's Ray Data path (sentence-transformers in an actor pool) against
calling SentenceTransformer.encode directly, same rows (the amazon-toys-p5 item texts, twice: 23,848 rows),
same batch size; median of 3 runs each. Both sides start cold: the direct side in a fresh Python process
(imports, model load, encode), the Ray side in a fresh actor (imports, model load, encode) on a running local
Ray. The steady-state rate after the first batch is reported too.

    python -m benchmarks.embedding [--smoke]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

from hnl_ray.config import load_config
from hnl_ray.llm.embedder import embed_dataset
from hnl_ray.llm.models import default_sentence_model

from ._common import SHARED, report, smoke_flag

BATCH = 128


def texts() -> list[str]:
    out = []
    for line in (SHARED / "amazon-toys-p5" / "item_text.txt").read_text().splitlines():
        _, _, text = line.partition(" ")
        out.append(text)
    return out


def main() -> None:
    smoke = smoke_flag(__doc__)
    rows = [f"item {k}: a small red toy car with {k % 7} wheels" for k in range(200)] if smoke else texts() * 2
    repeats = 1 if smoke else 3
    model = default_sentence_model()
    direct = []
    src = ("import sys; from hnl_ray.llm.embedder import SentenceEmbedder; "
           "rows = open(sys.argv[2]).read().split('\\n'); "
           f"SentenceEmbedder(sys.argv[1], {BATCH}, None, 'cpu', 'float32').encode(rows)")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(rows))
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", src, model, f.name], check=True)
        direct.append(time.perf_counter() - t0)
    os.unlink(f.name)

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    cfg = load_config(sets=[f"embed.batch_size={BATCH}"]).embed
    via_ray, steady = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n, first = 0, None
        ds = ray.data.from_items([{"text": t} for t in rows])
        for b in embed_dataset(ds, cfg).iter_batches(batch_format="numpy", batch_size=1024):
            if first is None:
                first, n_first = time.perf_counter(), len(b["vector"])
            n += len(b["vector"])
        via_ray.append(time.perf_counter() - t0)
        steady.append((n - n_first) / (time.perf_counter() - first))
        assert n == len(rows)
    ray.shutdown()
    d, r = statistics.median(direct), statistics.median(via_ray)
    report("embedding", f"all-MiniLM-L6-v2 on {len(rows):,} item texts, batch {BATCH} (cold start both sides)",
           ["path", "time (median of 3)", "rows/s", "ratio"], [
               ["SentenceTransformer.encode, direct (fresh process)", f"{d:.1f} s", f"{len(rows) / d:.0f}", "1.00"],
               ["embed stage path: Ray Data actor pool (fresh actor)", f"{r:.1f} s", f"{len(rows) / r:.0f}",
                f"{d / r:.2f}"],
               ["  the same, steady state after the first batch", "", f"{statistics.median(steady):.0f}",
                f"{statistics.median(steady) / (len(rows) / d):.2f}"],
           ], {"rows": len(rows), "batch_size": BATCH, "direct_s": direct, "ray_s": via_ray, "smoke": smoke,
               "ray_steady_rows_per_s": steady, "ratio_ray_over_direct_throughput": d / r}, smoke=smoke)


if __name__ == "__main__":
    main()
