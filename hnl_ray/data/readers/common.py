"""Helpers shared by the readers: the read context, text cleaning, JSON-lines parsing with line numbers."""

from __future__ import annotations

import ast
import datetime as dt
import html
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import DataError, LineErrors
from ..textio import iter_lines


def default_time_range() -> tuple[int, int]:
    from ...config.data import SyntheticSource

    return SyntheticSource().time_range()


@dataclass
class ReadContext:
    """What every reader shares: the on_error policy, review options, the filter pushdown and the record checks
    (ids not empty, real timestamps inside `time_range`), applied here once for every format."""

    errors: LineErrors
    keep_reviews: bool = True
    max_review_chars: int = 600
    prefilter: Callable[[pa.Table], pa.Table] | None = None  # applied to each interaction batch as it is read
    time_range: tuple[int, int] | None = None  # [first, last] epoch seconds; None: the config defaults

    def __post_init__(self) -> None:
        if self.time_range is None:
            self.time_range = default_time_range()

    def _time_error(self, ts: int) -> str:
        lo, hi = self.time_range
        when = dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat() if -62e9 < ts < 253e9 else "?"
        return (f"timestamp {ts} ({when}) is outside {_day(lo)} .. {_day(hi)} "
                "(data.timestamp_min / data.timestamp_max)")

    def record_ok(self, path: str, line: int, user: Any, item: Any, ts: Any = None, real_time: bool = True) -> bool:
        """Check one record; a bad one raises (on_error: raise) or is counted and must be skipped (False)."""
        for what, v in (("user", user), ("item", item)):
            if v is None or not str(v).strip():
                self.errors.bad(path, line, f"empty {what} id")
                return False
        if real_time and ts is not None and not (self.time_range[0] <= ts <= self.time_range[1]):
            self.errors.bad(path, line, self._time_error(int(ts)))
            return False
        return True

    def check_table(self, path: str, table: pa.Table, line_of: Callable[[int], int], user: str = "user_id",
                    item: str = "item_id", ts: str | None = "timestamp") -> pa.Table:
        """The same checks, vectorised, for readers that parse a whole table at once; `line_of(row)` gives the
        file line of a row for the message."""
        bad = np.zeros(table.num_rows, dtype=bool)
        why: dict[int, str] = {}
        for what, col in (("user", user), ("item", item)):
            v = pc.cast(table[col], pa.string())
            empty = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(v)), 0), True)
            mask = np.asarray(empty.combine_chunks().to_numpy(zero_copy_only=False), dtype=bool)
            for r in np.flatnonzero(mask & ~bad):
                why[int(r)] = f"empty {what} id"
            bad |= mask
        if ts is not None and ts in table.column_names:
            t = table[ts].combine_chunks()
            out = pc.fill_null(pc.or_(pc.less(t, self.time_range[0]), pc.greater(t, self.time_range[1])), False)
            mask = np.asarray(out.to_numpy(zero_copy_only=False), dtype=bool)
            values = t.to_numpy(zero_copy_only=False)
            for r in np.flatnonzero(mask & ~bad):
                why[int(r)] = self._time_error(int(values[r]))
            bad |= mask
        if not bad.any():
            return table
        for r in sorted(why):
            self.errors.bad(path, line_of(r), why[r])
        return table.filter(pa.array(~bad))

    def review(self, *parts: Any) -> str | None:
        if not self.keep_reviews:
            return None
        text = " ".join(clean_text(p) for p in parts if p)
        return text[: self.max_review_chars] if text else None


_TAG = re.compile(r"<[^>]+>")
_WS = re.compile(r"\s+")


