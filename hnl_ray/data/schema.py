"""The canonical Arrow schema every reader produces, and a column builder that streams rows into it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow as pa

INTERACTIONS = pa.schema([
    ("user_id", pa.string()),
    ("item_id", pa.string()),
    ("rating", pa.float32()),
    ("timestamp", pa.int64()),  # seconds since the epoch (UTC); sources without time use the sequence position
    ("review", pa.string()),
    ("split", pa.string()),  # "train" / "valid" / "test" when the source carries its own split, else null
])

ITEMS = pa.schema([
    ("item_id", pa.string()),
    ("title", pa.string()),
    ("description", pa.string()),
    ("categories", pa.list_(pa.string())),
    ("brand", pa.string()),
    ("city", pa.string()),
    ("extra", pa.string()),  # JSON object of other attributes worth showing an LLM (price, genres, ...)
])

USERS = pa.schema([
    ("user_id", pa.string()),
    ("extra", pa.string()),
])


class TableBuilder:
    """Append rows as keyword arguments; rows are flushed to Arrow record batches every `batch_rows`, so a
    reader holds Python objects for one batch at a time. `on_batch` may shrink each batch (filter pushdown)."""

    def __init__(self, schema: pa.Schema, batch_rows: int = 100_000,
                 on_batch: Callable[[pa.Table], pa.Table] | None = None):
        self.schema = schema
        self.batch_rows = batch_rows
        self.on_batch = on_batch
        self._cols: dict[str, list[Any]] = {n: [] for n in schema.names}
        self._n = 0
        self._tables: list[pa.Table] = []

    def append(self, **row: Any) -> None:
        for name, col in self._cols.items():
            col.append(row.get(name))
        self._n += 1
        if self._n >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        if not self._n:
            return
        t = pa.Table.from_pydict(self._cols, schema=self.schema)
        if self.on_batch is not None:
            t = self.on_batch(t)
        self._tables.append(t)
        self._cols = {n: [] for n in self.schema.names}
        self._n = 0

    def table(self) -> pa.Table:
        self.flush()
        if not self._tables:
            return self.schema.empty_table()
        return pa.concat_tables(self._tables).combine_chunks()


def empty_items(item_ids: pa.Array | None = None) -> pa.Table:
    """An items table with ids only (sources without metadata)."""
    if item_ids is None:
        return ITEMS.empty_table()
    n = len(item_ids)
    cols = {name: pa.nulls(n, type=ITEMS.field(name).type) for name in ITEMS.names}
    cols["item_id"] = item_ids.cast(pa.string())
    return pa.Table.from_pydict(cols, schema=ITEMS)


@dataclass
class SourceData:
    """What a reader returns: canonical tables plus what it read and counted."""

    interactions: pa.Table
    items: pa.Table | None = None
    users: pa.Table | None = None
    files: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    split_files: dict[str, str] = field(default_factory=dict)  # split name -> file it came from (for messages)
    timestamps: str = "epoch"  # "epoch" seconds, "ordinal" sequence positions, or "none"
