"""The run report: report.md and its plots, built only from the run's artifacts (manifests, stats, CF metrics,
logs, per-user metrics and test ranks, the tune results when there are some)."""

from __future__ import annotations

import io
import json
import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import artifacts as A  # noqa: E402
from .artifacts import Artifacts  # noqa: E402
from .config import Config  # noqa: E402
from .errors import MissingInput  # noqa: E402
from .storage import RunDir  # noqa: E402

log = logging.getLogger(__name__)


def cf_runs(art: Artifacts, names: list[str] | None = None) -> dict[str, dict]:
    """Finished CF runs: the given names in their order (the configured runs), or every run found."""
    out = {}
    for name in names if names is not None else art.cf_names():
        m = art.cf_metrics(name)
        if m is not None:
            out[name] = m
    return out


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def learning_curves(art: Artifacts, runs: dict[str, dict]) -> bytes | None:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    drawn = False
    for name, m in runs.items():
        rows = art.cf_log(name)
        if rows is None:
            continue
        ev = [(r["epoch"], r["valid"][m["metric"]]) for r in rows if "valid" in r]
        if ev:
            a1.plot(*zip(*ev), label=name)
            drawn = True
        a2.plot([r["epoch"] for r in rows], [r["loss"] for r in rows], label=name)
    if not drawn:
        plt.close(fig)
        return None
    metric = next(iter(runs.values()))["metric"]
    a1.set(xlabel="epoch", ylabel=f"valid {metric}", title="validation metric")
    a2.set(xlabel="epoch", ylabel="train loss", title="training loss")
    a1.legend(fontsize=7)
    return _png(fig)


def _groups(counts: np.ndarray, n: int = 5) -> tuple[np.ndarray, list[str]]:
    """Quantile groups of a count array (0 = least); labels give each group's count range."""
    edges = np.unique(np.quantile(counts, np.linspace(0, 1, n + 1)))
    g = np.clip(np.searchsorted(edges, counts, side="right") - 1, 0, len(edges) - 2)
    labels = [f"{int(edges[k])}-{int(edges[k + 1])}" for k in range(len(edges) - 1)]
    return g, labels


def group_recall(art: Artifacts, runs: dict[str, dict], k: int = 20) -> tuple[bytes | None, dict]:
    """Recall@k of test interactions grouped by item popularity and by user activity (training counts)."""
    if not runs:
        return None, {}
    train = art.table("train", columns=["user_idx", "item_idx"])
    stats = art.stats()
    item_cnt = np.bincount(train["item_idx"].to_numpy(), minlength=stats["items"])
    user_cnt = np.bincount(train["user_idx"].to_numpy(), minlength=stats["users"])
    ig, ilabels = _groups(item_cnt)
    ug, ulabels = _groups(user_cnt)
    table: dict = {"items": {}, "users": {}}
    for name in runs:
        r = art.cf_ranks(name, "test")
        if r is None:
            continue
        u, i, rank = (r[c].to_numpy() for c in ("user_idx", "item_idx", "rank"))
        hit = (rank >= 0) & (rank < k)
        for key, groups, ids in (("items", ig, i), ("users", ug, u)):
            g = groups[ids]
            table[key][name] = [float(hit[g == x].mean()) if (g == x).any() else float("nan")
                                for x in range(groups.max() + 1)]
    if not table["items"]:
        return None, {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, key, labels, title in ((axes[0], "items", ilabels, "by item popularity (train interactions)"),
                                   (axes[1], "users", ulabels, "by user activity (train interactions)")):
        names = list(table[key])
        width = 0.8 / max(1, len(names))
        x = np.arange(len(labels))
        for j, name in enumerate(names):
            ax.bar(x + j * width, table[key][name], width, label=name)
        ax.set_xticks(x + 0.4 - width / 2, labels, fontsize=7)
        ax.set(ylabel=f"test recall@{k}", title=title)
    axes[0].legend(fontsize=7)
    table["item_groups"], table["user_groups"] = ilabels, ulabels
    return _png(fig), table


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.4f}" if abs(x) < 10 else f"{x:.1f}"
    return str(x)


