"""Is the synthetic shop a positive control? Its planted hard negatives, handed to the CF model by an oracle.

The verdict table calls the synthetic shop a positive control: a semantic sampler that cannot beat DNS there is
"broken, not unlucky". That holds only if the planted structure *can* help: if the true look-alikes, given for
free, do not beat DNS either, the table's failure says nothing about the method. This benchmark asks exactly that,
with the generator's hidden facts (hnl_ray.data.synthetic.latent) as the oracle. Each pair (u, i) of the training
data gets N = 8 oracle candidates, fed to the `hnlmrec` sampler in place of the LLM's neighbours (the same path
and settings as the table's rows: M = 4 uniform draws, the live model picks the highest score, the guard's score
rule on, its text rule off since look-alikes are close in text by construction):

* `oracle-lookalike`: the true hard negatives: items of the positive's category and age band whose theme is
  neither of the user's two liked themes (the positive's own twin first when it qualifies, then the same brand,
  then by popularity): close in text and in co-purchase, wrong for the user;
* `oracle-sibling`: the false hard negatives: the same category and age band in the user's favourite theme
  (what text neighbours and the teacher's top-scored items are full of: the user's plausible future positives;
  there are few: 2.35 per pair, not 8);
* `oracle-random`: 8 random items per pair, fixed for the run: the same pool shape with no content (if it
  fails too, the pool's shape is at fault, not its items);
* `dns`: the table's best tuned classic sampler at its chosen setting (M = 4), the reference.

A second family asks whether the shop is a positive control for the *other* thing semantic knowledge can do:
keep a user's false negatives (items they would like) out of DNS's candidates, the job of the hnlmrec sampler's
guard. Each `guard-*` row is DNS whose uniform candidates never include the user's K flagged items (exactly: they
are redrawn, as training positives are), M chosen on validation over {4, 8, 16, 32} (one seed per point, the
budget the table gave DNS):

* `guard-oracle` (K = 50, 5 % of the catalogue) and `guard-oracle-k10`: the user's top-K unseen items by the
  generator's true draw weight (popularity x exp(affinity / T)): what perfect knowledge of tastes gives;
  `guard-oracle-affinity`: by exp(affinity / T) alone, the tastes without the items' popularity;
* `guard-text`: top-K by the guard's text rule (an item's highest MiniLM cosine with one of the user's training
  items); `guard-profile`: by the cosine with the mean of those vectors; `guard-reviews`: by the cosine with the
  mean of the user's reviews, each embedded (they name the child's favourite theme): what MiniLM text, without an
  LLM, knows;
* `guard-popular`: the K most-bought unseen items, the same for everyone: popularity without tastes (the oracle's
  weight holds popularity too); `guard-random`: K random unseen items: excluding items as such, no knowledge.

Each guard row reports how many of the users' test items its flags cover (`test_items_flagged`): how much it
knows about what the user will pick next.

Same prepared data (configs/bench/pipeline/synthetic-shop.yaml), same LightGCN settings as the table, 5 CF seeds,
model chosen on validation, test evaluated once per run; paired per-user bootstrap against `dns` (the verdict
table's statistics). Rows are written as they finish and a re-run resumes.

    python -m benchmarks.positive_control [--rows dns,oracle-lookalike,guard-oracle,...] [--seeds 1,2,3,4,5]
                                          [--set data.KEY=V]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import time

import numpy as np

from hnl_ray.artifacts import Artifacts
from hnl_ray.cf.data import CFData, PositiveSet
from hnl_ray.cf.neighbours import PairCandidates
from hnl_ray.cf.semantic import SemanticParts
from hnl_ray.config import load_config
from hnl_ray.config.loader import deep_merge
from hnl_ray.data.synthetic import Latent, latent
from hnl_ray.pipeline import run_pipeline
from hnl_ray.stages.train import build_run

from ._common import RESULTS, ROOT, WORK, commit, console, machine
from .verdict import stats
from .verdict.analysis import per_user
from .verdict.config import load_bench, row_train

BENCH = ROOT / "configs" / "bench" / "synthetic-shop.yaml"
N_ORACLE = 8
ORACLE_SAMPLER = {"name": "hnlmrec", "hnlmrec": {"source": "teacher", "neighbours": N_ORACLE, "uniform": 4,
                                                 "rule": "dns", "guard": {"enabled": True, "rho": 0.95,
                                                                          "text_threshold": None}}}
# row -> (oracle, N): N oracle candidates per pair
ORACLES = {"oracle-lookalike": ("lookalike", 8), "oracle-sibling": ("sibling", 8), "oracle-random": ("random", 8),
           "oracle-lookalike-n2": ("lookalike", 2), "oracle-lookalike-n1": ("lookalike", 1),
           "oracle-lookalike-any": ("lookalike-any", 8), "oracle-lookalike-any-n1": ("lookalike-any", 1)}
# row -> (what flags a user's items, K): DNS never draws a user's K flagged items as candidates
GUARDS = {"guard-oracle": ("oracle", 50), "guard-oracle-k10": ("oracle", 10),
          "guard-oracle-affinity": ("affinity", 50), "guard-text": ("text", 50), "guard-profile": ("profile", 50),
          "guard-reviews": ("reviews", 50), "guard-popular": ("popular", 50), "guard-random": ("random", 50)}
M_GRID = (4, 8, 16, 32)
ROWS = ("dns", *ORACLES, *GUARDS)
METRICS = ["ndcg@20", "recall@20"]


def oracle_lists(kind: str, users: np.ndarray, pos: np.ndarray, lat: Latent, train_positives, n: int,
                 allowed: np.ndarray | None = None) -> np.ndarray:
    """(P, n) oracle candidates per training pair (u, pos) in latent indices, -1 padded. `lookalike`: the
    positive's category and age band, a theme the user likes neither first nor second, never a training positive
    of u; ordered twin of the positive first, then same brand, then more popular. `sibling`: the same category and
    age band in the user's favourite theme (the plausible positives), same order. `random`: n items drawn at
    random, fixed per pair (the pool's shape without its content). `lookalike-any`: the look-alike set in random
    order (the twin and the popular ones not first). `allowed` (bool per latent item): the items that may be
    listed (those in the prepared data), applied before the first n are taken."""
    if kind not in ("lookalike", "lookalike-any", "sibling", "random"):
        raise ValueError(f"unknown oracle {kind!r}")
    rng = np.random.default_rng(0)
    allowed = np.ones(len(lat.cat), bool) if allowed is None else allowed
    pool = np.flatnonzero(allowed)
    twin_pair = np.full(len(lat.cat), -1)
    orig = np.flatnonzero(lat.twin_of >= 0)
    twin_pair[orig] = lat.twin_of[orig]
    twin_pair[lat.twin_of[orig]] = orig
    key = lat.cat * 100 + lat.age
    by_key: dict[int, np.ndarray] = {k: np.flatnonzero(key == k) for k in np.unique(key)}
    out = np.full((len(users), n), -1, np.int64)
    for r, (u, i) in enumerate(zip(users, pos)):
        if kind == "random":
            cand = rng.choice(pool, size=min(4 * n, len(pool)), replace=False)
        else:
            group = by_key[key[i]]
            th = lat.theme[group]
            ok = (th == lat.fav[u]) if kind == "sibling" else (th != lat.fav[u]) & (th != lat.second[u])
            cand = group[ok & (group != i) & allowed[group]]
        cand = cand[~train_positives.contains(np.full(len(cand), u), cand)]
        if not len(cand):
            continue
        # lexsort: last key first; the twin of the positive, then the same brand, then the more popular
        order = np.lexsort((-lat.pop[cand], lat.brand[cand] != lat.brand[i], cand != twin_pair[i]))
        if kind == "lookalike-any":  # the same set in random order: no preference for popular items
            order = rng.permutation(len(cand))
        take = (cand if kind == "random" else cand[order])[:n]
        out[r, : len(take)] = take
    return out


def _id_maps(art: Artifacts) -> tuple[np.ndarray, np.ndarray]:
    """Latent index of each prepared user_idx and item_idx (ids are U00042 / I00042)."""
    maps = []
    for name, col in (("users", "user_id"), ("items", "item_id")):
        t = art.table(name, columns=[f"{name[:-1]}_idx", col])
        idx = t[f"{name[:-1]}_idx"].to_numpy()
        lat_idx = np.array([int(s[1:]) for s in t[col].to_pylist()])
        m = np.full(idx.max() + 1, -1, np.int64)
        m[idx] = lat_idx
        maps.append(m)
    return maps[0], maps[1]


def oracle_candidates(kind: str, n: int, art: Artifacts, data: CFData, lat: Latent
                      ) -> tuple[PairCandidates, dict]:
    """The oracle lists of every training pair, in prepared indices, and what they hold."""
    u_map, i_map = _id_maps(art)
    back = np.full(len(lat.cat), -1, np.int64)
    back[i_map] = np.arange(len(i_map))  # latent item -> prepared item_idx (-1: no interaction, not prepared)
    u_tr, i_tr = data.train
    lat_pos = PositiveSet(u_map[u_tr], i_map[i_tr], int(u_map.max()) + 1, len(lat.cat))
    lists = oracle_lists(kind, u_map[u_tr], i_map[i_tr], lat, lat_pos, n, allowed=back >= 0)
    mapped = np.where(lists >= 0, back[np.maximum(lists, 0)], -1)
    ok = mapped >= 0
    held = PositiveSet(np.r_[data.valid[0], data.test[0]], np.r_[data.valid[1], data.test[1]], data.n_users,
                       data.n_items)
    future = held.contains(np.repeat(u_tr, n)[ok.ravel()], mapped[ok])
    info = {"pairs": int(len(u_tr)), "pairs_with_candidates": int(ok.any(1).sum()),
            "candidates_per_pair": round(float(ok.sum(1).mean()), 2),
            "share_valid_or_test": round(float(future.mean()) if len(future) else 0.0, 5),
            "lists_sha1": hashlib.sha1(mapped.tobytes()).hexdigest()[:12]}  # a run is redone when its lists change
    return PairCandidates.from_fixed(u_tr, i_tr, mapped, data.n_items), info


def taste_scores(kind: str, art: Artifacts, data: CFData, lat: Latent, cfg) -> np.ndarray:
    """(users, items) score of how much a user would like an item, in prepared indices, by one source of
    knowledge (see the module docstring); higher = likelier."""
    from hnl_ray.data import synthetic

    if kind in ("oracle", "affinity"):
        u_map, i_map = _id_maps(art)
        groups = synthetic._FacetGroups(lat.cat, lat.theme, lat.age, lat.brand, lat.pop)
        aff = synthetic._group_affinity(lat.cat_pref[u_map], lat.fav[u_map], lat.second[u_map], lat.uage[u_map],
                                        lat.brand_pref[u_map])[:, groups.of_item[i_map]]
        # oracle: the generator's draw weight; affinity: the tastes alone, without the items' popularity
        return aff / cfg.data.taste_temperature + (np.log(lat.pop[i_map])[None, :] if kind == "oracle" else 0.0)
    if kind == "random":
        return np.random.default_rng(0).random((data.n_users, data.n_items))
    if kind == "popular":  # the same most-bought items for everyone: no taste, all popularity
        return np.repeat(np.log1p(data.item_counts.astype(np.float64))[None, :], data.n_users, axis=0)
    from hnl_ray.stages.candidates import item_text_vectors

    v = item_text_vectors(art, data, "positive_control guard rows")  # unit MiniLM vectors of the item texts
    if kind == "reviews":
        return (user_review_vectors(art, cfg, data.n_users) @ v.T).astype(np.float32)
    # the guard's text rule (cf.neighbours.max_text_similarity) for every (user, item) at once: one product per user
    indptr, indices = data.train_csr
    out = np.full((data.n_users, data.n_items), -1.0, np.float32)
    for u in range(data.n_users):
        its = indices[indptr[u]: indptr[u + 1]]
        if not len(its):
            continue
        if kind == "text":
            out[u] = (v[its] @ v.T).max(0)
        else:  # profile
            w = v[its].mean(0)
            out[u] = v @ (w / max(float(np.linalg.norm(w)), 1e-12))
    return out


def user_review_vectors(art: Artifacts, cfg, n_users: int) -> np.ndarray:
    """The mean of each user's training reviews, each embedded on its own with the pipeline's sentence model
    (so no review is cut off by the model's token limit), as unit vectors."""
    from sentence_transformers import SentenceTransformer

    from hnl_ray.llm.models import resolve_sentence_model

    t = art.table("train", columns=["user_idx", "review"])
    users = t["user_idx"].to_numpy()
    texts = [r or "" for r in t["review"].to_pylist()]
    distinct, back = np.unique(np.array(texts, dtype=object), return_inverse=True)  # templated: few distinct
    model = SentenceTransformer(resolve_sentence_model(cfg.embed.model), device="cpu")
    vec = model.encode(list(distinct), batch_size=64, normalize_embeddings=True)[back]
    out = np.zeros((n_users, vec.shape[1]), np.float32)
    np.add.at(out, users, vec)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def flagged_items(kind: str, k: int, art: Artifacts, data: CFData, lat: Latent, cfg) -> tuple[PositiveSet, dict]:
    """The training positives plus each user's top-k unseen items by `kind`'s scores, as one set that a
    sampler's candidate draws exclude, and how many of the users' held-out items the flags cover."""
    if not 0 < k < data.n_items:
        raise SystemExit(f"guard rows: K = {k} flags per user needs 0 < K < the {data.n_items} items")
    score = taste_scores(kind, art, data, lat, cfg).astype(np.float64)
    u_tr, i_tr = data.train
    score[u_tr, i_tr] = -np.inf  # already excluded: the flags are k unseen items per user
    top = np.argpartition(-score, k - 1, axis=1)[:, :k]
    # a user with few unseen items keeps at least one to draw: k_u = min(k, unseen - 1) flags, the best-scored
    unseen = data.n_items - np.bincount(u_tr, minlength=data.n_users)
    rank = np.argsort(np.argsort(-np.take_along_axis(score, top, 1), axis=1), axis=1)
    keep = rank < np.minimum(k, unseen - 1)[:, None]
    users = np.repeat(np.arange(data.n_users), k).reshape(top.shape)[keep]
    top_items = top[keep]
    flags = PositiveSet(users, top_items, data.n_users, data.n_items)
    cover = {f"{split}_items_flagged": round(float(flags.contains(*getattr(data, split)).mean()), 4)
             for split in ("valid", "test")}
    excluded = PositiveSet(np.r_[u_tr, users], np.r_[i_tr, top_items], data.n_users, data.n_items)
    order = np.lexsort((top_items, users))
    return excluded, {"kind": kind, "k": k, **cover, "flags_per_user": round(len(users) / data.n_users, 2),
                      "flags_sha1": hashlib.sha1(np.c_[users[order], top_items[order]].tobytes()).hexdigest()[:12]}


def guarded(trainer, excluded: PositiveSet):
    """The trainer with its sampler's candidate draws excluding `excluded` (training positives and flags);
    evaluation still masks only the training positives. For DNS: a wrapping sampler keeps its own base's data."""
    from hnl_ray.cf.samplers import DNSSampler

    if not isinstance(trainer.sampler, DNSSampler):
        raise TypeError(f"guard rows run DNS, not {type(trainer.sampler).__name__}")
    trainer.sampler.data = copy.copy(trainer.sampler.data)
    trainer.sampler.data.positives = excluded
    return trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--fresh", action="store_true", help="redo runs already in the results file")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override the shop's pipeline config (e.g. data.n_items=4000): another run directory and "
                         "results file, and DNS's M is re-tuned on validation (one seed per point)")
    ap.add_argument("--smoke", action="store_true", help="a 200-user shop, 2 epochs, seed 1, dns, one oracle and one guard; "
                                                          "results under benchmarks/.work/smoke")
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.seeds = "dns,oracle-lookalike-n1,guard-oracle", "1"
        args.set = ["data.n_users=200", "data.n_items=150", "train.optim.epochs=2"]
    names = args.rows.split(",")
    if unknown := [n for n in names if n not in ROWS]:
        raise SystemExit(f"--rows: unknown {', '.join(unknown)} (known: {', '.join(ROWS)})")
    seeds = [int(s) for s in args.seeds.split(",")]
    bench, base = load_bench(BENCH)
    tag = "-" + hashlib.sha1("\n".join(args.set).encode()).hexdigest()[:8] if args.set else ""
    run_dir = WORK / ("smoke" if args.smoke else "") / f"positive-control{tag}"
    cfg = load_config(base / bench.config, [*bench.sets, *args.set], run_dir=str(run_dir))
    run_pipeline(cfg, only="prepare")
    art = Artifacts(str(run_dir))
    data = art.cf_data()
    lat = latent(cfg.data, cfg.seed)
    out = (WORK / "smoke" if args.smoke else RESULTS) / f"positive-control{tag}.json"
    old = json.loads(out.read_text()) if out.exists() and not args.fresh else {}
    runs = old.get("runs", {})
    info: dict[str, dict] = old.get("oracles", {})
    sweep = old.get("dns_sweep", {})
    m = 4  # the table's chosen DNS M on the shop as configured
    if args.set and not args.smoke:  # another shop: DNS is re-tuned on validation, as the table would
        for point in (4, 8, 16, 32):
            if str(point) not in sweep:
                folder = f"pc-dns-sweep-m{point}"
                art.run.delete(art.cf_folder(folder))
                tr = row_train(bench, bench.rows["dns"], {"sampler.candidates": point})
                res = build_run(tr, art, data, art.cf_run(folder), folder, 1, progress=False).fit(evaluate_test=False)
                sweep[str(point)] = res["valid"][bench.train["eval"]["metric"]]
                console.print(f"dns sweep M {point}: valid {sweep[str(point)]:.4f}")
        m = int(max(sweep, key=sweep.get))
    dns_train = row_train(bench, bench.rows["dns"], {"sampler.candidates": m, **(
        {"optim.epochs": 2, "eval.every": 1} if args.smoke else {})})
    guard_sweep: dict[str, dict] = old.get("guard_sweep", {})
    current: dict[str, tuple] = {}  # row -> (setting, lists) as run now: older runs of the row are left out
    for name in names:
        over = dns_train.model_dump(mode="json", exclude={"runs"})
        parts = excluded = None
        if name in GUARDS:
            if GUARDS[name][0] in ("text", "profile", "reviews"):
                run_pipeline(cfg, only="profiles")
                run_pipeline(cfg, only="embed")
            excluded, info[name] = flagged_items(*GUARDS[name], art, data, lat, cfg)
            sw = guard_sweep.setdefault(name, {})
            # the sweep is redone when the flags or the shared CF settings change
            key = hashlib.sha1(json.dumps([info[name]["flags_sha1"], over], sort_keys=True).encode()).hexdigest()[:12]
            if sw.get("key") != key:
                sw.clear()
                sw["key"] = key
            for point in ((4,) if args.smoke else M_GRID):  # M chosen on validation, as DNS's was
                if str(point) not in sw:
                    folder = f"pc-{name}-sweep-m{point}"
                    art.run.delete(art.cf_folder(folder))
                    tr = dns_train.model_validate(deep_merge(over, {"sampler": {"candidates": point}}))
                    res = guarded(build_run(tr, art, data, art.cf_run(folder), folder, 1, progress=False),
                                  excluded).fit(evaluate_test=False)
                    sw[str(point)] = res["valid"][bench.train["eval"]["metric"]]
                    console.print(f"{name} sweep M {point}: valid {sw[str(point)]:.4f}")
                    _write(out, runs, info, {"data_overrides": args.set, "dns_sweep": sweep,
                                             "guard_sweep": guard_sweep}, current=current)
            best = max((p for p in sw if p != "key"), key=lambda p: sw[p])
            over = deep_merge(over, {"sampler": {"candidates": int(best)}})
        elif name != "dns":
            kind, n = ORACLES[name]
            over = deep_merge(over, {"sampler": deep_merge(ORACLE_SAMPLER, {"hnlmrec": {"neighbours": n,
                                                                                       "uniform": m}})})
            cands, info[name] = oracle_candidates(kind, n, art, data, lat)
            describe = {"source": name, **info[name]}
            parts = SemanticParts(lambda s, c=cands: s.attach(c, None), [], [], [], describe)
        tcfg = dns_train.model_validate(over)
        lists = info[name].get("lists_sha1", info[name].get("flags_sha1")) if name != "dns" else None
        current[name] = (over, lists)
        for seed in seeds:
            key = f"{name}@{seed}"
            folder = f"pc-{name}-s{seed}"
            if key in runs and runs[key]["setting"] == over and runs[key].get("lists_sha1") == lists and \
                    art.run.exists(art.cf_folder(folder), "per_user_test.parquet"):
                continue  # (a fresh machine has the figures but not the per-user results: it runs them again)
            art.run.delete(art.cf_folder(folder))
            t0 = time.perf_counter()
            trainer = build_run(tcfg, art, data, art.cf_run(folder), folder, seed, progress=False, semantic=parts)
            if excluded is not None:
                guarded(trainer, excluded)
            res = trainer.fit()
            log = [r["sampler"] for r in art.cf_log(folder) or [] if "sampler" in r]
            runs[key] = {"row": name, "seed": seed, "setting": over, "run": folder, "lists_sha1": lists,
                         "valid": res["valid"], "test": res["test"], "best_epoch": res["best_epoch"],
                         "sampler_first_last_epoch": [log[0], log[-1]] if log else None,
                         "wall_s": round(time.perf_counter() - t0, 1), "commit": commit()}
            console.print(f"{key}: valid N@20 {res['valid']['ndcg@20']:.4f}  test N@20 {res['test']['ndcg@20']:.4f}"
                          + (f"  neighbour picks {log[-1].get('neighbour_pick_share', 0):.3f}" if log else ""))
            _write(out, runs, info, {"data_overrides": args.set, "dns_sweep": sweep, "guard_sweep": guard_sweep},
                   current=current)
    _write(out, runs, info, {"data_overrides": args.set, "dns_sweep": sweep, "guard_sweep": guard_sweep}, art=art,
           boot=bench.bootstrap, current=current)
    console.print(f"wrote {out.relative_to(ROOT)}")


def _write(out, runs: dict, info: dict, extra: dict, art: Artifacts | None = None, boot=None,
           current: dict | None = None) -> None:
    """The rows' statistics over their seed runs; a row run in this invocation counts only its runs at the
    current setting and candidate lists (a seed not redone after a change is left out, never mixed in)."""
    current = current or {}

    def of(name: str) -> list[dict]:
        mine = [r for r in runs.values() if r["row"] == name]  # every seed run so far
        if name in current:
            mine = [r for r in mine if (r["setting"], r.get("lists_sha1")) == current[name]]
        return mine

    rows = {}
    for name in ROWS:
        mine = of(name)
        if not mine:
            continue
        rows[name] = {"seeds": len(mine), **{f"{split} {m}": stats.mean_sd([r[split][m] for r in mine])
                                             for split in ("valid", "test") for m in METRICS}}
    if art is not None and "dns" in rows:
        ref = per_user(art.run, {"seeds": {r["seed"]: r for r in of("dns")}}, METRICS)
        for name in rows:
            if name == "dns":
                continue
            mine = per_user(art.run, {"seeds": {r["seed"]: r for r in of(name)}}, METRICS)
            for m in METRICS:
                a, b = stats.align(mine[0], mine[1][m], ref[0], ref[1][m])
                ci = stats.paired_bootstrap(a, b, resamples=boot.resamples, level=boot.level, seed=boot.seed)
                rows[name][f"diff_vs_dns test {m}"] = ci
                rows[name][f"verdict {m}"] = stats.sentence(name, "dns", m, ci, rows[name]["seeds"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "positive-control", "dataset": "synthetic-shop",
                               "command": "python -m benchmarks.positive_control", "machine": machine(),
                               "oracle_sampler": ORACLE_SAMPLER, **extra, "oracles": info, "rows": rows,
                               "runs": runs},
                              indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
