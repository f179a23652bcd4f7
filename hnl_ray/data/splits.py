"""Per-user splits, vectorised over all users at once. Labels: 0 train, 1 valid, 2 test.

Counts per user follow RecBole's rule so results compare: valid and test get floor(ratio * n) interactions, plus
one when 0 < ratio * n < 1 and train keeps more than one; train gets the rest.
"""

from __future__ import annotations

import numpy as np

from ..arrays import first_index

TRAIN, VALID, TEST = 0, 1, 2
NAMES = ("train", "valid", "test")


def _group_rank(u: np.ndarray, sort_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each row within its user, by sort_key (stable), and each row's user size."""
    order = np.lexsort((np.arange(len(u)), sort_key, u))
    us = u[order]
    sizes = np.bincount(u, minlength=int(u.max()) + 1 if len(u) else 0)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(len(u), dtype=np.int64)
    rank[order] = np.arange(len(u)) - starts[us]
    return rank, sizes[u]


def ratio_counts(n: np.ndarray, ratios: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _, rv, rt = ratios
    v = np.floor(rv * n + 1e-9).astype(np.int64)
    t = np.floor(rt * n + 1e-9).astype(np.int64)
    tr = n - v - t
    add_t = (tr > 1) & (rt * n > 0) & (rt * n < 1)
    t, tr = t + add_t, tr - add_t
    add_v = (tr > 1) & (rv * n > 0) & (rv * n < 1)
    v, tr = v + add_v, tr - add_v
    return tr, v, t


def _by_rank(rank: np.ndarray, size: np.ndarray, ratios) -> np.ndarray:
    tr, v, _ = ratio_counts(size, ratios)
    return np.where(rank < tr, TRAIN, np.where(rank < tr + v, VALID, TEST)).astype(np.int8)


def random_split(u: np.ndarray, ratios, rng: np.random.Generator) -> np.ndarray:
    rank, size = _group_rank(u, rng.random(len(u)))
    return _by_rank(rank, size, ratios)


def temporal_split(u: np.ndarray, ts: np.ndarray, ratios) -> np.ndarray:
    rank, size = _group_rank(u, ts)
    return _by_rank(rank, size, ratios)


def leave_one_out(u: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Last interaction -> test, second last -> valid (users with >= 3); a user with 2 gives only a test item;
    a user with 1 stays in train."""
    rank, size = _group_rank(u, ts)
    from_end = size - 1 - rank
    label = np.full(len(u), TRAIN, dtype=np.int8)
    label[(from_end == 0) & (size >= 2)] = TEST
    label[(from_end == 1) & (size >= 3)] = VALID
    return label


def carve_valid(u: np.ndarray, i: np.ndarray, label: np.ndarray, valid_ratio: float, rng: np.random.Generator
                ) -> tuple[np.ndarray, int]:
    """Move a random `valid_ratio` of each user's train rows to validation (given train/test splits).
    A moved row whose item would then be missing from train goes back to train (returned count)."""
    out = label.copy()
    tr = np.nonzero(label == TRAIN)[0]
    if not len(tr) or valid_ratio <= 0:
        return out, 0
    rank, size = _group_rank(u[tr], rng.random(len(tr)))
    _, v, _ = ratio_counts(size, (1 - valid_ratio, valid_ratio, 0.0))
    move = tr[rank < v]
    out[move] = VALID
    in_train = np.zeros(int(i.max()) + 1, dtype=bool)
    in_train[i[out == TRAIN]] = True
    back = move[~in_train[i[move]]]
    # Rows of the same item may all have moved: return one per item (the first), which makes the item warm.
    first = first_index(i[back])
    out[back[first]] = TRAIN
    return out, int(len(first))
