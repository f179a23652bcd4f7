"""The `hf` engine on the real `profiles` stage's prompts: amazon-scientific user profiles with the verdict table's
LLM settings (configs/bench/pipeline/amazon-scientific.yaml: 6-item history in 160 tokens, 72 new tokens, batch
32, JSON-schema constrained, repetition penalty 1.15), SmolLM2-135M-Instruct offline, greedy, batches in the
stage's order (sorted by prompt length).

Paths, interleaved batch by batch in one process (so a loaded machine slows them alike):
  * `generate`: transformers' generate() (finished rows stay in every step; the engine before this benchmark)
  * `pruned`: the engine's own loop (finished rows leave the batch; the default)
  * `pruned+int8`: the same with dynamically int8-quantized linear layers (`--int8`)
Reported: generated tokens/s per path, parse success (answers that validate), agreement with `generate`, and the
pruned loop's time shares (prefill, decode forward, grammar, rest), which are robust to the machine's load.

The bound: what the same work would take if every matmul ran at the rate this machine reaches on the model's own
linear shapes (measured here, at prefill and at decode batch sizes): 2 x (non-embedding parameters) FLOPs per
prompt token run through the model (the shared system prefix once per batch, each row's rest once, no padding)
plus 2 x (all parameters, the LM head included) per decoded row-step. Attention and everything else count as
free, so the bound is optimistic: generated tokens/s above it cannot be reached without less work (shorter
prompts, fewer answers) or cheaper arithmetic (int8).

    python -m benchmarks.generation [--prompts 64] [--batch 32] [--int8]
    python -m benchmarks.generation --smoke      # 4 prompts, 8 tokens; writes under benchmarks/.work
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from hnl_ray.config import load_config
from hnl_ray.llm import prompts
from hnl_ray.llm.engines.hf import HFGenerator
from hnl_ray.llm.models import resolve_llm
from hnl_ray.llm.parse import FAILED, validate
from hnl_ray.llm.schemas import SCHEMAS, json_schema_str
from hnl_ray.stages import context, run_stage
from hnl_ray.stages.profiles import TokenCounter, text_profiles, user_prompts

from ._common import ROOT, WORK, cpu_model, report

PIPELINE = ROOT / "configs" / "bench" / "pipeline" / "amazon-scientific.yaml"


def profile_prompts(n: int, start: int = 0):
    """n user-profile prompts as the stage builds them, in the stage's order (by length), from the middle."""
    run_dir = str(WORK / "generation-amazon-scientific")
    # Only the first users are turned into prompts (tokenising every history is minutes on a loaded machine).
    cfg = load_config(PIPELINE, [f"profiles.max_users={max(n, 8 * n)}"], run_dir=run_dir)
    run_stage("prepare", cfg)
    ctx = context(cfg, run_dir)
    data = ctx.art.prepared()
    text_profiles(ctx, data["items"], {"prepared": "benchmark"}, {})  # profiles.item_source: text, as the stage
    table, _ = user_prompts(cfg, data["users"], data["train"], data["items"], ctx.art.item_profiles(),
                            prompts.load("user_profile", "products"), TokenCounter(cfg))
    table = table.take(pc.sort_indices(pc.utf8_length(table["user"])))
    start = start if start >= 0 else max(0, (table.num_rows - n) // 2)
    return cfg, table.slice(start, n).to_pylist()


def matmul_rates(model_path: str, decode_rows: int, prefill_rows: int = 4096, repeats: int = 5) -> dict:
    """GFLOP/s of torch's fp32 matmul on one decoder layer's linear shapes of the model, at a decode batch and a
    prefill batch of rows (the machine's real ceiling for this model, not a datasheet's)."""
    import json as _json

    import torch

    c = _json.loads((Path(model_path) / "config.json").read_text())
    h, inter = c["hidden_size"], c["intermediate_size"]
    kv = h * c.get("num_key_value_heads", c["num_attention_heads"]) // c["num_attention_heads"]
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, inter), (h, inter), (inter, h)]  # q k v o gate up down
    weights = [torch.randn(o, i) for i, o in shapes]
    out = {}
    for name, rows in (("decode", decode_rows), ("prefill", prefill_rows)):
        xs = {i: torch.randn(rows, i) for i, _ in shapes}
        flops = sum(2 * rows * i * o for i, o in shapes)
        for w, (i, _) in zip(weights, shapes):
            torch.nn.functional.linear(xs[i], w)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(4 if name == "prefill" else 200):
                for w, (i, _) in zip(weights, shapes):
                    torch.nn.functional.linear(xs[i], w)
            times.append((time.perf_counter() - t0) / (4 if name == "prefill" else 200))
        out[name] = flops / sorted(times)[len(times) // 2] / 1e9
    return out


def param_counts(gen: HFGenerator) -> tuple[int, int]:
    """(all parameters, non-embedding parameters) of the generator's model (tied LM head counted once)."""
    total = sum(p.numel() for p in gen.model.parameters())
    return total, total - gen.model.get_input_embeddings().weight.numel()


def bound(stats: dict, gen_tokens: int, total: int, non_embed: int, rates: dict) -> dict:
    t_prefill = 2 * non_embed * stats.get("prefill_tokens", 0) / (rates["prefill"] * 1e9)
    t_decode = 2 * total * stats.get("row_steps", 0) / (rates["decode"] * 1e9)
    return {"prefill_s_at_matmul_rate": t_prefill, "decode_s_at_matmul_rate": t_decode,
            "tokens_per_s_bound": gen_tokens / (t_prefill + t_decode) if t_prefill + t_decode else None}


def batch_of(rows: list[dict]) -> dict:
    return {"id": np.array([r["id"] for r in rows]), "kind": np.array([r["kind"] for r in rows]),
            "system": np.array([r["system"] for r in rows]), "user": np.array([r["user"] for r in rows]),
            "temperature": np.zeros(len(rows)), "seed": np.zeros(len(rows), np.int64)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch", type=int, default=None, help="default: the pipeline config's llm.batch_size")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: the pipeline config's")
    ap.add_argument("--int8", action="store_true", help="add the int8-quantized pruned path")
    ap.add_argument("--smoke", action="store_true", help="4 prompts, 8 new tokens: checks that it runs")
    args = ap.parse_args()
    n = 4 if args.smoke else args.prompts
    cfg, rows = profile_prompts(n, start=-1)
    llm = cfg.llm
    batch = 2 if args.smoke else (args.batch or llm.batch_size)
    new_tokens = 8 if args.smoke else (args.max_new_tokens or llm.max_new_tokens)
    model = resolve_llm(llm.model, llm.model_cache)
    schemas = {k: json_schema_str(k) for k in SCHEMAS}

    def make(decode: str, quantize: str = "none") -> HFGenerator:
        return HFGenerator(model, new_tokens, llm.max_prompt_tokens, llm.top_p, llm.structured, schemas,
                           llm.threads, "cpu", llm.dtype, repetition_penalty=llm.repetition_penalty,
                           decode=decode, quantize=quantize)

    paths = {"generate": make("generate"), "pruned": make("pruned")}
    if args.int8:
        paths["pruned+int8"] = make("pruned", "int8")
    for gen in paths.values():
        gen(batch_of(rows[:2]))  # warm-up: grammar compile, first allocations
        gen.stats.clear()
    load_before = list(os.getloadavg())
    res = {k: {"s": 0.0, "tokens": 0, "parseable": 0, "texts": []} for k in paths}
    names = list(paths)
    for b, s in enumerate(range(0, n, batch)):
        chunk = batch_of(rows[s: s + batch])
        for name in (names if b % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            out = paths[name](chunk)
            r = res[name]
            r["s"] += time.perf_counter() - t0
            r["tokens"] += int(out["gen_tokens"].sum())
            r["parseable"] += sum(validate("user_profile", t or "").status != FAILED for t in out["text"])
            r["texts"] += list(out["text"])
            if out["error"][0]:
                raise SystemExit(f"{name}: {out['error'][0]}")
    base = res["generate"]
    table, payload = [], {}
    for name, r in res.items():
        same = sum(a == b for a, b in zip(r["texts"], base["texts"]))
        rate = r["tokens"] / r["s"]
        table.append([name, r["tokens"], f"{r['s']:.1f} s", f"{rate:.1f}", f"{rate * base['s'] / base['tokens']:.2f}x",
                      f"{r['parseable']}/{n}", f"{same}/{n}"])
        payload[name] = {"s": r["s"], "tokens": r["tokens"], "tokens_per_s": rate, "parseable": r["parseable"],
                         "same_text_as_generate": same, "stats": paths[name].stats}
    st = paths["pruned"].stats
    parts = {k: st.get(k, 0.0) for k in ("prefill_s", "decode_forward_s", "grammar_s", "loop_other_s")}
    parts["outside_loop_s"] = res["pruned"]["s"] - sum(parts.values())  # rendering, tokenising, shared prefix, decode
    shares = {k: v / res["pruned"]["s"] for k, v in parts.items()}
    payload.update(smoke=args.smoke, prompts=n, batch=batch, max_new_tokens=new_tokens, cpu=cpu_model(),
                   load_avg_1_5_15_before=load_before, load_avg_1_5_15_after=list(os.getloadavg()),
                   pruned_time_shares=shares, pruned_row_steps=st.get("row_steps", 0),
                   generate_row_steps=-(-n // batch) * batch * new_tokens)
    for k, v in shares.items():
        table.append([f"  pruned: {k[:-2]}", "", f"{parts[k]:.1f} s", "", f"{100 * v:.0f} %", "", ""])
    rates = matmul_rates(model, batch, repeats=2 if args.smoke else 5)
    total, non_embed = param_counts(paths["pruned"])
    b = bound(st, res["pruned"]["tokens"], total, non_embed, rates)
    payload.update(matmul_gflops=rates, params={"total": total, "non_embedding": non_embed},
                   prefill_tokens=st.get("prefill_tokens", 0), prefill_padded_tokens=st.get("prefill_padded_tokens", 0),
                   pruned_bound=b)
    table.append(["bound (pruned's work at the measured matmul rate)", res["pruned"]["tokens"],
                  f"{b['prefill_s_at_matmul_rate'] + b['decode_s_at_matmul_rate']:.1f} s",
                  f"{b['tokens_per_s_bound']:.1f}", "", "", ""])
    table.append([f"  matmul GFLOP/s: decode {rates['decode']:.0f}, prefill {rates['prefill']:.0f}; prompt tokens "
                  f"{st.get('prefill_tokens', 0)} (padded {st.get('prefill_padded_tokens', 0)}), decode row-steps "
                  f"{st.get('row_steps', 0)}", "", "", "", "", "", ""])
    report("generation", f"hf engine, SmolLM2-135M, {n} amazon-scientific user-profile prompts, batch {batch}, "
                         f"max {new_tokens} new tokens, JSON-constrained; load avg {load_before[0]:.1f} on "
                         f"{os.cpu_count()} cores",
           ["path", "gen tokens", "time", "tokens/s", "vs generate", "parseable", "same text"], table, payload,
           smoke=args.smoke)


if __name__ == "__main__":
    main()
