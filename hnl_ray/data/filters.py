"""Filters: rating threshold, date window, de-duplication, iterative k-core. Each records rows before and after,
and a filter that leaves nothing is an error that names it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config.data import FilterConfig
from .errors import DataError


@dataclass
class FilterLog:
    steps: list[dict] = field(default_factory=list)

    def record(self, name: str, key: str, before: int, after: int, detail: str = "") -> None:
        self.steps.append({"filter": name, "key": key, "before": before, "after": after, **(
            {"detail": detail} if detail else {})})
        if before > 0 and after == 0:
            raise DataError(f"filter {name} ({key}{': ' + detail if detail else ''}) removed every interaction "
                            f"(before: {before:,}, after: 0); relax it or check the input")


def _epoch(d: dt.date) -> int:
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc).timestamp())


class RatingDatePrefilter:
    """Rating and date filters applied batch by batch while a reader streams (so a large source never sits
    in memory unfiltered); counts accumulate for the filter log."""

    def __init__(self, cfg: FilterConfig):
        self.cfg = cfg
        self.read = self.after_rating = self.after_date = 0
        self.rated = 0  # rows that carried a rating at all

    @property
    def active(self) -> bool:
        return self.cfg.min_rating is not None or self.cfg.date_from is not None or self.cfg.date_to is not None

    def __call__(self, t: pa.Table) -> pa.Table:
        self.read += t.num_rows
        self.rated += t.num_rows - t["rating"].null_count
        if self.cfg.min_rating is not None:
            t = t.filter(pc.fill_null(pc.greater_equal(t["rating"], self.cfg.min_rating), False))
        self.after_rating += t.num_rows
        if self.cfg.date_from is not None:
            t = t.filter(pc.fill_null(pc.greater_equal(t["timestamp"], _epoch(self.cfg.date_from)), False))
        if self.cfg.date_to is not None:
            t = t.filter(pc.fill_null(pc.less(t["timestamp"], _epoch(self.cfg.date_to)), False))
        self.after_date += t.num_rows
        return t

    def log_into(self, log: FilterLog) -> None:
        if self.cfg.min_rating is not None:
            log.record("rating", "filters.min_rating", self.read, self.after_rating, f">= {self.cfg.min_rating}")
        if self.cfg.date_from is not None or self.cfg.date_to is not None:
            log.record("date window", "filters.date_from/date_to", self.after_rating, self.after_date,
                       f"[{self.cfg.date_from or '-inf'}, {self.cfg.date_to or '+inf'})")


def codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Integer codes (int64) and the dictionary of distinct values, for a string column."""
    enc = pc.dictionary_encode(column).combine_chunks() if isinstance(column, pa.ChunkedArray) else \
        pc.dictionary_encode(column)
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary


def dedup_mask(u: np.ndarray, i: np.ndarray, order_key: np.ndarray, keep: str) -> np.ndarray:
    """Boolean mask keeping one row per (u, i): the earliest (`first`) or latest (`last`) by order_key."""
    n_i = int(i.max()) + 1 if len(i) else 1
    pair = u * n_i + i
    rows = np.arange(len(u))
    key = order_key if keep == "first" else -order_key
    tiebreak = rows if keep == "first" else -rows
    order = np.lexsort((tiebreak, key, pair))
    sp = pair[order]
    first = np.ones(len(sp), dtype=bool)
    first[1:] = sp[1:] != sp[:-1]
    mask = np.zeros(len(u), dtype=bool)
    mask[order[first]] = True
    return mask


def k_core(u: np.ndarray, i: np.ndarray, user_k: int, item_k: int, max_rounds: int = 100
           ) -> tuple[np.ndarray, int]:
    """Iteratively drop users with < user_k and items with < item_k interactions until nothing changes.
    Returns the keep mask and the number of rounds run (the last round changes nothing)."""
    mask = np.ones(len(u), dtype=bool)
    if user_k <= 1 and item_k <= 1:
        return mask, 0
    nu = int(u.max()) + 1 if len(u) else 0
    ni = int(i.max()) + 1 if len(i) else 0
    for rnd in range(1, max_rounds + 1):
        ucnt = np.bincount(u[mask], minlength=nu)
        icnt = np.bincount(i[mask], minlength=ni)
        new = mask & (ucnt[u] >= user_k) & (icnt[i] >= item_k)
        if new.sum() == mask.sum():
            return mask, rnd
        mask = new
    raise DataError(f"k-core did not reach a fixed point in {max_rounds} rounds (filters.k_core.max_rounds)")
