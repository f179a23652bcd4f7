"""LightGCN / NGCF adjacency lists: each line `user_idx item_idx item_idx ...`; `user_list.txt` and
`item_list.txt` (header, then `org_id remap_id`) map the indices back to raw ids when present."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from ...config.data import LightGCNSource
from ..errors import DataError
from ..schema import INTERACTIONS, SourceData
from ..textio import iter_lines
from .common import ReadContext, require_file, resolve


def _id_list(path: str, ctx: ReadContext) -> np.ndarray | None:
    """org ids indexed by remap id, or None when the file is absent."""
    if not os.path.exists(path):
        return None
    remap, org = [], []
    for n, line in iter_lines(path, on_bad=ctx.errors):
        parts = line.split()
        if n == 1 and parts[:2] == ["org_id", "remap_id"] or not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            ctx.errors.bad(path, n, "expected `org_id remap_id`")
            continue
        org.append(parts[0])
        remap.append(int(parts[1]))
    out = np.full(max(remap) + 1 if remap else 0, None, dtype=object)
    out[np.asarray(remap, dtype=np.int64)] = org
    return out


def _adjacency(path: str, ctx: ReadContext) -> tuple[np.ndarray, np.ndarray]:
    users, items = [], []
    for n, line in iter_lines(path, on_bad=ctx.errors):
        parts = line.split()
        if not parts:
            continue
        try:
            ids = np.array(parts, dtype=np.int64)
        except ValueError:
            ctx.errors.bad(path, n, "expected whitespace-separated integer ids")
            continue
        if (ids < 0).any():
            ctx.errors.bad(path, n, "negative id")
            continue
        items.append(ids[1:])
        users.append(np.full(len(ids) - 1, ids[0], dtype=np.int64))
    if not users:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(users), np.concatenate(items)


def _raw(idx: np.ndarray, names: np.ndarray | None, list_path: str) -> pa.Array:
    if names is None:
        return pa.array(idx).cast(pa.string())
    bad = (idx >= len(names)) | (names[np.minimum(idx, max(len(names) - 1, 0))] == None)  # noqa: E711
    if len(names) == 0 or bad.any():
        raise DataError(f"id {int(idx[bad][0]) if bad.any() else int(idx[0])} is not listed", list_path)
    return pa.array(names).take(pa.array(idx))


def read(src: LightGCNSource, ctx: ReadContext) -> SourceData:
    train_path = require_file(resolve(src.path, src.train), "LightGCN train file (data.train)")
    test_path = require_file(resolve(src.path, src.test), "LightGCN test file (data.test)")
    ulist, ilist = resolve(src.path, "user_list.txt"), resolve(src.path, "item_list.txt")
    unames, inames = _id_list(ulist, ctx), _id_list(ilist, ctx)
    parts = []
    for split, path in (("train", train_path), ("test", test_path)):
        u, i = _adjacency(path, ctx)
        n = len(u)
        if n == 0:
            raise DataError(f"no interactions in the {split} file (data.{split})", path)
        parts.append(pa.table({
            "user_id": _raw(u, unames, ulist), "item_id": _raw(i, inames, ilist),
            "rating": pa.nulls(n, pa.float32()), "timestamp": pa.nulls(n, pa.int64()),
            "review": pa.nulls(n, pa.string()), "split": pa.array(np.full(n, split, dtype=object), pa.string()),
        }, schema=INTERACTIONS))
    files = [train_path, test_path] + [p for p in (ulist, ilist) if os.path.exists(p)]
    return SourceData(interactions=pa.concat_tables(parts), files=files,
                      split_files={"train": train_path, "test": test_path}, timestamps="none")
