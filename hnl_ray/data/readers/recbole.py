"""RecBole atomic files. Interactions: `NAME.inter`, or `NAME.train.inter` / `.valid.inter` / `.test.inter`, with
`field:type` headers; either the general form (`user_id`, `item_id`, optional `rating`, `timestamp`) or the
sequential form (`user_id`, `item_id_list`, `item_id`: the history and the next item). Items: `NAME.item`, or
UniSRec's `NAME.text` (`item_id`, `text`). `NAME.user2index` / `NAME.item2index` map indices back to raw ids."""

from __future__ import annotations

import os

import pyarrow as pa

from ...config.data import RecBoleSource
from ..errors import DataError
from ..schema import INTERACTIONS, ITEMS, SourceData, TableBuilder
from ..textio import iter_lines
from .common import ReadContext, dumps_extra

_SPLITS = ("train", "valid", "test")


def _header(path: str, line: str) -> dict[str, int]:
    cols = {}
    for idx, field in enumerate(line.split("\t")):
        name, _, _typ = field.partition(":")
        cols[name.strip()] = idx
    for need in ("user_id", "item_id"):
        if need not in cols:
            raise DataError(f"header lacks the `{need}` field (found: {', '.join(cols)})", path, 1)
    return cols


def _index(path: str, ctx: ReadContext) -> dict[str, str] | None:
    """`raw<TAB>index` file -> {index: raw}."""
    if not os.path.exists(path):
        return None
    out = {}
    for n, line in iter_lines(path, on_bad=ctx.errors):
        parts = line.split("\t")
        if len(parts) != 2:
            if line.strip():
                ctx.errors.bad(path, n, "expected `raw_id<TAB>index`")
            continue
        out[parts[1].strip()] = parts[0].strip()
    return out


def _read_inter(path: str, ctx: ReadContext) -> tuple[list[tuple[int, list[str]]], dict[str, int]]:
    """(rows as (line number, fields), header name -> column)."""
    rows, cols = [], None
    for n, line in iter_lines(path, on_bad=ctx.errors):
        if cols is None:
            cols = _header(path, line)
            continue
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(cols):
            ctx.errors.bad(path, n, f"expected {len(cols)} tab-separated fields, found {len(fields)}")
            continue
        rows.append((n, fields))
    if cols is None:
        raise DataError("empty file (no header)", path)
    return rows, cols


