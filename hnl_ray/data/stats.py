"""Dataset statistics written to prepared/stats.json."""

from __future__ import annotations

import numpy as np

from ..arrays import unique


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 = all items equally popular, -> 1 = one item has everything)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    cum = np.cumsum(x)
    return float((n + 1 - 2 * (cum / cum[-1]).sum()) / n)


def quantiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    q = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 0.9, 1.0])
    return {"min": float(q[0]), "p25": float(q[1]), "median": float(q[2]), "p75": float(q[3]),
            "p90": float(q[4]), "max": float(q[5]), "mean": round(float(np.mean(values)), 3)}


def dataset_stats(u: np.ndarray, i: np.ndarray, label: np.ndarray, n_users: int, n_items: int) -> dict:
    per_split = {name: int((label == k).sum()) for k, name in enumerate(("train", "valid", "test"))}
    total = len(u)
    return {
        "users": n_users,
        "items": n_items,
        "interactions": total,
        "interactions_per_split": per_split,
        "density": round(total / max(1, n_users * n_items), 8),
        "interactions_per_user": quantiles(np.bincount(u, minlength=n_users)),
        "interactions_per_item": quantiles(np.bincount(i, minlength=n_items)),
        "item_popularity_gini": round(gini(np.bincount(i, minlength=n_items)), 4),
        "users_with_valid": int(len(unique(u[label == 1]))),
        "users_with_test": int(len(unique(u[label == 2]))),
    }
