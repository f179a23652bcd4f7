"""P5-style sequences: `user_sequence.txt` (`user item item ...`, oldest first) and `item_text.txt`
(`item text ...`). Timestamps are the positions in the sequence."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from ...config.data import P5Source
from ..schema import INTERACTIONS, ITEMS, SourceData, TableBuilder
from ..textio import iter_lines
from .common import ReadContext, require_file, resolve


def read(src: P5Source, ctx: ReadContext) -> SourceData:
    path = require_file(resolve(src.path, src.sequences), "P5 sequence file (data.sequences)")
    users: list[str] = []
    items: list[str] = []
    pos: list[np.ndarray] = []
    for n, line in iter_lines(path, on_bad=ctx.errors):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            ctx.errors.bad(path, n, "a user with no items")
            continue
        users.extend([parts[0]] * (len(parts) - 1))
        items.extend(parts[1:])
        pos.append(np.arange(len(parts) - 1, dtype=np.int64))
    k = len(users)
    inter = pa.table({
        "user_id": pa.array(users, pa.string()), "item_id": pa.array(items, pa.string()),
        "rating": pa.nulls(k, pa.float32()),
        "timestamp": pa.array(np.concatenate(pos) if pos else np.zeros(0, np.int64)),
        "review": pa.nulls(k, pa.string()), "split": pa.nulls(k, pa.string()),
    }, schema=INTERACTIONS)
    files, item_table = [path], None
    if src.item_text:
        tpath = resolve(src.path, src.item_text)
        if os.path.exists(tpath):
            b = TableBuilder(ITEMS)
            for n, line in iter_lines(tpath, on_bad=ctx.errors):
                if not line.strip():
                    continue
                item, _, text = line.strip().partition(" ")
                b.append(item_id=item, title=text.strip() or None)
            item_table = b.table()
            files.append(tpath)
    return SourceData(interactions=inter, items=item_table, files=files, timestamps="ordinal")
