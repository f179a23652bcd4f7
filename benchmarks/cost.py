"""The cost model of docs/cost.md: LLM calls, tokens, storage and compute hours per stage for the paper's four
datasets at their published sizes, from this project's measured per-call and per-pair figures (and, marked as
such, figures scaled from them). `python -m benchmarks.cost` rewrites docs/cost.md.

Every rate names where it was measured; a rung or stage without a measurement says so instead of guessing.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The paper's datasets as published (github.com/user683/HNLMRec, README's statistics table).
DATASETS = {"Toys & Games": (22_338, 9_023, 200_511), "CDs & Vinyl": (19_385, 8_279, 186_535),
            "Yelp2018": (29_832, 16_781, 513_976), "Amazon Electronics 2023": (97_570, 44_669, 178_259)}
TRAIN_SHARE = 0.8  # per-user 8:1:1: training pairs = 0.8 x interactions

# Measured here (2 CPU cores), benchmarks/results/hnlmrec-amazon-scientific.json (#5's table, 2,928 calls each).
PROFILE = {"s_per_call": 3119.4 / 2928, "prompt_tokens": 666_848 / 2928, "gen_tokens": 141_185 / 2928}
NEGATIVE = {"s_per_call": 5361.3 / 2928, "prompt_tokens": 826_429 / 2928, "gen_tokens": 143_796 / 2928}
EMBED_ROWS_PER_S = 23_848 / 76.45  # all-MiniLM-L6-v2, direct, benchmarks/results/embedding.json (median of 3)

# Rungs of the model ladder: fine-tuning and hard-negative inference rates (pairs/s), vector size, where from.
# Encoder rung, measured in the stages themselves on amazon-scientific (pipeline/amazon-scientific-encoder.yaml,
# 2026-12-02): finetune 13,075 pairs (408 steps of 32) in 5,337 s, fp32; hardneg 13,763 pairs in 796 s for two
# passes (fine-tuned + base control, each with the catalogue), i.e. per pass 13,763 / 398 s.
ENCODER_FT_FP32 = 13_075 / 5_337
ENCODER_INF_FP32 = 13_763 / (796 / 2)
BF16_SPEEDUP = 1.9465  # benchmarks/results/finetune-rungs-precision.json: median per-round ratio, 10 rounds

RUNGS = [
    {"rung": "encoder: all-MiniLM-L6-v2 (22M), CPU, fp32", "device": "cpu", "dim": 384, "ft": ENCODER_FT_FP32,
     "inf": ENCODER_INF_FP32,
     "src": "measured in the stages on amazon-scientific (all 13,075 training pairs: 408 steps of 32 in 5,337 s, "
            "part of it beside other jobs; hardneg 13,763 pairs per pass, 796 s for two passes)"},
    {"rung": "encoder: all-MiniLM-L6-v2 (22M), CPU, bf16", "device": "cpu", "dim": 384,
     "ft": ENCODER_FT_FP32 * BF16_SPEEDUP, "inf": ENCODER_INF_FP32 * BF16_SPEEDUP,
     "src": f"the fp32 stage rates x {BF16_SPEEDUP:.2f}, the bf16 speed-up of benchmarks/finetune_rungs.py "
            "--precisions fp32,bf16 with amazon-scientific's texts (a training step; inference scaled by the same "
            "ratio, not measured); needs a CPU with AVX512-BF16 or AMX. With amazon-toys-p5's short titles the "
            "speed-up is only 1.14x (--dataset amazon-toys-p5), and toys' own stage ran 7.5 pairs/s in bf16 "
            "(4.26 s per step of 32, 170 tokens per pair against amazon-scientific's 505): per-pair rates follow "
            "text length"},
    {"rung": "SmolLM2-135M + LoRA, CPU", "device": "cpu", "dim": 576, "ft": 1920 / 2058.1, "inf": 2928 / 957.2,
     "src": "#5's table: 120 steps x 16 pairs in 2,058 s (2 Ray Train workers), 2,928 pairs inferred in 957 s"},
    {"rung": "Qwen2.5-0.5B + LoRA, 1 GPU (H100)", "device": "gpu", "dim": 896, "ft": 88.7, "inf": 3 * 88.7,
     "src": "fine-tuning measured (benchmarks/results/gpu_finetune.json, 19,412 pairs in 218.5 s); inference "
            "scaled: a forward pass ~1/3 of a training step (estimate)"},
    {"rung": "Qwen2.5-7B + LoRA, 1 GPU", "device": "gpu", "dim": 3584, "ft": 88.7 * 0.494 / 7.6,
     "inf": 3 * 88.7 * 0.494 / 7.6, "src": "scaled from the 0.5B figure by parameter count (not measured)"},
    {"rung": "Llama-3-8B + LoRA, 1 GPU", "device": "gpu", "dim": 4096, "ft": 88.7 * 0.494 / 8.0,
     "inf": 3 * 88.7 * 0.494 / 8.0, "src": "scaled from the 0.5B figure by parameter count (not measured)"},
]


def _h(seconds: float | None) -> str:
    if seconds is None:
        return "n/m"
    h = seconds / 3600
    return f"{h:,.1f} h" if h >= 0.1 else f"{seconds / 60:,.1f} min"


def _gb(n: float) -> str:
    return f"{n / 1e9:,.2f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


def stage_rows(users: int, items: int, inter: int, pairs_per_user: int = 1) -> list[list[str]]:
    pairs = int(inter * TRAIN_SHARE)
    rows = []
    for name, calls, rate in (("item profiles (LLM)", items, PROFILE), ("user profiles (LLM)", users, PROFILE),
                              ("method-1 negatives (LLM)", users * pairs_per_user, NEGATIVE)):
        tokens = calls * (rate["prompt_tokens"] + rate["gen_tokens"])
        rows.append([name, f"{calls:,}", f"{tokens / 1e6:,.1f} M", _h(calls * rate["s_per_call"]),
                     "n/m (vLLM generation not measured here)"])
    rows.append(["embed catalogue + negatives (MiniLM)", "0", "—",
                 _h((items + users * pairs_per_user) / EMBED_ROWS_PER_S), "—"])
    return rows


def rung_rows(inter: int) -> list[list[str]]:
    pairs = int(inter * TRAIN_SHARE)
    out = []
    for r in RUNGS:
        ft = pairs / r["ft"] if r["ft"] else None
        inf = pairs / r["inf"]
        out.append([r["rung"], f"{pairs:,}", _h(ft), _h(inf), _gb(pairs * r["dim"] * 2),
                    "GPU-hours" if r["device"] == "gpu" else "CPU (2 cores) hours"])
    return out


def markdown() -> str:
    out = ["# Cost model", "",
           "What HNLMRec's stages cost on the paper's four datasets at their published sizes "
           "(github.com/user683/HNLMRec), computed by `python -m benchmarks.cost` from figures measured in this "
           "project. Training pairs = 0.8 x interactions (per-user 8:1:1). `n/m` = not measured; rates scaled from a "
           "measurement say so. CPU figures are 2 shared cores (the reference machine), so they are upper bounds.", "",
           "## Measured rates", "",
           f"* User profile (SmolLM2-135M, `hf` engine, JSON-constrained, 2 CPU cores): {PROFILE['s_per_call']:.2f} s "
           f"per call, {PROFILE['prompt_tokens']:.0f} prompt + {PROFILE['gen_tokens']:.0f} generated tokens "
           "(2,928 calls, #5's amazon-scientific table). Item profiles are taken at the same rate (not measured: the "
           "table used `profiles.item_source: text`, no LLM call per item).",
           f"* Method-1 hard negative: {NEGATIVE['s_per_call']:.2f} s per call, {NEGATIVE['prompt_tokens']:.0f} + "
           f"{NEGATIVE['gen_tokens']:.0f} tokens (2,928 calls, partly beside the test suite).",
           f"* Sentence embedding (all-MiniLM-L6-v2, CPU): {EMBED_ROWS_PER_S:.0f} rows/s.",
           "* CF: LightGCN on Yelp2018 (1.13 M training pairs) 288 s per epoch on 2 CPU cores, 2.43 s on one H100 "
           "(benchmarks/results/gpu_cf.json): a CF run (the teacher, each row and seed of a table) costs minutes on "
           "a GPU and hours on 2 CPU cores at these sizes. The v2 teacher's pair-conditioned targets score the whole "
           "catalogue per training pair: pairs x items x dim multiply-adds (Yelp2018: ~4e11), seconds to minutes.",
           "* Rungs of the model ladder, where each rate comes from: " + "; ".join(
               f"**{r['rung']}**: {r['src']}" for r in RUNGS) + ".",
           "* Hard-negative vectors are float16: dim x 2 bytes per pair (576-dim SmolLM2: 3.6 MB Parquet for 2,928 "
           "pairs, as measured).", ""]
    for name, (u, i, n) in DATASETS.items():
        out += [f"## {name}: {u:,} users, {i:,} items, {n:,} interactions", "",
                "| LLM stage | calls | tokens | CPU hours (SmolLM2-135M, 2 cores) | GPU hours |", "|---|---|---|---|---|"]
        out += ["| " + " | ".join(r) + " |" for r in stage_rows(u, i, n)]
        out += ["", "| rung (fine-tuning: one epoch over every training pair) | pairs | fine-tuning | hard-negative "
                    "inference | vectors on disk | unit |", "|---|---|---|---|---|---|"]
        out += ["| " + " | ".join(r) + " |" for r in rung_rows(n)]
        out.append("")
    total = {k: sum(u if "user" in k else i for u, i, _ in DATASETS.values()) for k in ("user", "item")}
    out += ["## Which stages dominate", "",
            "* On 2 CPU cores the **LLM generation stages** dominate: a user profile and a method-1 negative cost "
            f"~{PROFILE['s_per_call'] + NEGATIVE['s_per_call']:.1f} s per user together, i.e. "
            f"{_h(total['user'] * (PROFILE['s_per_call'] + NEGATIVE['s_per_call']))} for the four datasets' "
            f"{total['user']:,} users, plus {_h(total['item'] * PROFILE['s_per_call'])} if item profiles are "
            "generated. Fine-tuning SmolLM2 on every training pair is next (~0.9 pairs/s: days per dataset); CPU "
            "is only practical with the encoder rung or a sampled fraction of pairs. The encoder rung fine-tunes "
            f"at {ENCODER_FT_FP32:.2f} pairs/s in fp32 ({ENCODER_FT_FP32 * BF16_SPEEDUP:.1f} in bf16): every training "
            "pair of a 200k-interaction dataset is ~18 h (~9 h), its inference over them about an hour, so on "
            "CPU fine-tuning dominates the HNLMRec stages once profiles come from text.",
            "* On one GPU, fine-tuning and inference of a 0.5B rung over every training pair take minutes to an "
            "hour per dataset; the 7B/8B rungs ~15x that (scaled, not measured). Generation on a GPU (vLLM) has no "
            "measurement here yet.",
            "* Storage is small next to compute: every training pair's vector at 8B's 4,096 dims is "
            f"{_gb(max(n for *_, n in DATASETS.values()) * TRAIN_SHARE * 4096 * 2)} for the largest dataset.", "",
            "## What the knobs save", "",
            "* `profiles.item_source: text` removes the item-profile calls (one per item) entirely; a profile built "
            "from the text of the user's training items removes the user-profile calls.",
            "* `negatives.pairs_per_user` (method 1) scales its calls linearly: 1 per user is the measured setting; "
            "the paper's per-pair generation would multiply the negative calls by the mean training interactions per "
            f"user (Toys: {DATASETS['Toys & Games'][2] * TRAIN_SHARE / DATASETS['Toys & Games'][0]:.1f}).",
            "* `hardneg.pairs_per_user` and `finetune.max_steps` bound inference and fine-tuning: one pair per user "
            "instead of every pair divides both by the mean training interactions per user (5-9x on these datasets).",
            "* The teacher's K targets per pair and the sampler's N neighbours change only CF-side work (a top-K per "
            "pair, N extra candidates scored per negative), not LLM calls: cheap next to the LLM stages.", ""]
    return "\n".join(out)


def main() -> None:
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "cost.md").write_text(markdown())
    print(f"wrote {ROOT / 'docs' / 'cost.md'}")


if __name__ == "__main__":
    main()
