"""Opening source files: plain or gzip (by magic bytes), with clear errors for missing, unreadable or truncated
files, and line numbers for every record (a line that does not decode is reported at its own line)."""

from __future__ import annotations

import gzip
import os
import zlib
from typing import TYPE_CHECKING, BinaryIO, Iterator

from .errors import DataError

if TYPE_CHECKING:
    from .errors import LineErrors

_GZIP_MAGIC = b"\x1f\x8b"


def check_readable(path: str, what: str = "file") -> str:
    if not os.path.exists(path):
        raise DataError(f"{what} does not exist", path)
    if os.path.isdir(path):
        raise DataError(f"expected a {what}, found a directory", path)
    if not os.access(path, os.R_OK):
        raise DataError(f"{what} is not readable (permissions)", path)
    return path


def is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def open_binary(path: str) -> BinaryIO:
    """The file's bytes, gunzipped when its content (not its name) is gzip."""
    check_readable(path)
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")  # type: ignore[return-value]


def iter_lines(path: str, encoding: str = "utf-8", errors: str = "strict",
               on_bad: "LineErrors | None" = None) -> Iterator[tuple[int, str]]:
    """Yield (line_number, line without newline) from a plain or gzipped text file, 1-based. A line that does not
    decode raises at its own line number, or goes to `on_bad` (data.on_error: skip counts it and goes on)."""
    n = 0
    try:
        with open_binary(path) as raw:
            for n, data in enumerate(raw, 1):
                try:
                    line = data.decode(encoding, errors)
                except UnicodeDecodeError as exc:
                    why = f"not valid {encoding} text ({exc.reason} at column {exc.start + 1})"
                    if on_bad is None:
                        raise DataError(why, path, n) from None
                    on_bad.bad(path, n, why)
                    continue
                yield n, line.rstrip("\r\n")
    except EOFError:
        raise DataError(f"gzip stream is truncated after line {n} (the file was cut short; re-download it)",
                        path) from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"corrupt gzip data after line {n}: {exc}", path) from None


def first_undecodable_line(path: str, encoding: str = "utf-8") -> tuple[int, str] | None:
    """(line number, reason) of the first line that is not valid `encoding`, for messages of fast readers that
    only say "invalid UTF8" (pyarrow's CSV reader)."""
    try:
        for _ in iter_lines(path, encoding):
            pass
    except DataError as exc:
        if exc.line is not None:
            return exc.line, str(exc).split(": ", 1)[-1]
    return None
