"""Batched generation with the `hf` engine's generator against one request at a time (the reference code's
pattern), same model (SmolLM2-135M-Instruct, offline), same prompts (item-profile prompts of the demo data), same
max tokens, constrained JSON decoding in both; plus the same batch through Ray Data (the stage's real path).

    python -m benchmarks.generation [--prompts 16] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

from hnl_ray.config import load_config
from hnl_ray.llm import prompts
from hnl_ray.llm.engines.hf import HFGenerator
from hnl_ray.llm.models import default_llm
from hnl_ray.llm.parse import FAILED, validate
from hnl_ray.llm.schemas import SCHEMAS, json_schema_str
from hnl_ray.stages import run_stage
from hnl_ray.stages.profiles import item_prompts
from hnl_ray.storage import RunDir

from ._common import ROOT, WORK, report


def demo_prompts(n: int) -> pa.Table:
    cfg = load_config(ROOT / "configs" / "demo.yaml", run_dir=str(WORK / "demo"))
    run_stage("prepare", cfg)
    run = RunDir(str(WORK / "demo"))
    table, _ = item_prompts(cfg, run.read_parquet("prepared/items.parquet"),
                            run.read_parquet("prepared/train.parquet"), prompts.load("item_profile", "products"))
    return table.slice(0, n)


def batch_of(rows: list[dict]) -> dict:
    return {"id": np.array([r["id"] for r in rows]), "kind": np.array([r["kind"] for r in rows]),
            "system": np.array([r["system"] for r in rows]), "user": np.array([r["user"] for r in rows]),
            "temperature": np.zeros(len(rows)), "seed": np.zeros(len(rows), np.int64)}


def run_gen(gen: HFGenerator, rows: list[dict], batch: int) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    tokens, valid = 0, 0
    for s in range(0, len(rows), batch):
        out = gen(batch_of(rows[s: s + batch]))
        tokens += int(out["gen_tokens"].sum())
        valid += sum(validate("item_profile", t).status != FAILED for t in out["text"])
    return time.perf_counter() - t0, tokens, valid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    rows = demo_prompts(args.prompts).to_pylist()
    gen = HFGenerator(default_llm(), args.max_new_tokens, 1024, 1.0, True, {k: json_schema_str(k) for k in SCHEMAS},
                      None, "auto", "auto", repetition_penalty=1.15)
    gen(batch_of(rows[:2]))  # warm-up: grammar compile, first-call allocations
    t_one, tok_one, ok_one = run_gen(gen, rows, 1)
    t_bat, tok_bat, ok_bat = run_gen(gen, rows, len(rows))

    import ray

    from hnl_ray.llm.engines.base import build_engine

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cfg = load_config(sets=[f"llm.max_new_tokens={args.max_new_tokens}", f"llm.batch_size={len(rows)}"]).llm
    t0 = time.perf_counter()
    tok_ray = 0
    for out in build_engine(cfg).generate(ray.data.from_items(
            [{**r, "temperature": 0.0, "seed": 0} for r in rows])).iter_batches(batch_format="pyarrow"):
        tok_ray += sum(out["gen_tokens"].to_pylist())
    t_ray = time.perf_counter() - t0
    ray.shutdown()

    rate_one, rate_bat, rate_ray = tok_one / t_one, tok_bat / t_bat, tok_ray / t_ray
    n = len(rows)
    report("generation", f"SmolLM2-135M-Instruct, {n} item-profile prompts, max {args.max_new_tokens} new tokens, "
                         "JSON-constrained", ["mode", "generated tokens", "time", "tokens/s", "parseable"], [
        ["one request at a time (reference pattern)", tok_one, f"{t_one:.1f} s", f"{rate_one:.1f}", f"{ok_one}/{n}"],
        [f"batched ({n} per call)", tok_bat, f"{t_bat:.1f} s", f"{rate_bat:.1f}", f"{ok_bat}/{n}"],
        ["speed-up (batched / one at a time)", "", "", f"{rate_bat / rate_one:.1f}x", ""],
        ["hf engine through Ray Data (actor start included)", tok_ray, f"{t_ray:.1f} s", f"{rate_ray:.1f}", ""],
    ], {"prompts": n, "max_new_tokens": args.max_new_tokens, "one_at_a_time": {"s": t_one, "tokens": tok_one,
        "tokens_per_s": rate_one, "parseable": ok_one}, "batched": {"s": t_bat, "tokens": tok_bat,
        "tokens_per_s": rate_bat, "parseable": ok_bat}, "speedup": rate_bat / rate_one,
        "ray_data": {"s": t_ray, "tokens": tok_ray, "tokens_per_s": rate_ray}})


if __name__ == "__main__":
    main()
