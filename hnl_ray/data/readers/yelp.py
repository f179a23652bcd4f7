"""Yelp academic dataset: `review.json` (user_id, business_id, stars, date, text) and `business.json` (name, city,
state, categories as one comma-separated string)."""

from __future__ import annotations

import pyarrow as pa

from ...config.data import YelpSource
from ..schema import INTERACTIONS, ITEMS, SourceData, TableBuilder
from .common import (ReadContext, clean_text, date_to_epoch, dumps_extra, iter_json_lines, missing_fields,
                     none_if_empty, require_file)

_REQUIRED = ("user_id", "business_id", "stars", "date")


def read(src: YelpSource, ctx: ReadContext) -> SourceData:
    path = require_file(src.reviews, "Yelp review file (data.reviews)")
    b = TableBuilder(INTERACTIONS, on_batch=ctx.prefilter)
    for n, r in iter_json_lines(path, ctx.errors):
        miss = missing_fields(r, _REQUIRED)
        if miss:
            ctx.errors.bad(path, n, f"missing required field(s): {', '.join(miss)}")
            continue
        try:
            ts = date_to_epoch(str(r["date"])[:19], "%Y-%m-%d %H:%M:%S" if len(str(r["date"])) > 10 else "%Y-%m-%d")
            stars = float(r["stars"])
        except (TypeError, ValueError) as exc:
            ctx.errors.bad(path, n, f"bad stars or date: {exc}")
            continue
        if ctx.record_ok(path, n, r["user_id"], r["business_id"], ts):
            b.append(user_id=str(r["user_id"]), item_id=str(r["business_id"]), rating=stars, timestamp=ts,
                     review=ctx.review(r.get("text")))
    inter = b.table()
    files, items = [path], None
    if src.business:
        bpath = require_file(src.business, "Yelp business file (data.business)")
        items = _read_business(bpath, set(inter.column("item_id").unique().to_pylist()), ctx)
        files.append(bpath)
    return SourceData(interactions=inter, items=items, files=files)


def _read_business(path: str, wanted: set[str], ctx: ReadContext) -> pa.Table:
    b = TableBuilder(ITEMS)
    for n, r in iter_json_lines(path, ctx.errors):
        bid = r.get("business_id")
        if not bid:
            ctx.errors.bad(path, n, "missing required field(s): business_id")
            continue
        if bid not in wanted:
            continue
        cats = [c.strip() for c in (r.get("categories") or "").split(",") if c.strip()]
        attrs = r.get("attributes") or {}
        desc = "; ".join(f"{k}: {v}" for k, v in attrs.items() if v not in (None, "None", "False")) \
            if isinstance(attrs, dict) else ""
        b.append(item_id=str(bid), title=none_if_empty(clean_text(r.get("name"))), description=none_if_empty(desc),
                 categories=cats or None, brand=None, city=none_if_empty(clean_text(r.get("city"))),
                 extra=dumps_extra({"state": r.get("state"), "stars": r.get("stars"),
                                    "review_count": r.get("review_count")}))
    return b.table()
