"""Opening source files: plain or gzip (by magic bytes), with clear errors for missing, unreadable or truncated
files, and line numbers for every record."""

from __future__ import annotations

import gzip
import io
import os
import zlib
from typing import Iterator

from .errors import DataError

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


def iter_lines(path: str, encoding: str = "utf-8", errors: str = "strict") -> Iterator[tuple[int, str]]:
    """Yield (line_number, line without newline) from a plain or gzipped text file, 1-based."""
    check_readable(path)
    gz = is_gzip(path)
    raw: io.BufferedIOBase = gzip.open(path, "rb") if gz else open(path, "rb")  # type: ignore[assignment]
    n = 0
    try:
        with io.TextIOWrapper(raw, encoding=encoding, errors=errors, newline=None) as text:
            for n, line in enumerate(text, 1):
                yield n, line.rstrip("\n")
    except EOFError:
        raise DataError(f"gzip stream is truncated after line {n} (the file was cut short; re-download it)",
                        path) from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"corrupt gzip data after line {n}: {exc}", path) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid {encoding} text: {exc.reason} at byte {exc.start}", path, n + 1) from None
