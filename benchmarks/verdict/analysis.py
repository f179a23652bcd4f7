"""From the finished rows of a table to its figures: mean ± sample s.d. over seeds, the best tuned classic row
(chosen on validation), every row's paired bootstrap interval against it, the verdict sentences, the groups and
the false-hard-negative diagnostic. Reads only what the runs wrote; trains nothing but the diagnostic epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hnl_ray import manifest
from hnl_ray.artifacts import Artifacts
from hnl_ray.cf.data import CFData
from hnl_ray.storage import RunDir

from . import artifacts, fhn, groups, stats
from .config import DRAW, BenchConfig, base_row, missing_need, redrawn_rows, row_train


def cf_run(run: RunDir, rec: dict) -> RunDir:
    """The run directory a row's CF runs are in: the table's, or a further draw's (RUN/draws/<S>)."""
    return RunDir(run.path(rec["run_dir"])) if rec.get("run_dir") else run


def per_user(run: RunDir, rec: dict, metrics: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each user's test metrics averaged over the row's seeds (users present in every seed)."""
    run = cf_run(run, rec)
    tables = [run.read_parquet(f"cf/{s['run']}/per_user_test.parquet") for s in rec["seeds"].values()]
    users = tables[0]["user_idx"].to_numpy()
    for t in tables[1:]:
        users = np.intersect1d(users, t["user_idx"].to_numpy())
    out = {}
    for m in metrics:
        acc = np.zeros(len(users))
        for t in tables:
            u = t["user_idx"].to_numpy()
            order = np.argsort(u)
            acc += t[m].to_numpy()[order][np.searchsorted(u[order], users)]
        out[m] = acc / len(tables)
    return users, out


def row_groups(run: RunDir, rec: dict, data: CFData, metrics: list[str]) -> dict[str, dict]:
    k = int(metrics[0].split("@")[1])
    run = cf_run(run, rec)
    ig, ilabels = groups.popularity_groups(data.item_counts)
    ug, ulabels = groups.activity_groups(data.user_counts)
    per_seed_items, per_seed_users = [], []
    for s in rec["seeds"].values():
        r = run.read_parquet(f"cf/{s['run']}/ranks_test.parquet")
        per_seed_items.append(groups.by_item_group(r["item_idx"].to_numpy(), r["rank"].to_numpy().astype(np.int64),
                                                   ig, ilabels, k))
        t = run.read_parquet(f"cf/{s['run']}/per_user_test.parquet")
        per_seed_users.append(groups.by_user_group(t["user_idx"].to_numpy(), {m: t[m].to_numpy() for m in metrics},
                                                   ug, ulabels, tuple(metrics)))
    return {"items": _mean_dicts(per_seed_items), "users": _mean_dicts(per_seed_users)}


def _mean_dicts(ds: list[dict[str, dict]]) -> dict[str, dict]:
    out = {}
    for label in ds[0]:
        vals = [d[label] for d in ds if label in d]
        out[label] = {k: (vals[0][k] if k in ("pairs", "users") else float(np.mean([v[k] for v in vals])))
                      for k in vals[0]}
    return out


def false_negatives(bench: BenchConfig, name: str, rec: dict, run: RunDir, data: CFData,
                    text: np.ndarray | None) -> dict:
    """Cached per row by the fingerprint of the CF run it starts from."""
    seed = bench.seeds[0]
    trained = rec["seeds"][str(seed)]["run"]
    where = cf_run(run, rec)
    fp = (manifest.load(where, f"cf/{trained}") or {}).get("fingerprint")
    rel = f"bench/fhn/{name}.json"
    if run.exists(rel) and run.read_json(rel).get("fingerprint") == fp and (
            text is None or run.read_json(rel).get("text_sim_to_positive") is not None
            or run.read_json(rel).get("negatives", 0) == 0):
        return run.read_json(rel)
    from hnl_ray.cf.trainer import BEST

    if not where.exists(f"cf/{trained}", BEST):  # results kept without weights, the diagnostic never ran
        raise RuntimeError(f"row {name}: the false-hard-negative diagnostic needs cf/{trained}/{BEST}, which was "
                           f"not kept; delete cf/{trained}/manifest.json in {where.uri} to retrain that seed, or "
                           "run with --no-diagnostics")
    tcfg = row_train(bench, bench.rows[base_row(name)], rec["setting"]).model_copy(update={"seed": seed})
    res = {"fingerprint": fp, "from_run": trained,
           **fhn.diagnose(tcfg, where, data, trained, seed, text,
                          epoch=rec["seeds"][str(seed)]["best_epoch"] or 1)}
    run.write_json(rel, res)
    artifacts.keep_results(bench, run, [name])
    return res


def unfinished(bench: BenchConfig, run: RunDir, name: str) -> str:
    """How far an unfinished row got: seeds finished, or the sweep's trials started (for the progress line)."""
    for need in bench.rows[name].needs:
        if (why := missing_need(need)) is not None:
            return f"not run (sampler missing: {why})"
    seeds = sum(run.exists(f"cf/v-{name}-s{s}", "manifest.json") for s in bench.seeds)
    if seeds:
        return f"not finished: {seeds} of {len(bench.seeds)} seeds done when the table stopped"
    tune_dir = Path(run.path("tune"))
    if bench.rows[name].grid and run.is_local and tune_dir.is_dir() and (
            trials := sorted(t.name for t in tune_dir.iterdir() if t.name.startswith(f"bench-{name}-"))):
        return f"not finished: its sweep ({trials[0]}) had started when the table stopped"
    return "not run yet (the table stopped before it)"


def analyse(bench: BenchConfig, run: RunDir, records: dict[str, dict], text: np.ndarray | None,
            diagnostics: bool = True) -> dict:
    metrics = list(bench.report_metrics)
    done = {n: r for n, r in records.items() if r.get("status") == "run"
            and len(r.get("seeds", {})) == len(bench.seeds)}
    data = Artifacts(run).cf_data() if done else None  # a table that has not started may have no prepared data
    not_run = {n: r.get("status", "not run yet") for n, r in records.items() if n not in done}
    not_run.update({n: unfinished(bench, run, n) for n in bench.rows if n not in records})
    not_run.update({f"{n}{DRAW}{d}": f"not run yet (draw {d} of the LLM stages)" for d in bench.draws
                    for n in redrawn_rows(bench) if f"{n}{DRAW}{d}" not in records})
    rows: dict[str, dict] = {}
    users: dict[str, tuple] = {}
    for name, rec in done.items():
        seeds = list(rec["seeds"].values())
        rows[name] = {
            "kind": rec["kind"], "setting": rec["setting"], "seeds": len(seeds), "commit": rec.get("commit"),
            "valid": {m: stats.mean_sd([s["valid"][m] for s in seeds]) for m in metrics},
            "test": {m: stats.mean_sd([s["test"][m] for s in seeds]) for m in metrics},
            "sweep": [{k: (None if isinstance(v, float) and v != v else v) for k, v in p.items()}  # NaN: failed
                      for p in (rec["sweep"] or {}).get("points", [])],
            "note": rec.get("note", ""), "config": rec["config"],
        }
        users[name] = per_user(run, rec, metrics)
    classic = [n for n in rows if rows[n]["kind"] == "classic"]
    best = max(classic, key=lambda n: rows[n]["valid"][bench.metric]["mean"]) if classic else None
    b = bench.bootstrap
    for name, row in rows.items():
        if best is None or name == best:
            continue
        row["diff_vs_best_classic"] = {
            m: stats.paired_bootstrap(*stats.align(users[name][0], users[name][1][m], users[best][0],
                                                   users[best][1][m]), b.resamples, b.level, b.seed)
            for m in metrics}
        row["verdict"] = {m: stats.sentence(name, best, m, row["diff_vs_best_classic"][m], row["seeds"])
                          for m in metrics}
    for name, rec in done.items():
        rows[name]["groups"] = row_groups(run, rec, data, metrics)
        if diagnostics and bench.diagnostics.false_negatives:
            rows[name]["false_negatives"] = {k: v for k, v in false_negatives(
                bench, name, rec, run, data, text).items() if k != "fingerprint"}
    return {"best_classic": best, "rows": rows, "not_run": not_run,
            "headline": headline(bench, rows, users, best)}


def headline(bench: BenchConfig, rows: dict, users: dict, best: str | None) -> str:
    """The answer on the first draw, then the same question on every further draw of the LLM stages."""
    text = draw_headline(bench, rows, users, best, None)
    for d in bench.draws:
        if f"{bench.headline}{DRAW}{d}" in rows:
            text += f" Draw {d} of the LLM stages: " + draw_headline(bench, rows, users, best, d)
    return text


def draw_headline(bench: BenchConfig, rows: dict, users: dict, best: str | None, draw: int | None) -> str:
    redrawn = set(redrawn_rows(bench))

    def on(name: str) -> str:  # the row of this draw (rows that read no redrawn stage are shared by all draws)
        return f"{name}{DRAW}{draw}" if draw is not None and name in redrawn else name

    h = on(bench.headline)
    if h not in rows:
        return (f"Not answered: the `{h}` row has not run on this table"
                + (f" (best tuned classic sampler so far: {best})." if best else "."))
    d = rows[h]["diff_vs_best_classic"][bench.metric] if bench.metric in rows[h].get("diff_vs_best_classic", {}) else None
    parts = [f"`{h}` is {stats.verdict(d)} the best tuned classic sampler ({best}) on test NDCG@20 "
             f"({d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}])" if d else f"`{h}` is the best classic"]
    b = bench.bootstrap
    for c in map(on, bench.headline_controls):
        if c not in rows:
            parts.append(f"its `{c}` control has not run")
            continue
        ci = stats.paired_bootstrap(*stats.align(users[h][0], users[h][1][bench.metric], users[c][0],
                                                 users[c][1][bench.metric]), b.resamples, b.level, b.seed)
        parts.append(f"it is {stats.verdict(ci)} its `{c}` control ({ci['mean']:+.4f} "
                     f"[{ci['ci_low']:+.4f}, {ci['ci_high']:+.4f}])")
    return "; ".join(parts) + "."
