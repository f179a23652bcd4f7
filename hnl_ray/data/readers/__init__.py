"""One reader per source format, each returning the canonical tables (see ..schema)."""

from __future__ import annotations

from typing import Callable

from ...config.data import SyntheticSource
from ..schema import SourceData
from . import amazon, lightgcn, movielens, p5, recbole, table, yelp
from .common import ReadContext

READERS: dict[str, Callable] = {
    "amazon": amazon.read,
    "yelp": yelp.read,
    "movielens": movielens.read,
    "lightgcn": lightgcn.read,
    "p5": p5.read,
    "recbole": recbole.read,
    "table": table.read,
}


def read_source(src, ctx: ReadContext, seed: int) -> SourceData:
    if isinstance(src, SyntheticSource):
        from ..synthetic import generate

        data = generate(src, seed)
        if ctx.prefilter is not None:
            data.interactions = ctx.prefilter(data.interactions)
        return data
    return READERS[src.format](src, ctx)


__all__ = ["READERS", "ReadContext", "read_source"]
