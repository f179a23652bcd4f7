"""The table's statistics, as pure functions: mean and sample s.d. over seeds, the paired per-user bootstrap of a
row's difference from a reference row, and the verdict read from the interval (never written by hand)."""

from __future__ import annotations

import math

import numpy as np


def mean_sd(values: list[float]) -> dict[str, float]:
    """Mean and *sample* standard deviation (n - 1); the s.d. of a single value is 0 (reported with seeds = 1)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        raise ValueError("mean_sd of no values")
    return {"mean": float(x.mean()), "sd": float(x.std(ddof=1)) if len(x) > 1 else 0.0}


def align(users_a: np.ndarray, vals_a: np.ndarray, users_b: np.ndarray, vals_b: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """The two rows' per-user values on the users both evaluated, in the same order (paired)."""
    common, ia, ib = np.intersect1d(users_a, users_b, return_indices=True)
    if len(common) == 0:
        raise ValueError("the two rows share no evaluated user")
    return np.asarray(vals_a, np.float64)[ia], np.asarray(vals_b, np.float64)[ib]


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = 1000, level: float = 0.95, seed: int = 0,
                     chunk: int = 100) -> dict[str, float]:
    """Percentile interval of mean(a - b) when users are resampled with replacement (a[k] and b[k] are the same
    user's metric under two rows, each already averaged over that row's seeds). `mean` is the observed difference;
    the interval is clipped to contain it (the percentile interval of a skewed statistic can miss it by a hair)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = len(d)
    if n == 0:
        raise ValueError("paired_bootstrap of no users")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError("resamples must be >= 1 and level in (0, 1)")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for s in range(0, resamples, chunk):  # (chunk, n) indices at a time: bounded memory for large user sets
        k = min(chunk, resamples - s)
        means[s: s + k] = d[rng.integers(0, n, size=(k, n))].mean(1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    obs = float(d.mean())
    return {"mean": obs, "ci_low": float(min(lo, obs)), "ci_high": float(max(hi, obs)), "users": n,
            "resamples": resamples, "level": level}


def verdict(ci: dict[str, float]) -> str:
    """`above` when the whole interval is above 0, `below` when it is below, else `not distinguishable from`."""
    if ci["ci_low"] > 0:
        return "above"
    if ci["ci_high"] < 0:
        return "below"
    return "not distinguishable from"


def sentence(row: str, ref: str, metric: str, ci: dict[str, float], seeds: int) -> str:
    """One line computed from the interval, e.g. `dns is above uniform on test NDCG@20: +0.0040 [+0.0010,
    +0.0071] (95 % paired bootstrap over 2,928 users, 5 seeds)`."""
    pct = int(round(ci["level"] * 100))
    return (f"{row} is {verdict(ci)} {ref} on test {_label(metric)}: {ci['mean']:+.4f} "
            f"[{ci['ci_low']:+.4f}, {ci['ci_high']:+.4f}] ({pct} % paired bootstrap over {ci['users']:,} users, "
            f"{seeds} seed{'s' if seeds != 1 else ''})")


def _label(metric: str) -> str:
    name, k = metric.split("@")
    return {"ndcg": "NDCG", "recall": "Recall", "hit": "Hit", "precision": "Precision"}.get(name, name) + f"@{k}"


def finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
