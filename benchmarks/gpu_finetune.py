"""One HNLMRec fine-tuning epoch of a 0.5B-class model on amazon-toys-p5, on one GPU: wall time and tokens/s.

Two steps, because the GPU machine has no Ray, no model hub and no shared datasets:

    python -m benchmarks.gpu_finetune prepare [--out .gpu]     # here: the epoch's texts and a tokenizer
    python -m benchmarks.gpu_finetune epoch --data .gpu         # on the GPU machine (torch, transformers, peft)

`prepare` writes one (query, positive) pair per toys user, built exactly as the `finetune` stage builds them
(`hnl_ray.llm.encoder.query_text` / `item_text`), with two stand-ins that do not change the compute: the user
profile is the text of the user's last 6 training items (toys has no LLM profiles: ~19k generations on CPU), and
the positive is a seeded random item the user never interacted with (which item j* is does not change a text's
length; the teacher's mining is measured on the CPU path). Item profiles are the items' own text
(`profiles.item_source: text`), as the issue allows for toys.

`epoch` builds Qwen2.5-0.5B's architecture (24 layers, d 896, GQA 14/2, vocab 151,936: 494M parameters) with
random weights -- no weights can be downloaded there, and the time of a step does not depend on their values --
with SmolLM2's tokenizer (its chat template), and trains it with the project's own path: `LLMEncoder` (LoRA r 32 on
q/k/v/o, last-token pooling after an appended EOS), `contrastive_batch` (pairwise loss over in-batch negatives,
tau 0.05), fp32 master weights under bf16 autocast, AdamW on the LoRA weights -- the Qwen2.5-0.5B preset's
settings (batch 32, query <= 256 tokens, item <= 64). Tokens/s counts non-padding tokens of queries and items.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QWEN05 = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
          "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
          "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}


def prepare(out: Path, seed: int = 2025) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from hnl_ray.config.hnlmrec import FinetuneConfig
    from hnl_ray.llm.encoder import item_text, query_text
    from hnl_ray.llm.models import default_llm

    from ._common import prepared

    cfg, run = prepared("amazon-toys-p5.yaml", "amazon-toys-p5")
    items = run.read_parquet("prepared/items.parquet")
    train = run.read_parquet("prepared/train.parquet").sort_by([("user_idx", "ascending"),
                                                               ("timestamp", "ascending")])
    titles = items["title"].to_pylist()
    users = train["user_idx"].to_numpy()
    its = train["item_idx"].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    rng = np.random.default_rng(seed)
    instruction = FinetuneConfig().instruction
    q, p = [], []
    for s, e in zip(starts, ends):
        hist = its[s:e]
        profile = "Recently liked: " + "; ".join(titles[i] for i in hist[-6:])
        i = int(rng.choice(hist))
        seen = set(hist.tolist())
        j = int(rng.integers(len(titles)))
        while j in seen:
            j = int(rng.integers(len(titles)))
        q.append(query_text(instruction, profile, titles[i], titles[i]))
        p.append(item_text(titles[j], titles[j]))
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"query": q, "positive": p}), out / "pairs.parquet")
    AutoTokenizer.from_pretrained(default_llm(cfg.llm.model_cache)).save_pretrained(out / "tokenizer")
    print(f"wrote {len(q)} pairs and the tokenizer to {out}")


def build_base(data: Path, folder: Path, dev, arch: dict) -> int:
    """Qwen2.5-0.5B's architecture with random weights, saved with the carried tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

    torch.manual_seed(0)
    with dev:
        model = Qwen2Model(Qwen2Config(**arch))
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(data / "tokenizer").save_pretrained(folder)
    return n


