"""Small numpy helpers for hot paths, and (n, d) vectors <-> Arrow fixed-size-list columns.

`np.unique` in numpy 2.4 takes ~1 s on a million int64 keys here (a hash-based path), fifty times a sort; these
sort-based versions return the same results.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def unique(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values."""
    s = np.sort(x, kind="stable")
    if len(s) == 0:
        return s
    return s[np.r_[True, s[1:] != s[:-1]]]


def unique_inverse(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and, for each element of x, the index of its value in them."""
    order = np.argsort(x, kind="stable")
    s = x[order]
    new = np.r_[True, s[1:] != s[:-1]] if len(s) else np.zeros(0, bool)
    inv = np.empty(len(x), dtype=np.int64)
    inv[order] = np.cumsum(new) - 1
    return s[new], inv


def first_index(x: np.ndarray) -> np.ndarray:
    """Index of the first occurrence of each distinct value (in sorted-value order)."""
    order = np.argsort(x, kind="stable")
    s = x[order]
    if len(s) == 0:
        return order
    return order[np.r_[True, s[1:] != s[:-1]]]


def vector_column(vecs: np.ndarray) -> pa.FixedSizeListArray:
    """(n, d) array -> a fixed-size-list Arrow column (what Parquet stores and every reader understands)."""
    vecs = np.ascontiguousarray(vecs)
    return pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), vecs.shape[1])


def vectors(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed-size-list column -> (n, d) numpy array, without copying through Python objects."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    dim = arr.type.list_size
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), dim)
