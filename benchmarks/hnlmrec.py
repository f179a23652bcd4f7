"""HNLMRec against classic and semantic samplers on a shared dataset, all LLM work on CPU with the offline models.

Dataset: amazon-scientific (its leave-one-out split) by default. LightGCN, the same settings for every sampler,
3 seeds, model chosen on validation, test evaluated once per run. Samplers: uniform, DNS, MixGCF, semantic
method 1 (text -> embedding), semantic-item (grounded ids), HNLMRec; controls: uniform with the margin loss, and
HNLMRec with alpha = 0 (the contrastive term only). Item profiles are the items' own text
(`profiles.item_source: text`, one LLM call per item saved); user profiles (last 6 items, 160-token history
budget), method-1 hard negatives (one pair per user), fine-tuning (SmolLM2-135M, LoRA, 2 Ray Train workers x 8
pairs, 120 steps) and hard-negative inference (one pair per user; other pairs use the user's mean) run for real.
On 2 CPU cores that is hours (a user profile takes ~2 s): every stage writes as it goes and resumes where it
stopped, so the command can be interrupted and run again.

`--samplers` runs a subset; rows of an earlier invocation with the same settings stay in the results file (each
with its `measured_at`), so a table can be completed in parts.

HNLMRec's alpha is fixed beforehand (ALPHA). `--alphas` adds HNLMRec rows at other alphas (runs `hnlmrec-a<alpha>`)
and picks among them and ALPHA by mean validation NDCG@20 only; the chosen one's test metrics are reported as
`hnlmrec (alpha chosen on valid)`, so no number is selected on test.

    python -m benchmarks.hnlmrec [--dataset amazon-scientific] [--stage-only | --cf-only] [--seeds 3]
                                 [--samplers uniform,dns,mixgcf,uniform-margin]   # the classic rows need no LLM
                                 [--alphas 0.01,0.2]                              # validation-only alpha choice
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from hnl_ray.cf.stage import train_one
from hnl_ray.config import load_config
from hnl_ray.pipeline import run_pipeline
from hnl_ray.ray_utils import init_ray

from ._common import RESULTS, ROOT, WORK, console, report

LLM = ["profiles.item_source=text", "profiles.user_history=6", "profiles.user_token_budget=160",
       "llm.max_new_tokens=72", "llm.batch_size=32", "negatives.pairs_per_user=1",
       ("teacher.train={sampler: {name: dns, candidates: 16}, optim: {lr: 0.002, batch_size: 1024, epochs: 300}, "
        "eval: {patience: 20}}"),
       "teacher.candidates=64", "finetune.num_workers=2", "finetune.cpus_per_worker=0.5", "finetune.batch_size=8",
       "finetune.max_steps=120", "finetune.checkpoint_every=20", "finetune.max_query_tokens=144",
       "finetune.lr=0.0005", "hardneg.pairs_per_user=1", "hardneg.batch_size=32", "ray.num_cpus=2"]
# HNLMRec's inputs first, method 1's after: the teacher keys on the catalog's embeddings only, so the second
# `embed` (which adds the negatives) leaves the teacher, fine-tuning and inference up to date.
STAGES = ("prepare", "profiles", "embed", "teacher", "finetune", "hardneg", "negatives", "embed")
CF = ["train.model.name=lightgcn", "train.model.dim=64", "train.model.layers=3", "train.optim.lr=0.002",
      "train.optim.batch_size=1024", "train.optim.epochs=400", "train.eval.metric=ndcg@20",
      "train.eval.patience=20", "train.runs={}"]
ALPHA = 0.05
SAMPLERS = {
    "uniform": {},
    "dns": {"sampler": {"name": "dns", "candidates": 32}},
    "mixgcf": {"sampler": {"name": "mixgcf", "candidates": 32}},
    "semantic-m1": {"sampler": {"name": "semantic", "semantic": {"source": "negatives", "alpha": ALPHA}}},
    "semantic-item": {"sampler": {"name": "semantic-item"}},
    "hnlmrec": {"sampler": {"name": "semantic", "semantic": {"source": "hardneg", "alpha": ALPHA}}},
    "uniform-margin": {"loss": {"name": "margin", "margin": 0.3}},
    "hnlmrec-alpha0": {"sampler": {"name": "semantic", "semantic": {"source": "hardneg", "alpha": 0.0}}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="amazon-scientific", choices=["amazon-scientific", "amazon-toys-p5"])
    ap.add_argument("--stage-only", action="store_true", help="only the LLM and HNLMRec stages")
    ap.add_argument("--cf-only", action="store_true", help="only the CF runs (stages already done)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--samplers", default=",".join(SAMPLERS),
                    help="comma-separated subset (the classic ones need no LLM stage)")
    ap.add_argument("--alphas", default="",
                    help="extra HNLMRec alphas; the best by mean valid NDCG@20 (with ALPHA) is reported")
    args = ap.parse_args()
    samplers = {**SAMPLERS, **_alpha_variants(args.alphas)}
    names = args.samplers.split(",") + [n for n in samplers if n not in SAMPLERS]
    if unknown := [n for n in names if n not in samplers]:
        raise SystemExit(f"--samplers: unknown {', '.join(unknown)} (known: {', '.join(SAMPLERS)})")
    run_dir = str(WORK / f"hnlmrec-{args.dataset}")
    cfg = load_config(ROOT / "configs" / f"{args.dataset}.yaml", [*LLM, *CF], run_dir=run_dir)
    stage_times = {}
    if not args.cf_only:  # CF training itself needs no Ray: a --cf-only run can go beside a --stage-only one
        init_ray(cfg)
        def on_stage(stage, res, seconds):
            stage_times[stage] = seconds
            console.print(f"{stage}: {seconds:.0f} s")

        for stage in STAGES:
            run_pipeline(cfg, only=stage, on_stage=on_stage)
    if args.stage_only:
        return
    from hnl_ray.storage import RunDir

    run = RunDir(run_dir)
    runs: dict[str, list[dict]] = {}
    for name in names:
        override = samplers[name]
        for seed in range(1, args.seeds + 1):
            over = {**override, "seed": seed}
            c = load_config(ROOT / "configs" / f"{args.dataset}.yaml", [*LLM, *CF], run_dir=run_dir)
            tcfg = c.train.model_validate(_merge(c.train.model_dump(exclude={"runs"}), over))
            t0 = time.perf_counter()
            res = train_one(c, run, f"bench-{name}-s{seed}", tcfg=tcfg, progress=False)
            res["wall_s"] = time.perf_counter() - t0
            runs.setdefault(name, []).append(res)
            console.print(f"{name} seed {seed}: test R@20 {res['test']['recall@20']:.4f} "
                          f"N@20 {res['test']['ndcg@20']:.4f} (best epoch {res['best_epoch']})")
    summary = {}
    for name, rs in runs.items():
        summary[name] = {
            "test_mean": {k: statistics.mean(r["test"][k] for r in rs) for k in ("recall@20", "ndcg@20")},
            "test_std": {k: statistics.pstdev(r["test"][k] for r in rs) for k in ("recall@20", "ndcg@20")},
            "valid_mean": {k: statistics.mean(r["valid"][k] for r in rs) for k in ("recall@20", "ndcg@20")},
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "runs": [{k: r[k] for k in ("seed", "best_epoch", "valid", "test")} for r in rs]}
    summary = {**_earlier_rows(args.dataset, args.seeds), **summary}
    rows = []
    for name, row in summary.items():
        m, sd, v = row["test_mean"], row["test_std"], row["valid_mean"]
        rows.append([name, f"{v['recall@20']:.4f} / {v['ndcg@20']:.4f}",
                     f"{m['recall@20']:.4f} ± {sd['recall@20']:.4f}", f"{m['ndcg@20']:.4f} ± {sd['ndcg@20']:.4f}"])
    chosen = _choose_alpha(summary, ["hnlmrec", *_alpha_variants(args.alphas)]) if args.alphas else None
    if chosen:
        m, sd = summary[chosen]["test_mean"], summary[chosen]["test_std"]
        rows.append([f"hnlmrec (alpha chosen on valid: {chosen})", "",
                     f"{m['recall@20']:.4f} ± {sd['recall@20']:.4f}", f"{m['ndcg@20']:.4f} ± {sd['ndcg@20']:.4f}"])
    manifests = {s: run.read_json(f"{f}/manifest.json") for s, f in (
        ("profiles-users", "profiles/users"), ("negatives", "negatives"), ("finetune", "finetune"),
        ("hardneg", "hardneg"), ("teacher", "teacher")) if run.exists(f, "manifest.json")}
    report(f"hnlmrec-{args.dataset}", f"LightGCN on {args.dataset}, {args.seeds} seeds: valid R@20 / N@20 (mean), "
           "test R@20 and N@20 (mean ± std)", ["sampler", "valid", "test R@20", "test N@20"], rows,
           {"dataset": args.dataset, "alpha": ALPHA, "llm_settings": LLM, "cf_settings": CF, "samplers": summary,
            "alpha_chosen_on_valid": chosen,
            "stage_counts": {k: m.get("counts") for k, m in manifests.items()},
            "stage_timings": {k: m.get("timings_s") for k, m in manifests.items()}})


def _earlier_rows(dataset: str, seeds: int) -> dict[str, dict]:
    """Rows of an earlier invocation with the same settings, so running a subset of samplers (`--samplers`) adds
    to the table instead of replacing it; each row keeps the time it was measured (`measured_at`)."""
    path = RESULTS / f"hnlmrec-{dataset}.json"
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    if (old.get("llm_settings"), old.get("cf_settings")) != (LLM, CF):
        return {}
    return {name: {"measured_at": old.get("finished_at"), **row} for name, row in old.get("samplers", {}).items()
            if len(row["runs"]) == seeds}


def _alpha_variants(alphas: str) -> dict[str, dict]:
    return {f"hnlmrec-a{a}": {"sampler": {"name": "semantic", "semantic": {"source": "hardneg", "alpha": float(a)}}}
            for a in (x.strip() for x in alphas.split(",")) if a}


def _choose_alpha(summary: dict, names: list[str]) -> str | None:
    """Of the HNLMRec runs at ALPHA and at --alphas (not the alpha = 0 control), the best by mean valid NDCG@20."""
    cands = [n for n in names if n in summary]
    return max(cands, key=lambda n: summary[n]["valid_mean"]["ndcg@20"]) if cands else None


def _merge(base: dict, over: dict) -> dict:
    from hnl_ray.config.loader import deep_merge

    return deep_merge(base, over)


if __name__ == "__main__":
    main()
