"""The false-hard-negative trap of semantic candidates, and the `hnlmrec` sampler's guard that closes it.

Candidates taken from the untuned item-text neighbourhood of the positive (all-MiniLM-L6-v2, the embed stage's
items.parquet: the 16 nearest of the positive, training positives excluded, plus 16 uniform draws) and picked by
the live model (DNS rule) make DNS choose the user's future positives as negatives. This compares, on
VALIDATION ONLY (the test split is never evaluated here), one seed, the table's LightGCN settings (d 64, 3
layers, lr 2e-3, batch 1024, patience 20, model chosen on valid NDCG@20):

* `dns`: DNS with M 32 uniform candidates (the classic reference);
* `text-noguard`: the hnlmrec sampler on the text neighbours, guard off (the trap);
* `text-guard`: the same with the guard (live score >= rho * s(u, i), rho 0.95, or text cosine >= 0.9 to a
  training positive: not eligible; the guard's defaults before this benchmark);
* `text-guard-score` / `text-guard-text`: each rule of the guard alone;
* `text-guard-strict`: the guard with its text rule at cosine 0.5 instead of 0.9;
* `text-guard-all`: the guard screening the uniform draws too (`guard.scope: all`);
* `text-guard-u32` / `text-guard-u32-strict`: DNS's whole pool (32 uniform draws) plus the 16 guarded neighbours.

The guard screens only the semantic neighbours (`guard.scope: neighbours`) unless a row says otherwise. The
sampler's defaults now are `text-guard-strict`'s settings (16 + 16 candidates, text cosine 0.5).

Runs go one at a time and write as they finish (a re-run skips rows already in the results file with the same
settings; `--fresh` redoes them).

    python -m benchmarks.hnlmrec_trap [--dataset amazon-scientific] [--rows dns,text-noguard,text-guard] [--fresh]
    python -m benchmarks.hnlmrec_trap --rows encoder-dns,encoder,encoder-noguard,encoder-teacher,encoder-shuffled,encoder-random
    python -m benchmarks.hnlmrec_trap --smoke   # dns and text-guard, 2 epochs on the demo's tiny synthetic data

The `encoder-*` rows are HNLMRec v2 itself on the encoder rung (see ENCODER_ROWS); they need the hardneg stage of
configs/bench/pipeline/<dataset>-encoder.yaml finished in that file's run directory.
"""

from __future__ import annotations

import argparse
import json
import time

from hnl_ray.artifacts import Artifacts
from hnl_ray.config import load_config
from hnl_ray.config.loader import deep_merge
from hnl_ray.pipeline import run_pipeline
from hnl_ray.stages.train import build_run, semantic_parts

from ._common import RESULTS, ROOT, WORK, commit, console, machine, smoke_prepared

CF = ["train.model.name=lightgcn", "train.model.dim=64", "train.model.layers=3", "train.optim.lr=0.002",
      "train.optim.batch_size=1024", "train.optim.epochs=400", "train.eval.metric=ndcg@20",
      "train.eval.patience=20", "train.runs={}", "ray.num_cpus=2"]
# Every setting spelt out (the rows must not change meaning when a default does): the guard as it was measured
TEXT = {"name": "hnlmrec", "hnlmrec": {"source": "text", "neighbours": 16, "uniform": 16, "rule": "dns",
                                       "guard": {"enabled": True, "rho": 0.95, "text_threshold": 0.9,
                                                 "scope": "neighbours"}}}
ROWS = {
    "dns": {"sampler": {"name": "dns", "candidates": 32}},
    "text-noguard": {"sampler": deep_merge(TEXT, {"hnlmrec": {"guard": {"enabled": False}}})},
    "text-guard": {"sampler": TEXT},
    "text-guard-score": {"sampler": deep_merge(TEXT, {"hnlmrec": {"guard": {"text_threshold": None}}})},
    "text-guard-text": {"sampler": deep_merge(TEXT, {"hnlmrec": {"guard": {"rho": 1e9}}})},
    # the text rule at cosine 0.5: most of the positive's 16 nearest items are that close to a training positive
    "text-guard-strict": {"sampler": deep_merge(TEXT, {"hnlmrec": {"guard": {"text_threshold": 0.5}}})},
    # the guard on every candidate (uniform draws too), not only on the semantic pool
    "text-guard-all": {"sampler": deep_merge(TEXT, {"hnlmrec": {"guard": {"scope": "all"}}})},
    # DNS's own pool of 32 uniform draws plus the guarded neighbours: with every neighbour rejected this is DNS
    "text-guard-u32": {"sampler": deep_merge(TEXT, {"hnlmrec": {"uniform": 32}})},
    "text-guard-u32-strict": {"sampler": deep_merge(TEXT, {"hnlmrec": {"uniform": 32,
                                                                       "guard": {"text_threshold": 0.5}}})},
}
# HNLMRec v2 itself: the sampler on the encoder rung's neighbours (hardneg/ of the pipeline
# configs/bench/pipeline/<dataset>-encoder.yaml: all-MiniLM-L6-v2 + LoRA fine-tuned on every training pair), at the
# sampler's defaults, and its cheap controls through the same path. These rows train in that pipeline's run
# directory (same prepared data); `encoder-dns` repeats the DNS reference there.
V2 = {"name": "hnlmrec", "hnlmrec": {"source": "hardneg", "neighbours": 16, "uniform": 16, "rule": "dns",
                                     "guard": {"enabled": True, "rho": 0.95, "text_threshold": 0.5,
                                               "scope": "neighbours"}}}