def read(src: RecBoleSource, ctx: ReadContext) -> SourceData:
    base = os.path.join(src.path, src.name)
    if not os.path.isdir(src.path):
        raise DataError("RecBole folder (data.path) does not exist or is not a folder", src.path)
    split_paths = {s: f"{base}.{s}.inter" for s in _SPLITS if os.path.exists(f"{base}.{s}.inter")}
    single = f"{base}.inter"
    if not split_paths and not os.path.exists(single):
        raise DataError(f"no {src.name}.inter or {src.name}.train.inter found", src.path)
    uidx = _index(f"{base}.user2index", ctx)
    iidx = _index(f"{base}.item2index", ctx)
    files = [p for p in (f"{base}.user2index", f"{base}.item2index") if os.path.exists(p)]

    def raw(value: str, table: dict[str, str] | None, path: str, n: int, what: str) -> str | None:
        if table is None:
            return value
        if value not in table:
            ctx.errors.bad(path, n, f"{what} index {value!r} is not in {src.name}.{what}2index")
            return None
        return table[value]

    paths = split_paths or {"": single}
    parsed = {s: _read_inter(p, ctx) for s, p in paths.items()}
    files += list(paths.values())
    sequential = any("item_id_list" in cols for _, cols in parsed.values())
    b = TableBuilder(INTERACTIONS, on_batch=ctx.prefilter)
    timestamps = "none"
    if sequential:
        timestamps = "ordinal"
        # Rebuild each user's full sequence: the longest history + its target; a line with history length L
        # puts position L in its file's split, every other position is train.
        full: dict[str, list[str]] = {}
        marks: dict[str, dict[int, str]] = {}
        for split, (rows, cols) in parsed.items():
            path = paths[split]
            for n, f in rows:
                u = raw(f[cols["user_id"]].strip(), uidx, path, n, "user")
                seq = [raw(x, iidx, path, n, "item") for x in f[cols["item_id_list"]].split()]
                seq.append(raw(f[cols["item_id"]].strip(), iidx, path, n, "item"))
                if u is None or None in seq or not all(ctx.record_ok(path, n, u, x) for x in seq):
                    continue
                cur = full.get(u)
                if cur is not None and (seq[: len(cur)] != cur if len(seq) > len(cur) else cur[: len(seq)] != seq):
                    ctx.errors.bad(path, n, f"history of user {u} disagrees with another line")
                    continue
                if cur is None or len(seq) > len(cur):
                    full[u] = seq
                marks.setdefault(u, {})[len(seq) - 1] = split or "train"
        for u, seq in full.items():
            for pos, it in enumerate(seq):
                b.append(user_id=u, item_id=it, timestamp=pos,
                         split=marks[u].get(pos, "train") if split_paths else None)
    else:
        for split, (rows, cols) in parsed.items():
            path = paths[split]
            has_r, has_t = "rating" in cols, "timestamp" in cols
            if has_t:
                timestamps = "epoch"
            for n, f in rows:
                ru = raw(f[cols["user_id"]].strip(), uidx, path, n, "user")
                ri = raw(f[cols["item_id"]].strip(), iidx, path, n, "item")
                if ru is None or ri is None:
                    continue
                try:
                    rating = float(f[cols["rating"]]) if has_r else None
                    ts = int(float(f[cols["timestamp"]])) if has_t else None
                except ValueError as exc:
                    ctx.errors.bad(path, n, f"bad rating or timestamp: {exc}")
                    continue
                if ctx.record_ok(path, n, ru, ri, ts):
                    b.append(user_id=ru, item_id=ri, rating=rating, timestamp=ts, split=split or None)
    inter = b.table()
    items = _read_items(base, ctx, files)
    return SourceData(interactions=inter, items=items, files=files,
                      split_files={s: p for s, p in split_paths.items()}, timestamps=timestamps)


_ITEM_FIELDS = {"title": "title", "movie_title": "title", "text": "title", "description": "description",
                "categories": "categories", "genre": "categories", "class": "categories", "brand": "brand",
                "sales_type": "categories", "city": "city"}


def _read_items(base: str, ctx: ReadContext, files: list[str]) -> pa.Table | None:
    path = next((p for p in (f"{base}.item", f"{base}.text") if os.path.exists(p)), None)
    if path is None:
        return None
    files.append(path)
    b = TableBuilder(ITEMS)
    cols: dict[str, tuple[int, str]] | None = None
    for n, line in iter_lines(path, on_bad=ctx.errors):
        if cols is None:
            cols = {}
            for idx, field in enumerate(line.split("\t")):
                name, _, typ = field.partition(":")
                cols[name.strip()] = (idx, typ.strip())
            if "item_id" not in cols:
                raise DataError("header lacks the `item_id` field", path, 1)
            continue
        if not line.strip():
            continue
        f = line.split("\t")
        if len(f) != len(cols):
            ctx.errors.bad(path, n, f"expected {len(cols)} tab-separated fields, found {len(f)}")
            continue
        row: dict = {"item_id": f[cols["item_id"][0]].strip()}
        extra = {}
        for name, (idx, typ) in cols.items():
            if name == "item_id":
                continue
            value = f[idx].strip()
            target = _ITEM_FIELDS.get(name)
            if target == "categories":
                if value:
                    row.setdefault("categories", []).extend(value.split() if typ == "token_seq" else [value])
            elif target is not None and value:
                row[target] = value
            elif value:
                extra[name] = value
        row["extra"] = dumps_extra(extra)
        b.append(**row)
    return b.table()
