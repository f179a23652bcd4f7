"""Any CSV / TSV / Parquet interaction table, columns named in config (`data.columns`, `data.item_columns`)."""

from __future__ import annotations

from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ...config.data import TableSource
from ..errors import DataError
from ..schema import INTERACTIONS, ITEMS, SourceData
from ..textio import check_readable
from .common import ReadContext, read_delimited


def _load(path: str, src: TableSource, ctx: ReadContext, types: dict[str, pa.DataType],
          check: Callable[[pa.Table, Callable[[int], int]], pa.Table] | None = None) -> pa.Table:
    """The file as a table; `check(table, line_of)` builds and validates the rows knowing their lines (Parquet:
    row numbers)."""
    check_readable(path)
    if path.endswith(".parquet") or path.endswith(".pq"):
        try:
            t = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"cannot read Parquet: {exc}", path) from None
        for col, typ in types.items():
            if col not in t.column_names:
                raise DataError(f"column {col!r} not found (columns: {', '.join(t.column_names)})", path)
            try:
                t = t.set_column(t.schema.get_field_index(col), col, pc.cast(t[col], typ))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DataError(f"column {col!r} cannot be read as {typ}: {exc}", path) from None
        return check(t, lambda row: row + 1) if check is not None else t
    delim = "\t" if path.endswith((".tsv", ".tsv.gz")) and src.delimiter == "," else src.delimiter
    return read_delimited(path, ctx.errors, delimiter=delim, types=types, check=check)


def _timestamps(col: pa.ChunkedArray, unit: str, path: str) -> pa.ChunkedArray:
    if unit == "iso":
        try:
            return pc.cast(pc.cast(pc.cast(col, pa.string()), pa.timestamp("s")), pa.int64())
        except pa.ArrowInvalid as exc:
            raise DataError(f"timestamp column is not ISO dates: {exc}", path) from None
    ts = pc.cast(col, pa.int64())
    return pc.divide(ts, 1000) if unit == "ms" else ts


def read(src: TableSource, ctx: ReadContext) -> SourceData:
    c = src.columns
    types: dict[str, pa.DataType] = {c.user_id: pa.string(), c.item_id: pa.string()}
    if c.rating:
        types[c.rating] = pa.float32()
    if c.timestamp and src.timestamp_unit != "iso":
        types[c.timestamp] = pa.int64()

    def canonical(t: pa.Table, line_of: Callable[[int], int]) -> pa.Table:
        for key, col in (("columns.timestamp", c.timestamp), ("columns.review", c.review)):
            if col and col not in t.column_names:
                raise DataError(f"column {col!r} (data.{key}) not found (columns: {', '.join(t.column_names)})",
                                src.interactions)
        n = t.num_rows
        inter = pa.table({
            "user_id": pc.cast(t[c.user_id], pa.string()), "item_id": pc.cast(t[c.item_id], pa.string()),
            "rating": t[c.rating] if c.rating else pa.nulls(n, pa.float32()),
            "timestamp": _timestamps(t[c.timestamp], src.timestamp_unit, src.interactions) if c.timestamp
            else pa.nulls(n, pa.int64()),
            "review": pc.cast(t[c.review], pa.string()) if c.review else pa.nulls(n, pa.string()),
            "split": pa.nulls(n, pa.string()),
        }, schema=INTERACTIONS)
        return ctx.check_table(src.interactions, inter, line_of)

    inter = _load(src.interactions, src, ctx, types, check=canonical)
    if ctx.prefilter:
        inter = ctx.prefilter(inter)
    files, items = [src.interactions], None
    if src.items:
        ic = src.item_columns
        it = _load(src.items, src, ctx, {ic.item_id: pa.string()})
        m = it.num_rows

        def col(name: str | None) -> pa.ChunkedArray | pa.Array:
            if name is None:
                return pa.nulls(m, pa.string())
            if name not in it.column_names:
                raise DataError(f"item column {name!r} not found (columns: {', '.join(it.column_names)})", src.items)
            return pc.cast(it[name], pa.string())

        cats = col(ic.categories)
        cats = pc.split_pattern(cats, src.categories_separator) if ic.categories else pa.nulls(m, pa.list_(pa.string()))
        items = pa.table({"item_id": col(ic.item_id), "title": col(ic.title), "description": col(ic.description),
                          "categories": cats, "brand": col(ic.brand), "city": pa.nulls(m, pa.string()),
                          "extra": pa.nulls(m, pa.string())}, schema=ITEMS)
        files.append(src.items)
    return SourceData(interactions=inter, items=items, files=files,
                      timestamps="epoch" if c.timestamp else "none")
