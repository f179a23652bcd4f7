"""Interaction data for CF training: contiguous-id pairs per split, per-user CSR, and a fast positive-set test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arrays import unique


class PositiveSet:
    """Vectorised membership test "is item i a training positive of user u" for whole batches.

    A packed bit matrix (users x items / 8 bytes) when it fits `max_bytes`: one gather per query. Otherwise
    sorted pair keys and a binary search."""

    def __init__(self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
                 max_bytes: int = 1 << 30):
        self.n_items = n_items
        keys = users.astype(np.int64) * n_items + items.astype(np.int64)
        n_bits = n_users * n_items
        if (n_bits + 7) // 8 <= max_bytes:
            bits = np.zeros((n_bits + 7) // 8, dtype=np.uint8)
            keys = unique(keys)
            byte = keys >> 3
            starts = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])
            bits[byte[starts]] = np.bitwise_or.reduceat((1 << (keys & 7)).astype(np.uint8), starts)
            self._bits, self._keys = bits, None
        else:
            self._bits, self._keys = None, unique(keys)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users.astype(np.int64) * self.n_items + items
        if self._bits is not None:
            return (self._bits[keys >> 3] >> (keys & 7).astype(np.uint8)) & 1 == 1
        pos = np.searchsorted(self._keys, keys)
        pos[pos == len(self._keys)] = 0
        return self._keys[pos] == keys


def csr(users: np.ndarray, items: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) of the user -> items matrix, items sorted within each user."""
    span = int(items.max()) + 1 if len(items) else 1
    order = np.argsort(users.astype(np.int64) * span + items, kind="stable")  # one int64 key: faster than lexsort
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return indptr, items[order].astype(np.int64)


@dataclass
class CFData:
    n_users: int
    n_items: int
    train: tuple[np.ndarray, np.ndarray]
    valid: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]

    def __post_init__(self) -> None:
        u, i = self.train
        self.train_csr = csr(u, i, self.n_users)
        self.positives = PositiveSet(u, i, self.n_users, self.n_items)
        self.item_counts = np.bincount(i, minlength=self.n_items)
        self.user_counts = np.bincount(u, minlength=self.n_users)

    @property
    def n_train(self) -> int:
        return len(self.train[0])

    def user_items(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """CSR of a split's items per user."""
        u, i = getattr(self, split)
        return csr(u, i, self.n_users)