ENCODER_ROWS = {
    "encoder-dns": ROWS["dns"],
    "encoder": {"sampler": V2},
    "encoder-noguard": {"sampler": deep_merge(V2, {"hnlmrec": {"guard": {"enabled": False}}})},
    "encoder-teacher": {"sampler": deep_merge(V2, {"hnlmrec": {"source": "teacher"}})},   # no language model
    "encoder-shuffled": {"sampler": deep_merge(V2, {"hnlmrec": {"source": "shuffled"}})},  # vectors across users
    "encoder-random": {"sampler": deep_merge(V2, {"hnlmrec": {"source": "random"}})},      # a random unit vector
}
ROWS.update(ENCODER_ROWS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="amazon-scientific")
    ap.add_argument("--rows", default="dns,text-noguard,text-guard")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fresh", action="store_true", help="redo rows already in the results file")
    ap.add_argument("--smoke", action="store_true", help="dns and text-guard, 2 epochs, tiny synthetic data; "
                                                          "results under benchmarks/.work/smoke")
    args = ap.parse_args()
    names = ["dns", "text-guard"] if args.smoke else args.rows.split(",")
    if unknown := [n for n in names if n not in ROWS]:
        raise SystemExit(f"--rows: unknown {', '.join(unknown)} (known: {', '.join(ROWS)})")
    if args.smoke:
        cfg, run = smoke_prepared("trap", *CF, "train.optim.epochs=2", "train.eval.ks=[10,20]")
        run_dir, args.dataset, args.fresh = run.path(), "smoke", True
    elif any(n in ENCODER_ROWS for n in names):
        if not all(n in ENCODER_ROWS for n in names):
            raise SystemExit("--rows: run the encoder-* rows apart from the others (another run directory)")
        pipeline = ROOT / "configs" / "bench" / "pipeline" / f"{args.dataset}-encoder.yaml"
        cfg = load_config(pipeline, CF)
        run_dir = str(cfg.resolved_run_dir())
        if Artifacts(run_dir).manifest("hardneg") is None:
            raise SystemExit(f"the encoder-* rows read the hardneg stage of {pipeline.relative_to(ROOT)}, not "
                             f"finished in {run_dir}: run its stages first (the commands are in that file)")
    else:
        run_dir = str(WORK / f"trap-{args.dataset}")
        cfg = load_config(ROOT / "configs" / f"{args.dataset}.yaml", CF, run_dir=run_dir)
        run_pipeline(cfg, only="prepare")
    if not any(n in ENCODER_ROWS for n in names):
        run_pipeline(cfg, only="embed")  # the untuned item-text vectors (Ray Data, ~1 min on 2 cores)
    art = Artifacts(run_dir)
    data = art.cf_data()
    out = (WORK / "smoke" if args.smoke else RESULTS) / f"hnlmrec-trap-{args.dataset}.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    rows = {} if old.get("cf_settings") != CF else old.get("rows", {})
    for name in names:
        over = {**ROWS[name], "seed": args.seed}
        key = name if args.seed == 1 else f"{name}@seed{args.seed}"  # seed 1's rows keep their names
        if key in rows and rows[key].get("setting") == over and not args.fresh:
            console.print(f"{key}: kept from {rows[key]['measured_at']}")
            continue
        tcfg = cfg.train.model_validate(deep_merge(cfg.train.model_dump(exclude={"runs"}), over))
        folder = f"trap-{name}-s{args.seed}"
        art.run.delete(art.cf_folder(folder))
        parts, _ = semantic_parts(tcfg, art, data, args.seed)
        t0 = time.perf_counter()
        trainer = build_run(tcfg, art, data, art.cf_run(folder), folder, args.seed, progress=False, semantic=parts)
        res = trainer.fit(evaluate_test=False)  # validation only: the test split is not touched
        guard = [r["sampler"] for r in art.cf_log(folder) or [] if "sampler" in r]
        rows[key] = {"setting": over, "valid": res["valid"], "best_epoch": res["best_epoch"],
                      "epochs_run": res["epochs_run"], "wall_s": round(time.perf_counter() - t0, 1),
                      "sampler_per_epoch_first_last": [guard[0], guard[-1]] if guard else None,
                      "describe": parts.describe if parts else None, "commit": commit(),
                      "run_dir": str(art.run.uri),
                      "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        console.print(f"{key}: valid N@20 {res['valid']['ndcg@20']:.4f} R@20 {res['valid']['recall@20']:.4f} "
                      f"(best epoch {res['best_epoch']}, {rows[key]['wall_s']:.0f} s)")
        out.write_text(json.dumps({"benchmark": "hnlmrec-trap", "dataset": args.dataset, "split": "valid only",
                                   "machine": machine(), "cf_settings": CF, "rows": rows}, indent=2,
                                  default=float) + "\n")
    console.print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
