"""Amazon reviews: 2014 and 2018 (McAuley lab) and 2023 (Hou et al.), JSON lines, gzipped or not.

2014/2018 reviews: reviewerID, asin, overall, unixReviewTime, reviewText, summary.
2023 reviews: user_id, parent_asin (items are merged on the parent), rating, timestamp (milliseconds), title, text.
Meta 2014 lines are Python literals (`{'asin': ...}`), 2018/2023 JSON; both parse here.
"""

from __future__ import annotations

import re

import pyarrow as pa

from ...config.data import AmazonSource
from ..schema import INTERACTIONS, ITEMS, SourceData, TableBuilder
from .common import (ReadContext, clean_text, dumps_extra, iter_json_lines, missing_fields, none_if_empty,
                     require_file)

_ASIN = re.compile(r"""['"](?:parent_asin|asin)['"]\s*:\s*['"]([^'"]+)['"]""")


def read(src: AmazonSource, ctx: ReadContext) -> SourceData:
    path = require_file(src.reviews, "Amazon reviews file (data.reviews)")
    modern = src.version == "2023"
    req = ("user_id", "rating", "timestamp") if modern else ("reviewerID", "asin", "overall")
    b = TableBuilder(INTERACTIONS, on_batch=ctx.prefilter)
    for n, r in iter_json_lines(path, ctx.errors):
        miss = missing_fields(r, req)
        item = (r.get("parent_asin") or r.get("asin")) if modern else r.get("asin")
        if modern and not item:
            miss.append("parent_asin")
        if miss:
            ctx.errors.bad(path, n, f"missing required field(s): {', '.join(miss)}")
            continue
        try:
            if modern:
                rating, ts = float(r["rating"]), int(r["timestamp"]) // 1000
                review = ctx.review(r.get("title"), r.get("text"))
            else:
                rating = float(r["overall"])
                ts = int(r["unixReviewTime"]) if r.get("unixReviewTime") is not None else None
                review = ctx.review(r.get("summary"), r.get("reviewText"))
        except (TypeError, ValueError) as exc:
            ctx.errors.bad(path, n, f"bad rating or timestamp: {exc}")
            continue
        user = str(r["user_id"] if modern else r["reviewerID"])
        if ctx.record_ok(path, n, user, item, ts):
            b.append(user_id=user, item_id=str(item), rating=rating, timestamp=ts, review=review)
    inter = b.table()
    files = [path]
    items = None
    if src.meta:
        meta = require_file(src.meta, "Amazon metadata file (data.meta)")
        items = read_meta(meta, set(inter.column("item_id").unique().to_pylist()), ctx, modern)
        files.append(meta)
    return SourceData(interactions=inter, items=items, files=files)


def read_meta(path: str, wanted: set[str], ctx: ReadContext, modern: bool) -> pa.Table:
    b = TableBuilder(ITEMS)
    seen: set[str] = set()
    for n, m in _iter_wanted(path, wanted, ctx):
        asin = str(m.get("parent_asin") or m.get("asin") or "")
        if not asin:
            ctx.errors.bad(path, n, "metadata record without asin / parent_asin")
            continue
        if asin in seen:
            continue
        seen.add(asin)
        if modern:
            cats = [clean_text(c) for c in (m.get("categories") or []) if c]
            if m.get("main_category") and m["main_category"] not in cats:
                cats.insert(0, clean_text(m["main_category"]))
            details = m.get("details") or {}
            brand = m.get("store") or (details.get("Brand") if isinstance(details, dict) else None)
            desc = clean_text((m.get("features") or []) + (m.get("description") or []))
            extra = {"price": m.get("price"), "average_rating": m.get("average_rating")}
        else:
            raw_cats = m.get("categories") or m.get("category") or []
            # 2014: list of category paths; 2018: one flat path.
            flat = [c for path_ in raw_cats for c in (path_ if isinstance(path_, list) else [path_])]
            cats = list(dict.fromkeys(clean_text(c) for c in flat if c))
            brand = m.get("brand")
            desc = clean_text((m.get("feature") or []) + [m.get("description") or ""])
            extra = {"price": m.get("price"), "main_cat": m.get("main_cat")}
        b.append(item_id=asin, title=none_if_empty(clean_text(m.get("title"))), description=none_if_empty(desc),
                 categories=cats or None, brand=none_if_empty(clean_text(brand)), city=None,
                 extra=dumps_extra(extra))
    return b.table()


def _iter_wanted(path: str, wanted: set[str], ctx: ReadContext):
    """Parse only the lines whose asin is wanted: literal_eval of the 2014 meta is slow, a regex is not."""

    def keep(line: str) -> bool:
        m = _ASIN.search(line)
        return m is None or m.group(1) in wanted

    for n, obj in iter_json_lines(path, ctx.errors, literal_fallback=True, keep_line=keep):
        key = str(obj.get("parent_asin") or obj.get("asin") or "")
        if not key or key in wanted:
            yield n, obj
