"""Errors of the data layer: each names the file, and the line where there is one."""

from __future__ import annotations

from ..errors import HnlRayError

class DataError(HnlRayError, ValueError):
    """Bad input data. The message names the file (and line) and what is wrong."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path, self.line = path, line


class LineErrors:
    """Applies `on_error`: raise on the first malformed line, or skip it and count it per file."""

    def __init__(self, policy: str = "raise", max_examples: int = 5):
        self.policy = policy
        self.skipped: dict[str, int] = {}
        self.examples: list[str] = []
        self.max_examples = max_examples

    def bad(self, path: str, line: int, why: str) -> None:
        if self.policy == "raise":
            raise DataError(f"malformed line: {why} (set data.on_error: skip to skip and count such lines)",
                            path, line)
        self.skipped[path] = self.skipped.get(path, 0) + 1
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{path}:{line}: {why}")

    @property
    def total(self) -> int:
        return sum(self.skipped.values())
