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

import pyarrow as pa

from ..errors import DataError, LineErrors
from ..textio import iter_lines


@dataclass
class ReadContext:
    errors: LineErrors
    keep_reviews: bool = True
    max_review_chars: int = 600
    prefilter: Callable[[pa.Table], pa.Table] | None = None  # applied to each interaction batch as it is read

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
    for n, line in iter_lines(path):
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
                   types: dict[str, pa.DataType] | None = None, encoding: str = "utf8") -> pa.Table:
    """Read a CSV/TSV with pyarrow (fast, gzip by extension), every column as text first, then convert the typed
    columns so that a bad value is reported with its file and line number (pyarrow alone does not say where)."""
    import bisect

    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    from ..textio import check_readable

    check_readable(path)
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
            path, read_options=read_opts,
            parse_options=pcsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid,
                                             newlines_in_values=False),
            convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in (names or [])} or None,
                                                strings_can_be_null=False, auto_dict_encode=False),
        )
    except pa.ArrowInvalid as exc:
        if raised:
            raise raised[0] from None
        raise DataError(f"cannot parse as delimited text: {exc}", path) from None
    if not names:  # header given: make every column text so the typed conversion below reports lines
        table = table.cast(pa.schema([(f.name, pa.string()) for f in table.schema]))

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
        table = table.filter(pa.array(keep))
    return table