def epoch(data: Path, out: Path | None, batch: int, steps: int | None, smoke: bool = False,
          max_seconds: float | None = None) -> None:
    import pyarrow.parquet as pq
    import torch

    from hnl_ray.config.hnlmrec import FinetuneConfig
    from hnl_ray.llm.contrastive import in_batch_accuracy
    from hnl_ray.llm.encoder import LLMEncoder, contrastive_batch

    if not smoke and not torch.cuda.is_available():
        raise SystemExit("epoch needs a CUDA GPU (--smoke runs a 2-layer model on the CPU)")
    dev = torch.device("cpu" if smoke else "cuda")
    cuda = dev.type == "cuda"
    base = Path("/tmp/qwen2.5-0.5b-arch" + ("-smoke" if smoke else ""))
    t0 = time.perf_counter()
    n_params = build_base(data, base, dev, {**QWEN05, "num_hidden_layers": 2} if smoke else QWEN05)
    cfg = FinetuneConfig(base_model=str(base), use_gpu=True, batch_size=batch, max_query_tokens=256,
                         max_passage_tokens=64, lr=5e-4,
                         lora={"r": 32, "alpha": 64, "dropout": 0.05,
                               "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]})
    enc = LLMEncoder(str(base), cfg).to(dev)
    build_s = time.perf_counter() - t0
    trainable = sum(p.numel() for p in enc.parameters() if p.requires_grad)
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=cfg.lr)
    pairs = pq.read_table(data / "pairs.parquet")
    queries, positives = pairs["query"].to_pylist(), pairs["positive"].to_pylist()
    n_batches = len(queries) // batch
    if steps:
        n_batches = min(n_batches, steps)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    step_s, tokens, log = [], 0, []
    sync()
    t_epoch = time.perf_counter()
    for b in range(n_batches):
        ts = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            loss, q, p, n_tok = contrastive_batch(enc, enc, queries[b * batch:(b + 1) * batch],
                                                  positives[b * batch:(b + 1) * batch], dev)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if b % 50 == 0 or b == n_batches - 1:
            log.append({"step": b + 1, "loss": round(float(loss), 4),
                        "in_batch_acc": in_batch_accuracy(q.detach(), p.detach())})
        sync()
        step_s.append(time.perf_counter() - ts)
        tokens += n_tok
        if max_seconds and time.perf_counter() - t_epoch > max_seconds:
            break  # out of device time: report the steps done and what a whole epoch would take at that pace
    epoch_s = time.perf_counter() - t_epoch
    done = len(step_s)
    epoch_steps = len(queries) // batch
    res = {
        "gpu": torch.cuda.get_device_name(0) if cuda else None, "torch": torch.__version__,
        "base": "Qwen2.5-0.5B architecture, random weights", "parameters": n_params, "trainable_lora": trainable,
        "pairs": len(queries), "batch": batch, "steps": done, "epoch_steps": epoch_steps,
        "full_epoch": done == epoch_steps, "seconds": round(epoch_s, 2),
        "epoch_s": round(epoch_s * epoch_steps / done, 2), "tokens": tokens, "tokens_per_s": round(tokens / epoch_s, 1),
        "pairs_per_s": round(done * batch / epoch_s, 1),
        "median_step_s": round(statistics.median(step_s), 4), "first_step_s": round(step_s[0], 3),
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None, "build_s": round(build_s, 1),
        "log": log,
    }
    print(json.dumps({k: v for k, v in res.items() if k != "log"}, indent=1))
    for r in log:
        print(r)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_finetune.json").write_text(json.dumps(res, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["prepare", "epoch"])
    ap.add_argument("--data", default=".gpu", help="prepare: where to write; epoch: where to read")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="epoch: folder for gpu_finetune.json")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    ap.add_argument("--max-seconds", type=float, default=None, help="stop the epoch early after this long")
    ap.add_argument("--smoke", action="store_true", help="a 2-layer model on the CPU (checks the script)")
    args = ap.parse_args()
    if args.step == "prepare":
        prepare(Path(args.data))
    else:
        epoch(Path(args.data), Path(args.out) if args.out else None, args.batch, args.steps, args.smoke,
              args.max_seconds)


if __name__ == "__main__":
    main()
