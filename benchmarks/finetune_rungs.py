"""Fine-tuning throughput (pairs/s) of HNLMRec's two CPU rungs of the model ladder, in one process, interleaved.

Rungs: `encoder` (all-MiniLM-L6-v2, `finetune.encoder: sentence`, LoRA on query/key/value/dense, mean pooling)
and `llm` (SmolLM2-135M-Instruct, LoRA on q/k/v/o, last-token pooling, chat template): the same loss
(multi-positive pairwise, K targets per pair), batch and texts. A step is one optimiser step of a batch of
`--batch` pairs with K positives each: forward of queries and passages, backward, AdamW. The machine is shared:
both rungs are timed in the same process, round by round, alternating which goes first (ABBA), so load hits both
alike; absolute figures are still taken under whatever load there is, the per-round ratio less so.

Texts: queries and passages built like fine-tuning's from amazon-scientific's item text (../shared/data; or
`--dataset amazon-toys-p5`'s much shorter titles), the query's user profile from 6 item titles
(profiles.user_source: text). `--smoke`: 2-layer random models with the
rungs' tokenizers and synthetic texts, a few steps (what `make test` runs).

    python -m benchmarks.finetune_rungs [--rounds 5] [--steps 4] [--batch 16] [--k 4] [--threads 2]
                                        [--model-dropout 0|none] [--rungs encoder,llm] [--precisions fp32]
                                        [--smoke]

`--precisions fp32,bf16` times each rung in both compute precisions (finetune.precision), interleaved the same
way, and measures what bf16 changes in one step from identical weights: the cosine between the bf16 and fp32
gradients of the LoRA weights, and the relative difference of the loss.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from ._common import RESULTS, SHARED, WORK, machine

RUNGS = ("encoder", "llm")


# Item texts per dataset: file under ../shared/data and how a line splits into (id, text).
ITEM_TEXTS = {"amazon-scientific": ("amazon-scientific/Scientific.text", "\t", 1),  # header line, id<TAB>text
              "amazon-toys-p5": ("amazon-toys-p5/item_text.txt", " ", 0)}  # id<SPACE>text (short titles)


def texts(n_pairs: int, k: int, smoke: bool, seed: int = 0,
          dataset: str = "amazon-scientific") -> tuple[list[str], list[list[str]]]:
    """(queries, K passages per query), formatted as fine-tuning formats them."""
    from hnl_ray.config.hnlmrec import FinetuneConfig
    from hnl_ray.llm.encoder import item_text, query_text

    rng = random.Random(seed)
    rel, sep, header = ITEM_TEXTS[dataset]
    path = SHARED / rel
    if smoke or not path.exists():
        words = "microscope slide pipette lab coat glove beaker filament printer spool caliper resin".split()
        items = [" ".join(rng.choice(words) for _ in range(rng.randint(8, 30))) for _ in range(200)]
    else:
        items = [line.split(sep, 1)[1].strip() for line in path.read_text().splitlines()[header:] if sep in line]
    instruction = FinetuneConfig().instruction
    queries, passages = [], []
    for _ in range(n_pairs):
        hist = [rng.choice(items)[:120] for _ in range(6)]
        queries.append(query_text(instruction, "Recently bought: " + "; ".join(hist) + ".", rng.choice(items), None))
        passages.append([item_text(rng.choice(items), None) for _ in range(k)])
    return queries, passages


def tiny_models(out: Path) -> dict[str, str]:
    """2-layer random models with MiniLM's and SmolLM2's tokenizers (the rungs' formats, no real weights)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    from hnl_ray.llm.models import default_llm, default_sentence_model

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(default_sentence_model())
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2)).save_pretrained(out / "bert")
    tok.save_pretrained(out / "bert")
    tr = Transformer(str(out / "bert"), max_seq_length=256)
    SentenceTransformer(modules=[tr, Pooling(tr.get_embedding_dimension(), "mean"), Normalize()],
                        device="cpu").save(str(out / "encoder"))
    tok = AutoTokenizer.from_pretrained(default_llm())
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True,
                                 bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
                     ).save_pretrained(out / "llm")
    tok.save_pretrained(out / "llm")
    return {"encoder": str(out / "encoder"), "llm": str(out / "llm")}


