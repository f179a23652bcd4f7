"""MovieLens: 100k (`u.data`, `u.item`, `u.genre`), 1M (`ratings.dat`, `movies.dat`, `users.dat`, `::`-separated,
Latin-1) and the latest releases (`ratings.csv`, `movies.csv`)."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc

from ...config.data import MovieLensSource
from ..errors import DataError
from ..schema import INTERACTIONS, ITEMS, USERS, SourceData, TableBuilder
from ..textio import iter_lines
from .common import ReadContext, dumps_extra, read_delimited

_GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                "War", "Western"]


def detect(folder: str) -> str:
    if not os.path.isdir(folder):
        raise DataError("MovieLens folder (data.path) does not exist or is not a folder", folder)
    for variant, marker in (("100k", "u.data"), ("1m", "ratings.dat"), ("latest", "ratings.csv")):
        if os.path.exists(os.path.join(folder, marker)):
            return variant
    raise DataError("no MovieLens ratings file found (expected u.data, ratings.dat or ratings.csv)", folder)


def read(src: MovieLensSource, ctx: ReadContext) -> SourceData:
    variant = detect(src.path) if src.variant == "auto" else src.variant
    return {"100k": _read_100k, "1m": _read_1m, "latest": _read_latest}[variant](src.path, ctx)


def _canonical(user, item, rating, ts, ctx: ReadContext) -> pa.Table:
    n = len(user)
    t = pa.table({
        "user_id": pc.cast(user, pa.string()), "item_id": pc.cast(item, pa.string()),
        "rating": pc.cast(rating, pa.float32()), "timestamp": pc.cast(ts, pa.int64()),
        "review": pa.nulls(n, pa.string()), "split": pa.nulls(n, pa.string()),
    }, schema=INTERACTIONS)
    return ctx.prefilter(t) if ctx.prefilter else t


def _read_100k(folder: str, ctx: ReadContext) -> SourceData:
    path = os.path.join(folder, "u.data")
    t = read_delimited(path, ctx.errors, delimiter="\t", names=["user", "item", "rating", "ts"],
                       types={"user": pa.int64(), "item": pa.int64(), "rating": pa.float32(), "ts": pa.int64()},
                       check=lambda t, line_of: ctx.check_table(path, t, line_of, "user", "item", "ts"))
    inter = _canonical(t["user"], t["item"], t["rating"], t["ts"], ctx)
    files, items = [path], None
    ipath = os.path.join(folder, "u.item")
    if os.path.exists(ipath):
        genres = _GENRES_100K
        gpath = os.path.join(folder, "u.genre")
        if os.path.exists(gpath):
            genres = [ln.split("|")[0] for _, ln in iter_lines(gpath, encoding="latin-1") if ln.strip()]
        b = TableBuilder(ITEMS)
        for n, line in iter_lines(ipath, encoding="latin-1"):
            if not line.strip():
                continue
            parts = line.split("|")
            if len(parts) < 5 + len(genres):
                ctx.errors.bad(ipath, n, f"expected {5 + len(genres)} '|'-separated fields, found {len(parts)}")
                continue
            flags = parts[5:5 + len(genres)]
            b.append(item_id=parts[0], title=parts[1] or None, description=None,
                     categories=[g for g, f in zip(genres, flags) if f == "1"] or None, brand=None, city=None,
                     extra=dumps_extra({"release_date": parts[2]}))
        items = b.table()
        files.append(ipath)
    return SourceData(interactions=inter, items=items, files=files)


def _read_1m(folder: str, ctx: ReadContext) -> SourceData:
    path = os.path.join(folder, "ratings.dat")
    b = TableBuilder(INTERACTIONS, on_batch=ctx.prefilter)
    for n, line in iter_lines(path, encoding="latin-1"):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("::")]
        if len(parts) != 4:
            ctx.errors.bad(path, n, f"expected 4 '::'-separated fields, found {len(parts)}")
            continue
        try:
            rating, ts = float(parts[2]), int(parts[3])
        except ValueError as exc:
            ctx.errors.bad(path, n, f"bad rating or timestamp: {exc}")
            continue
        if ctx.record_ok(path, n, parts[0], parts[1], ts):
            b.append(user_id=parts[0], item_id=parts[1], rating=rating, timestamp=ts)
    files, items, users = [path], None, None
    mpath = os.path.join(folder, "movies.dat")
    if os.path.exists(mpath):
        ib = TableBuilder(ITEMS)
        for n, line in iter_lines(mpath, encoding="latin-1"):
            if not line.strip():
                continue
            parts = line.split("::")
            if len(parts) != 3:
                ctx.errors.bad(mpath, n, f"expected 3 '::'-separated fields, found {len(parts)}")
                continue
            ib.append(item_id=parts[0], title=parts[1] or None, categories=parts[2].split("|") if parts[2] else None)
        items = ib.table()
        files.append(mpath)
    upath = os.path.join(folder, "users.dat")
    if os.path.exists(upath):
        ub = TableBuilder(USERS)
        for n, line in iter_lines(upath, encoding="latin-1"):
            parts = line.split("::")
            if len(parts) != 5:
                if line.strip():
                    ctx.errors.bad(upath, n, f"expected 5 '::'-separated fields, found {len(parts)}")
                continue
            ub.append(user_id=parts[0], extra=dumps_extra({"gender": parts[1], "age": parts[2],
                                                           "occupation": parts[3]}))
        users = ub.table()
        files.append(upath)
    return SourceData(interactions=b.table(), items=items, users=users, files=files)


def _read_latest(folder: str, ctx: ReadContext) -> SourceData:
    path = os.path.join(folder, "ratings.csv")
    t = read_delimited(path, ctx.errors, types={"userId": pa.int64(), "movieId": pa.int64(),
                                                 "rating": pa.float32(), "timestamp": pa.int64()},
                       check=lambda t, line_of: ctx.check_table(path, t, line_of, "userId", "movieId"))
    inter = _canonical(t["userId"], t["movieId"], t["rating"], t["timestamp"], ctx)
    files, items = [path], None
    mpath = os.path.join(folder, "movies.csv")
    if os.path.exists(mpath):
        m = read_delimited(mpath, ctx.errors)
        genres = [None if g in (None, "", "(no genres listed)") else g.split("|")
                  for g in m["genres"].to_pylist()]
        n = m.num_rows
        items = pa.table({"item_id": m["movieId"], "title": m["title"], "description": pa.nulls(n, pa.string()),
                          "categories": pa.array(genres, pa.list_(pa.string())), "brand": pa.nulls(n, pa.string()),
                          "city": pa.nulls(n, pa.string()), "extra": pa.nulls(n, pa.string())}, schema=ITEMS)
        files.append(mpath)
    return SourceData(interactions=inter, items=items, files=files)
