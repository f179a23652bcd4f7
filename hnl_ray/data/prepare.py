"""Source files -> the prepared tables (train/valid/test with contiguous ids, items, users) and their stats.
The `prepare` stage (hnl_ray/stages/prepare.py) writes them and decides when to re-run.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..arrays import unique, unique_inverse
from .. import manifest
from ..config import Config
from .errors import DataError, LineErrors
from .filters import FilterLog, RatingDatePrefilter, codes, dedup_mask, k_core
from .readers import ReadContext, read_source
from .schema import ITEMS, USERS, SourceData, empty_items
from .splits import NAMES, TEST, TRAIN, VALID, carve_valid, leave_one_out, random_split, temporal_split
from .stats import dataset_stats

log = logging.getLogger(__name__)

def config_part(cfg: Config) -> dict:
    return {"data": cfg.data.model_dump(mode="json"), "filters": cfg.filters.model_dump(mode="json"),
            "split": cfg.split.model_dump(mode="json"), "seed": cfg.seed}


def _signature(path: str) -> list:
    if os.path.isdir(path):
        return sorted([name, *_signature(os.path.join(path, name))[1:]] for name in os.listdir(path)
                      if not name.startswith("."))
    if os.path.exists(path):
        st = os.stat(path)
        return [path, st.st_size, int(st.st_mtime)]
    return [path, "missing"]


def input_signature(cfg: Config) -> dict[str, str]:
    """Fingerprints of the source files (size + mtime), so an edited source re-runs prepare."""
    fields = ("reviews", "meta", "business", "path", "interactions", "items")
    sig = {f: manifest.digest(_signature(getattr(cfg.data, f))) for f in fields
           if isinstance(getattr(cfg.data, f, None), str)}
    return sig


def build(cfg: Config, timings: manifest.Timings) -> tuple[dict[str, pa.Table], dict, list]:
    """Read, filter, split and index the source: (tables by name, stats, the source files read)."""
    errors = LineErrors(cfg.data.on_error)
    pre = RatingDatePrefilter(cfg.filters)
    ctx = ReadContext(errors=errors, keep_reviews=cfg.data.keep_reviews, max_review_chars=cfg.data.max_review_chars,
                      prefilter=pre if pre.active else None, time_range=cfg.data.time_range())
    with timings("read"):
        src = read_source(cfg.data, ctx, cfg.seed)
    _check_feasible(cfg, src)
    if pre.active and not pre.read and src.interactions.num_rows:
        src.interactions = pre(src.interactions)  # readers of small formats filter after reading
    if cfg.filters.min_rating is not None and pre.read and not pre.rated:
        raise DataError(f"filters.min_rating is set but the {cfg.data.format} source has no ratings; "
                        "set it to null")
    with timings("filter_split_index"):
        tables, stats = _process(cfg, src, pre, errors)
    return tables, stats, src.files


def _check_feasible(cfg: Config, src: SourceData) -> None:
    fmt = cfg.data.format
    if (cfg.filters.date_from or cfg.filters.date_to) and src.timestamps != "epoch":
        raise DataError(f"filters.date_from/date_to need real timestamps; the {fmt} source has "
                        f"{'only sequence positions' if src.timestamps == 'ordinal' else 'none'}")
    if cfg.split.method in ("temporal", "loo") and src.timestamps == "none":
        raise DataError(f"split.method: {cfg.split.method} needs timestamps or an order; the {fmt} source has "
                        "neither (use random, or given when the source has its own split)")
    has_split = src.interactions["split"].null_count < src.interactions.num_rows
    if cfg.split.method == "given" and not has_split:
        raise DataError(f"split.method: given needs a source that carries its own split (lightgcn, recbole "
                        f"train/valid/test files); the {fmt} source has none")


def _process(cfg: Config, src: SourceData, pre: RatingDatePrefilter, errors: LineErrors
             ) -> tuple[dict[str, pa.Table], dict]:
    flog = FilterLog()
    inter = src.interactions
    if pre.active:
        pre.log_into(flog)
    elif inter.num_rows == 0:
        raise DataError(f"the {cfg.data.format} source produced no interactions"
                        f"{f' ({errors.total} malformed lines skipped)' if errors.total else ''}")
    u, user_dict = codes(inter["user_id"])
    i, item_dict = codes(inter["item_id"])
    ts = inter["timestamp"].to_numpy(zero_copy_only=False) if inter["timestamp"].null_count == 0 else None
    order_key = ts.astype(np.int64) if ts is not None else np.arange(len(u))
    keep = np.ones(len(u), dtype=bool)
    if cfg.filters.dedup != "none":
        keep = dedup_mask(u, i, order_key, cfg.filters.dedup)
        flog.record("de-duplication", "filters.dedup", len(u), int(keep.sum()), f"keep {cfg.filters.dedup}")
    rounds = 0
    kc = cfg.filters.k_core
    if kc.user > 1 or kc.item > 1:
        idx = np.nonzero(keep)[0]
        mask, rounds = k_core(u[idx], i[idx], kc.user, kc.item, kc.max_rounds)
        before = len(idx)
        keep[idx[~mask]] = False
        flog.record("k-core", "filters.k_core", before, int(keep.sum()),
                    f"users >= {kc.user}, items >= {kc.item}, {rounds} rounds")
    rows = np.nonzero(keep)[0]
    inter = inter.take(pa.array(rows))
    u, i, order_key = u[rows], i[rows], order_key[rows]
    rng = np.random.default_rng(cfg.seed)
    counts: dict[str, int] = {}
    sp = cfg.split
    if sp.method == "random":
        label = random_split(u, sp.ratios, rng)
    elif sp.method == "temporal":
        label = temporal_split(u, order_key, sp.ratios)
    elif sp.method == "loo":
        label = leave_one_out(u, order_key)
    else:
        label, counts = _given(cfg, src, inter, u, i, rng)
    # Contiguous ids over the users and items that remain, in raw-id order.
    keep_rows = label >= 0
    if not keep_rows.all():
        inter, u, i, label = inter.filter(pa.array(keep_rows)), u[keep_rows], i[keep_rows], label[keep_rows]
    uu, u_new = unique_inverse(u)
    iu, i_new = unique_inverse(i)
    user_raw = user_dict.take(pa.array(uu))
    item_raw = item_dict.take(pa.array(iu))
    uorder = np.argsort(np.array(user_raw.to_pylist(), dtype=object), kind="stable")
    iorder = np.argsort(np.array(item_raw.to_pylist(), dtype=object), kind="stable")
    urank = np.empty_like(uorder)
    urank[uorder] = np.arange(len(uorder))
    irank = np.empty_like(iorder)
    irank[iorder] = np.arange(len(iorder))
    user_idx, item_idx = urank[u_new].astype(np.int32), irank[i_new].astype(np.int32)
    user_raw, item_raw = user_raw.take(pa.array(uorder)), item_raw.take(pa.array(iorder))

    base = pa.table({"user_idx": user_idx, "item_idx": item_idx, "rating": inter["rating"],
                     "timestamp": inter["timestamp"], "review": inter["review"]})
    tables = {}
    for k, name in enumerate(NAMES):
        part = base.filter(pa.array(label == k))
        order = pc.sort_indices(part, [("user_idx", "ascending"), ("timestamp", "ascending")])
        tables[name] = part.take(order)
    items, item_counts = _items(src.items, item_raw)
    tables["items"] = items
    tables["users"] = _users(src.users, user_raw)

    stats = dataset_stats(user_idx, item_idx, label, len(user_raw), len(item_raw))
    train_items = np.zeros(len(item_raw), dtype=bool)
    train_items[item_idx[label == TRAIN]] = True
    stats.update({
        "dataset": cfg.name,
        "source_format": cfg.data.format,
        "split_method": sp.method,
        "timestamps": src.timestamps,
        "filters": flog.steps,
        "k_core_rounds": rounds,
        "malformed_lines_skipped": errors.total,
        "malformed_lines_by_file": errors.skipped,
        "malformed_examples": errors.examples,
        "repeat_interactions": int(len(u) - len(unique(u.astype(np.int64) * (int(i.max()) + 1) + i)))
        if len(u) else 0,
        "items_not_in_train": int((~train_items).sum()),
        **item_counts,
        **counts,
        **src.counts,
    })
    return tables, stats


def _given(cfg: Config, src: SourceData, inter: pa.Table, u: np.ndarray, i: np.ndarray,
           rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    label = pc.fill_null(pc.index_in(inter["split"], value_set=pa.array(NAMES)), -1)
    label = label.to_numpy().astype(np.int8) if isinstance(label, pa.Array) else \
        label.combine_chunks().to_numpy().astype(np.int8)
    counts: dict[str, int] = {}
    if (label == -1).any():
        raise DataError("split.method: given, but some interactions carry no split label")
    if not (label == VALID).any() and cfg.split.valid_ratio > 0:
        label, back = carve_valid(u, i, label, cfg.split.valid_ratio, rng)
        counts["valid_carved_from_train"] = int((label == VALID).sum())
        counts["valid_rows_kept_in_train_to_avoid_cold_items"] = back
    train_u = np.zeros(int(u.max()) + 1, dtype=bool)
    train_i = np.zeros(int(i.max()) + 1, dtype=bool)
    train_u[u[label == TRAIN]] = True
    train_i[i[label == TRAIN]] = True
    for k in (VALID, TEST):
        name = NAMES[k]
        rows = label == k
        cold = rows & ~(train_u[u] & train_i[i])
        n_cold = int(cold.sum())
        if not n_cold:
            continue
        n_cu = len(unique(u[cold & ~train_u[u]]))
        n_ci = len(unique(i[cold & ~train_i[i]]))
        where = src.split_files.get(name, f"the {name} split")
        if cfg.split.cold_start == "error":
            ex = inter["item_id"][int(np.nonzero(cold)[0][0])].as_py()
            raise DataError(f"{n_cold} {name} interactions have ids never seen in train ({n_cu} users, {n_ci} "
                            f"items; e.g. item {ex!r}); set split.cold_start to drop or keep them (counted)", where)
        if cfg.split.cold_start == "drop":
            label[cold] = -1
        counts[f"cold_start_{cfg.split.cold_start}_{name}"] = n_cold
    return label, counts


def _align(meta: pa.Table, key: str, raw: pa.Array, idx_name: str) -> pa.Table:
    """Rows of `meta` aligned to the contiguous ids (first row wins per id; null rows where an id has none)."""
    pos = pc.index_in(raw, value_set=meta[key].combine_chunks())
    aligned = meta.take(pos)
    aligned = aligned.set_column(aligned.schema.get_field_index(key), key, raw)
    return aligned.add_column(0, idx_name, pa.array(np.arange(len(raw), dtype=np.int32)))


def _items(items: pa.Table | None, item_raw: pa.Array) -> tuple[pa.Table, dict]:
    meta = items if items is not None and items.num_rows else empty_items(pa.array([], pa.string()))
    joined = _align(meta.select(ITEMS.names), "item_id", item_raw, "item_idx")
    no_meta = int(pc.sum(pc.and_(pc.is_null(joined["title"]), pc.is_null(joined["description"]))).as_py() or 0)
    return joined, {"items_without_metadata": no_meta, "items_without_title": int(joined["title"].null_count)}


def _users(users: pa.Table | None, user_raw: pa.Array) -> pa.Table:
    meta = users if users is not None and users.num_rows else USERS.empty_table()
    return _align(meta.select(USERS.names), "user_id", user_raw, "user_idx")