def clean_text(value: Any) -> str:
    """HTML-unescape, drop tags, collapse whitespace; lists are joined with spaces."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(clean_text(v) for v in value if v)
    text = html.unescape(str(value))
    text = _TAG.sub(" ", text)
    return _WS.sub(" ", text).strip()


def none_if_empty(s: str | None) -> str | None:
    return s if s else None


def resolve(folder: str, name: str) -> str:
    return name if os.path.isabs(name) else os.path.join(folder, name)


def iter_json_lines(path: str, errors: LineErrors, literal_fallback: bool = False,
                    keep_line: Callable[[str], bool] | None = None) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each JSON line. With `literal_fallback`, lines that are Python literals
    (the Amazon 2014 metadata quirk: single quotes, True/None) are parsed with `ast.literal_eval`.
    `keep_line` can reject a raw line cheaply before it is parsed."""
    for n, line in iter_lines(path, on_bad=errors):
        if not line.strip() or (keep_line is not None and not keep_line(line)):
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            if not literal_fallback:
                errors.bad(path, n, f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            try:
                obj = ast.literal_eval(line)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                errors.bad(path, n, "neither JSON nor a Python literal")
                continue
        if not isinstance(obj, dict):
            errors.bad(path, n, f"expected a JSON object, got {type(obj).__name__}")
            continue
        yield n, obj


def _day(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).date().isoformat()


def missing_fields(obj: dict, required: tuple[str, ...]) -> list[str]:
    return [k for k in required if obj.get(k) in (None, "")]


def to_float(value: Any) -> float:
    return float(value)


def date_to_epoch(text: str, fmt: str) -> int:
    return int(dt.datetime.strptime(text, fmt).replace(tzinfo=dt.timezone.utc).timestamp())


def dumps_extra(d: dict) -> str | None:
    d = {k: v for k, v in d.items() if v not in (None, "", [], {})}
    return json.dumps(d, ensure_ascii=False) if d else None


def require_file(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise DataError(f"{what} not found", path)
    return path


def read_delimited(path: str, errors: LineErrors, *, delimiter: str = ",", names: list[str] | None = None,
                   types: dict[str, pa.DataType] | None = None, encoding: str = "utf8",
                   check: Callable[[pa.Table, Callable[[int], int]], pa.Table] | None = None) -> pa.Table:
    """Read a CSV/TSV with pyarrow (fast; gzip by content, whatever the name), every column as text first, then
    convert the typed columns so that a bad value is reported with its file and line number (pyarrow alone does
    not say where). `check(table, line_of)` validates the rows with their line numbers (ReadContext.check_table).
    """
    import bisect

    import pyarrow.csv as pcsv

    from ..textio import check_readable, first_undecodable_line, is_gzip

    check_readable(path)
    source: Any = pa.input_stream(path, compression="gzip") if is_gzip(path) else pa.input_stream(path)

    def undecodable(exc: Exception) -> DataError:
        bad = first_undecodable_line(path, "utf-8" if encoding.replace("-", "") == "utf8" else encoding)
        if bad is None:
            return DataError(f"cannot parse as delimited text: {exc}", path)
        return DataError(f"{bad[1]}; re-encode the file as UTF-8", path, bad[0])
    skipped_lines: list[int] = []

    raised: list[DataError] = []

    def on_invalid(row: Any) -> str:
        # pyarrow swallows exceptions raised here: keep ours and ask pyarrow to stop.
        try:
            errors.bad(path, row.number, f"expected {row.expected_columns} columns, found {row.actual_columns}")
        except DataError as exc:
            raised.append(exc)
            return "error"
        skipped_lines.append(row.number)
        return "skip"

    header = 0 if names else 1
    read_opts = pcsv.ReadOptions(use_threads=False, column_names=names, encoding=encoding,
                                 block_size=1 << 24)
    try:
        table = pcsv.read_csv(
            source, read_options=read_opts,
            parse_options=pcsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid,
                                             newlines_in_values=False),
            convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in (names or [])} or None,
                                                strings_can_be_null=False, auto_dict_encode=False),
        )
    except (pa.ArrowInvalid, OSError, EOFError, UnicodeDecodeError) as exc:
        if raised:
            raise raised[0] from None
        if isinstance(exc, UnicodeDecodeError) or "UTF8" in str(exc) or "UTF-8" in str(exc):
            raise undecodable(exc) from None
        if is_gzip(path) and not isinstance(exc, pa.ArrowInvalid) or "gzip" in str(exc).lower():
            raise DataError(f"gzip data is truncated or corrupt ({exc}); re-download the file", path) from None
        raise DataError(f"cannot parse as delimited text: {exc}", path) from None
    if not names:  # header given: make every column text so the typed conversion below reports lines
        try:  # a header that is not UTF-8 fails here, when its names are decoded
            table = table.cast(pa.schema([(f.name, pa.string()) for f in table.schema]))
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise undecodable(exc) from None

    def line_of(row_idx: int) -> int:
        # Physical line = header + rows before it + malformed lines skipped before it (a small fixed point).
        skipped, base = sorted(skipped_lines), row_idx + 1 + header
        line = base
        while base + bisect.bisect_right(skipped, line) != line:
            line = base + bisect.bisect_right(skipped, line)
        return line

    keep = None
    for col, typ in (types or {}).items():
        if col not in table.column_names:
            raise DataError(f"column {col!r} not found (columns: {', '.join(table.column_names)})", path)
        try:
            converted = pc.cast(table[col], typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = table[col].to_pylist()
            caster = float if pa.types.is_floating(typ) else int
            out, bad = [], []
            for idx, v in enumerate(values):
                try:
                    out.append(caster(v) if v not in (None, "") else None)
                except ValueError:
                    errors.bad(path, line_of(idx), f"column {col!r}: cannot read {v!r} as {typ}")
                    out.append(None)
                    bad.append(idx)
            converted = pa.array(out, type=typ)
            if bad:
                mask = [True] * len(values)
                for idx in bad:
                    mask[idx] = False
                keep = mask if keep is None else [a and b for a, b in zip(keep, mask)]
        table = table.set_column(table.schema.get_field_index(col), col, converted)
    if keep is not None:
        kept = np.flatnonzero(keep)
        table = table.filter(pa.array(keep))
        inner = line_of
        line_of = lambda row: inner(int(kept[row]))  # noqa: E731 - rows renumbered by the filter
    return check(table, line_of) if check is not None else table