def build(rung: str, path: str | None, model_dropout: float | None = 0.0, precision: str = "fp32"):
    import torch

    from hnl_ray.config.hnlmrec import FinetuneConfig
    from hnl_ray.llm.encoder import LLMEncoder
    from hnl_ray.llm.models import resolve_finetune_model

    cfg = FinetuneConfig(encoder="sentence" if rung == "encoder" else "causal", base_model=path,
                         max_query_tokens=256, max_passage_tokens=64, lr=5e-4, model_dropout=model_dropout,
                         precision=precision)
    # training mode, as the stage trains (from_pretrained returns a model in eval mode: no dropout at all)
    enc = LLMEncoder(resolve_finetune_model(cfg, "~/.cache/hnl-ray/models"), cfg).train()
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=cfg.lr)
    return cfg, enc, opt


def steps(enc, opt, queries, passages, batch: int, n: int, start: int) -> tuple[float, int]:
    """n optimiser steps from batch `start`: (seconds, tokens)."""
    import torch

    from hnl_ray.llm.encoder import multi_positive_batch

    k = len(passages[0])
    tokens = 0
    t0 = time.perf_counter()
    for s in range(start, start + n):
        lo = (s * batch) % (len(queries) - batch + 1)
        q = queries[lo: lo + batch]
        p = [x for row in passages[lo: lo + batch] for x in row]
        targets = torch.arange(lo * k, (lo + batch) * k).reshape(batch, k)  # distinct ids: no duplicates
        with enc.autocast(torch.device("cpu")):
            loss, _, _, n_tok, _ = multi_positive_batch(enc, enc, q, p, targets, torch.device("cpu"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tokens += n_tok
    return time.perf_counter() - t0, tokens


def main(argv: list[str] | None = None) -> dict:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4, help="optimiser steps per rung per round")
    ap.add_argument("--batch", type=int, default=16, help="pairs per step")
    ap.add_argument("--k", type=int, default=4, help="targets (positives) per pair")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the 2-core budget)")
    ap.add_argument("--model-dropout", default="0", help="finetune.model_dropout of both rungs ('none': each "
                    "model's own rates; 0, the benchmark configs' setting, keeps only LoRA's dropout)")
    ap.add_argument("--rungs", default=",".join(RUNGS), help="rungs to time (comma-separated)")
    ap.add_argument("--precisions", default="fp32", help="compute precisions to time (fp32, bf16; comma-separated)")
    ap.add_argument("--dataset", default="amazon-scientific", choices=sorted(ITEM_TEXTS),
                    help="whose item texts build the pairs (their lengths set the cost of a step)")
    ap.add_argument("--smoke", action="store_true", help="2-layer random models, synthetic texts")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/finetune-rungs[-smoke].json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rungs = [r for r in args.rungs.split(",") if r]
    precisions = [p for p in args.precisions.split(",") if p]
    if bad := [r for r in rungs if r not in RUNGS] + [p for p in precisions if p not in ("fp32", "bf16")]:
        ap.error(f"unknown rung or precision: {', '.join(bad)}")
    cases = [f"{r}/{p}" if len(precisions) > 1 else r for r in rungs for p in precisions]
    n_pairs = args.batch * max(8, args.steps * args.rounds)
    queries, passages = texts(n_pairs, args.k, args.smoke, dataset=args.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        paths = tiny_models(Path(tmp)) if args.smoke else {"encoder": None, "llm": None}
        dropout = None if args.model_dropout == "none" else float(args.model_dropout)
        models = {f"{r}/{p}" if len(precisions) > 1 else r: build(r, paths[r], dropout, p)
                  for r in rungs for p in precisions}
        for c in cases:  # warm-up: first-call allocations and thread pools out of the timings
            steps(models[c][1], models[c][2], queries, passages, args.batch, 1, 0)
        rounds = []
        for n in range(args.rounds):
            order = cases if n % 2 == 0 else cases[::-1]
            rec = {"order": list(order)}
            for c in order:
                sec, tok = steps(models[c][1], models[c][2], queries, passages, args.batch, args.steps,
                                 1 + n * args.steps)
                rec[c] = {"seconds": round(sec, 3), "pairs_per_s": round(args.steps * args.batch / sec, 3),
                          "tokens_per_s": round(tok / sec, 1)}
            if "encoder" in rec and "llm" in rec:
                rec["ratio_encoder_over_llm"] = round(rec["encoder"]["pairs_per_s"] / rec["llm"]["pairs_per_s"], 3)
            for r in rungs if len(precisions) > 1 else []:
                rec[f"{r}_speedup_bf16"] = round(rec[f"{r}/bf16"]["pairs_per_s"] / rec[f"{r}/fp32"]["pairs_per_s"],
                                                 3)
            rounds.append(rec)
        trainable = {c: sum(p.numel() for p in models[c][1].parameters() if p.requires_grad) for c in cases}
        described = {c: {"base_model": models[c][1].model.base_model.model.config._name_or_path
                         if hasattr(models[c][1].model, "base_model") else None,
                         "pooling": models[c][0].pooling, "lora_targets": models[c][0].lora.target_modules,
                         "precision": models[c][0].precision, "trainable_params": trainable[c],
                         "dim": models[c][1].dim} for c in cases}
        agreement = ({r: precision_agreement(r, paths[r], dropout, queries, passages, args.batch) for r in rungs}
                     if set(precisions) == {"fp32", "bf16"} else None)
    med = {c: statistics.median(x[c]["pairs_per_s"] for x in rounds) for c in cases}
    payload = {"benchmark": "finetune-rungs" + ("-smoke" if args.smoke else ""), "machine": machine(),
               "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
               "settings": {k: v for k, v in vars(args).items() if k != "out"},
               "note": "same process, cases interleaved round by round (ABBA); absolute figures are taken under "
                       "whatever load the machine has, the per-round ratios less so",
               "rungs": described, "median_pairs_per_s": med, "rounds": rounds}
    if all("ratio_encoder_over_llm" in x for x in rounds):
        payload["median_ratio_encoder_over_llm"] = statistics.median(x["ratio_encoder_over_llm"] for x in rounds)
    if agreement:
        payload["median_speedup_bf16"] = {r: statistics.median(x[f"{r}_speedup_bf16"] for x in rounds)
                                          for r in rungs}
        payload["bf16_vs_fp32_one_step"] = agreement
    name = payload["benchmark"] + ("-precision" if agreement else "")
    out = Path(args.out) if args.out else (WORK / "smoke" if args.smoke else RESULTS) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print("median pairs/s: " + ", ".join(f"{c} {v:.2f}" for c, v in med.items())
          + (f"; bf16 speed-up {payload['median_speedup_bf16']}" if agreement else "") + f" (wrote {out})")
    return payload


def precision_agreement(rung: str, path: str | None, dropout: float | None, queries, passages, batch: int
                        ) -> dict:
    """One batch from identical weights in fp32 and in bf16 (LoRA's B made non-zero, as after training; LoRA
    dropout off so both see the same network): cosine of the LoRA gradients, relative loss difference."""
    import torch

    from hnl_ray.llm.encoder import multi_positive_batch

    _, enc, _ = build(rung, path, dropout, "fp32")
    enc.eval()
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for name, p in enc.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.01)
    k = len(passages[0])
    q, p = queries[:batch], [x for row in passages[:batch] for x in row]
    targets = torch.arange(batch * k).reshape(batch, k)
    res = {}
    for precision in ("fp32", "bf16"):
        enc.cfg.precision = precision
        enc.zero_grad(set_to_none=True)
        with enc.autocast(torch.device("cpu")):
            loss = multi_positive_batch(enc, enc, q, p, targets, torch.device("cpu"))[0]
        loss.backward()
        grads = [x.grad.reshape(-1) for x in enc.parameters() if x.grad is not None]
        res[precision] = (float(loss.detach()), torch.cat(grads))
    (l32, g32), (l16, g16) = res["fp32"], res["bf16"]
    return {"loss_fp32": l32, "loss_bf16": l16, "loss_rel_diff": abs(l16 - l32) / abs(l32),
            "grad_cosine": float(torch.nn.functional.cosine_similarity(g32, g16, dim=0)),
            "grad_norm_ratio": float(g16.norm() / g32.norm())}


if __name__ == "__main__":
    main()
