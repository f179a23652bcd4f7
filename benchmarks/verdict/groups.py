"""Test metrics by item popularity and by user activity, where semantic negatives should matter most.

* Items: training-count quintiles of the items seen in training (Q1 the least popular fifth) plus `unseen` (items
  with no training interaction). Per ground-truth test pair: recall@K = the pair is in the top K, ndcg@K =
  1 / log2(rank + 2) when it is (pair-level; with one test item per user, as leave-one-out, the user's NDCG).
* Users: training interactions 1-2, 3-5, 6-10, > 10 (0 = cold users, shown only when present); the per-user
  test metrics the trainer wrote.
Pure functions over arrays, plus one matplotlib figure.
"""

from __future__ import annotations

import io

import numpy as np

ACTIVITY = (("1-2", 1, 2), ("3-5", 3, 5), ("6-10", 6, 10), (">10", 11, None))


def popularity_groups(item_counts: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Group index per item (0..4 = Q1..Q5 by training count, 5 = unseen) and the group labels."""
    counts = np.asarray(item_counts)
    group = np.full(len(counts), 5, np.int64)
    seen = counts > 0
    if seen.any():
        # Rank-based quintiles (ties broken by item id) so that every quintile holds a fifth of the seen items
        # even when many items share a count.
        order = np.lexsort((np.arange(len(counts))[seen], counts[seen]))
        q = np.empty(int(seen.sum()), np.int64)
        q[order] = np.minimum(np.arange(len(order)) * 5 // len(order), 4)
        group[seen] = q
    return group, ["Q1 (rarest)", "Q2", "Q3", "Q4", "Q5 (most popular)", "unseen"]


def activity_groups(user_counts: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Group index per user by training interactions (0: 1-2, 1: 3-5, 2: 6-10, 3: > 10, 4: none)."""
    c = np.asarray(user_counts)
    group = np.full(len(c), 4, np.int64)
    for g, (_, lo, hi) in enumerate(ACTIVITY):
        group[(c >= lo) & ((c <= hi) if hi is not None else True)] = g
    return group, [a[0] for a in ACTIVITY] + ["0 (cold)"]


def by_item_group(items: np.ndarray, rank: np.ndarray, item_group: np.ndarray, labels: list[str], k: int
                  ) -> dict[str, dict]:
    """Pair-level recall@k and ndcg@k of test pairs (items, rank in the top list or -1) per item group."""
    hit = (rank >= 0) & (rank < k)
    gain = np.where(hit, 1.0 / np.log2(np.maximum(rank, 0) + 2.0), 0.0)
    g = item_group[items]
    out = {}
    for j, label in enumerate(labels):
        m = g == j
        if m.any():
            out[label] = {"pairs": int(m.sum()), f"recall@{k}": float(hit[m].mean()), f"ndcg@{k}": float(gain[m].mean())}
    return out


def by_user_group(users: np.ndarray, per_user: dict[str, np.ndarray], user_group: np.ndarray, labels: list[str],
                  metrics: tuple[str, ...]) -> dict[str, dict]:
    g = user_group[users]
    out = {}
    for j, label in enumerate(labels):
        m = g == j
        if m.any():
            out[label] = {"users": int(m.sum()), **{name: float(np.asarray(per_user[name])[m].mean())
                                                    for name in metrics}}
    return out


def plot(groups: dict[str, dict[str, dict]], metric: str, title: str) -> bytes:
    """Two panels (item popularity, user activity): `metric` per group, one bar per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    rows = list(groups)
    for ax, kind, xlabel in ((axes[0], "items", "test item's training popularity"),
                             (axes[1], "users", "user's training interactions")):
        labels = list(dict.fromkeys(lab for r in rows for lab in groups[r].get(kind, {})))
        width = 0.8 / max(1, len(rows))
        x = np.arange(len(labels))
        for n, r in enumerate(rows):
            vals = [groups[r].get(kind, {}).get(lab, {}).get(metric, np.nan) for lab in labels]
            ax.bar(x + n * width - 0.4 + width / 2, vals, width, label=r)
        ax.set_xticks(x, labels, fontsize=8, rotation=15)
        ax.set(xlabel=xlabel, ylabel=f"test {metric}")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