def _stage_rows(art: Artifacts) -> list[list[str]]:
    from .stages import STAGES

    rows = []
    for label, folder in [row for s in STAGES for row in s.report_rows()]:
        m = art.manifest(folder)
        if m is None:
            continue
        c = m.get("counts", {})
        if folder == A.PREPARED:
            what = f"{c.get('users', 0):,} users, {c.get('items', 0):,} items, train {c.get('train', 0):,}"
            fails = "-"
        elif "status" in c:
            st = c["status"]
            what = f"{c.get('rows', 0):,} rows (ok {st.get('ok', 0)}, repaired {st.get('repaired', 0)})"
            fails = str(st.get("failed", 0))
            tr = c.get("this_run", {})
            if tr.get("tokens_per_s"):
                what += f", {tr['tokens_per_s']} tok/s"
        else:
            what = ", ".join(f"{k} {v}" for k, v in c.items() if isinstance(v, (int, float)))[:160]
            # the teacher: pairs left without a target (every item a positive or over the rho bound)
            fails = (str(c["pairs_sampled"] - c["pairs_with_target"]) if "pairs_with_target" in c
                     else str(c.get("pairs_dropped_by_guard", "-")))
        secs = sum(v for v in m.get("timings_s", {}).values() if isinstance(v, (int, float)))
        rows.append([label, what, fails, f"{secs:.1f}"])
    return rows


def write_report(cfg: Config, run: RunDir | Artifacts | None = None, tune_dir: str | None = None) -> str:
    art = run if isinstance(run, Artifacts) else Artifacts(run or cfg.resolved_run_dir())
    if not art.run.exists(A.PREPARED, A.PREPARED_STATS):
        raise MissingInput(f"{art.uri(A.PREPARED)} not found: run `hnl-ray prepare` (or `hnl-ray run`) first")
    stats = art.stats()
    runs = cf_runs(art, cfg.train.run_names())
    ks = sorted({int(k.split("@")[1]) for m in runs.values() for k in m["test"] if k.startswith("recall@")}) or [20]
    lines = [f"# hnl-ray report: {cfg.name}", "",
             f"Run directory `{art.run.uri}`. Everything below is read from the run's artifacts. Models are chosen "
             "on the validation split; each run's test split is evaluated once, on its chosen epoch.", "",
             "## Dataset", "", "| users | items | train | valid | test | density | item popularity Gini |",
             "|---|---|---|---|---|---|---|"]
    ps = stats["interactions_per_split"]
    lines.append(f"| {stats['users']:,} | {stats['items']:,} | {ps['train']:,} | {ps['valid']:,} | {ps['test']:,} | "
                 f"{stats['density']:.5f} | {stats['item_popularity_gini']:.3f} |")
    lines += ["", "## Stages", "", "| stage | output | failures | seconds |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in _stage_rows(art)]
    files: dict[str, bytes | str | dict] = {}
    if runs:
        head = "| run | model | sampler | loss | best epoch |" + "".join(
            f" valid R@{k} | valid N@{k} | test R@{k} | test N@{k} |" for k in ks)
        lines += ["", "## Sampler comparison", "", head, "|" + "---|" * (5 + 4 * len(ks))]
        for name, m in runs.items():
            row = [name, m["model"], m["sampler"], m.get("loss", "bpr"), str(m["best_epoch"])]
            for k in ks:
                row += [_fmt(m["valid"][f"recall@{k}"]), _fmt(m["valid"][f"ndcg@{k}"]),
                        _fmt(m["test"][f"recall@{k}"]), _fmt(m["test"][f"ndcg@{k}"])]
            lines.append("| " + " | ".join(row) + " |")
        curves = learning_curves(art, runs)
        if curves:
            files["learning_curves.png"] = curves
            lines += ["", "## Learning curves", "", f"![learning curves]({A.REPORT}/learning_curves.png)"]
        groups, table = group_recall(art, runs, k=max(ks))
        if groups:
            files["groups.png"] = groups
            lines += ["", "## By item popularity and user activity", "",
                      f"Test recall@{max(ks)} of the interactions whose item (left) or user (right) falls in each "
                      f"quintile of training interactions.", "", f"![groups]({A.REPORT}/groups.png)"]
            files["groups.json"] = table
    tune_dir = tune_dir or next(iter(art.tune_names()), None)
    results = art.tune_file(tune_dir, "results.md") if tune_dir else None
    if results:
        lines += ["", f"## Sweep `{tune_dir}`", "", results.strip()]
        if art.tune_has(tune_dir, "alpha.png"):
            lines += ["", f"![sweep]({art.tune_folder(tune_dir)}/alpha.png)"]
        best_text = art.tune_file(tune_dir, "best_test.json")
        if best_text:
            best = json.loads(best_text)
            lines += ["", f"Best configuration by validation `{best['metric']}`: test "
                          f"{', '.join(f'{k} {v:.4f}' for k, v in best['test'].items() if '@' in k)} "
                          "(evaluated once, after the sweep)."]
    return art.write_report("\n".join(lines) + "\n", files)


def run(ctx) -> dict:
    """The `report` stage."""
    return {"report": write_report(ctx.cfg, ctx.art)}
