"""The run directory: a local path, any pyarrow filesystem URI (s3://, gs://, ...) or any pyarrow filesystem
object (`RunDir(root, fs=...)`, e.g. fsspec's through `pyarrow.fs.PyFileSystem(FSSpecHandler(...))`).

Every write is atomic: the bytes go to a temporary name that is renamed when complete, so a crash never leaves a
file that looks finished. A RunDir pickles (its filesystem does), so Ray actors and workers read and write through
it rather than through a driver-local path. Parquet shard folders (`part-NNNNN.parquet`) are read and written here
too: generation and inference stages stream into them and resume from them.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


class RunDir:
    """Paths under one run directory, with atomic JSON / Parquet / bytes writes."""

    def __init__(self, uri: str, fs: pafs.FileSystem | None = None):
        if fs is not None:
            self.fs, self.root = fs, uri
            self.uri = uri.rstrip("/")
        elif "://" in uri:
            # pyarrow's options ride in the query (s3://bucket/run?endpoint_override=host:port&scheme=http)
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
            base, sep, query = uri.partition("?")
            self.uri = base.rstrip("/") + sep + query
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(uri)
            self.uri = self.root
        self.root = self.root.rstrip("/")
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"RunDir({self.uri!r})"

    def sub(self, *parts: str) -> "RunDir":
        """The same filesystem rooted at a folder under this run directory (a CF run writes into its own)."""
        child = RunDir.__new__(RunDir)
        child.fs, child.root, child.is_local = self.fs, self.path(*parts), self.is_local
        child.uri = self.uri_of(*parts)
        return child

    def path(self, *parts: str) -> str:
        """Filesystem path (no scheme) of a file under the run directory."""
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

    def uri_of(self, *parts: str) -> str:
        """Full URI (with scheme for remote filesystems), for readers that take a URI; a remote URI's query
        (pyarrow's filesystem options) stays at the end."""
        base, sep, query = self.uri.partition("?") if "://" in self.uri else (self.uri, "", "")
        return "/".join([base, *[p.strip("/") for p in parts if p]]) + sep + query

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def mkdir(self, *parts: str) -> str:
        p = self.path(*parts)
        self.fs.create_dir(p, recursive=True)
        return p

    def delete(self, *parts: str) -> None:
        p = self.path(*parts)
        info = self.fs.get_file_info(p)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(p)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(p)

    def list(self, *parts: str, suffix: str = "") -> list[str]:
        """Names (not paths) of the files directly under a folder, sorted; [] when the folder is missing."""
        p = self.path(*parts)
        if self.fs.get_file_info(p).type != pafs.FileType.Directory:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(p, recursive=False))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(suffix)
                      and not i.base_name.startswith("."))

    # -- atomic writes ------------------------------------------------------------
    def _commit(self, tmp: str, final: str) -> None:
        # pyarrow's move replaces a file of the same type (a rename on local disk), so a reader never finds the
        # name missing in between (a run lock's heartbeat is read while it is rewritten); only a filesystem that
        # refuses to overwrite gets the delete first.
        try:
            self.fs.move(tmp, final)
        except OSError:
            if self.fs.get_file_info(final).type != pafs.FileType.File:
                raise
            self.fs.delete_file(final)
            self.fs.move(tmp, final)

    def _tmp(self, final: str) -> str:
        head, _, tail = final.rpartition("/")
        return f"{head}/.{tail}.tmp-{uuid.uuid4().hex[:8]}"

    def write_bytes(self, rel: str, data: bytes) -> str:
        final = self.path(rel)
        self.fs.create_dir(final.rpartition("/")[0], recursive=True)
        tmp = self._tmp(final)
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self._commit(tmp, final)
        return final

    def write_text(self, rel: str, text: str) -> str:
        return self.write_bytes(rel, text.encode())

    def write_json(self, rel: str, obj: Any) -> str:
        return self.write_text(rel, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")

    def write_parquet(self, rel: str, table: pa.Table, **kwargs: Any) -> str:
        final = self.path(rel)
        self.fs.create_dir(final.rpartition("/")[0], recursive=True)
        tmp = self._tmp(final)
        pq.write_table(table, tmp, filesystem=self.fs, **kwargs)
        self._commit(tmp, final)
        return final

    # -- reads --------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode()

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_text(rel))

    def read_parquet(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path(rel), filesystem=self.fs, columns=columns)

    def local_path(self, *parts: str) -> str:
        """A local path for libraries that can only write to one (Ray Tune's experiment folder)."""
        if not self.is_local:
            from .errors import HnlRayError

            raise HnlRayError(f"{self.uri} is not a local run directory")
        return self.path(*parts)

    def size(self, *parts: str) -> int:
        return self.fs.get_file_info(self.path(*parts)).size or 0

    def subdirs(self, *parts: str) -> list[str]:
        """Names of the folders directly under a folder, sorted; [] when the folder is missing."""
        p = self.path(*parts)
        if self.fs.get_file_info(p).type != pafs.FileType.Directory:
            return []
        return sorted(i.base_name for i in self.fs.get_file_info(pafs.FileSelector(p))
                      if i.type == pafs.FileType.Directory)


# -- Parquet shard folders ----------------------------------------------------------


def shard_names(run: RunDir, folder: str) -> list[str]:
    return [n for n in run.list(folder, suffix=".parquet") if n.startswith("part-")]


def read_shards(run: RunDir, folder: str, columns: list[str] | None = None) -> pa.Table | None:
    """Every `part-*.parquet` shard of a folder as one table; None when there is none."""
    names = shard_names(run, folder)
    if not names:
        return None
    return pa.concat_tables([run.read_parquet(f"{folder}/{n}", columns=columns) for n in names],
                            promote_options="default")


class ShardWriter:
    """Buffers rows (dicts or Arrow tables) and writes `part-NNNNN.parquet` shards of `shard_rows` atomically."""

    def __init__(self, run: RunDir, folder: str, shard_rows: int):
        self.run, self.folder, self.shard_rows = run, folder, shard_rows
        self.next = 1 + max((int(n[5:10]) for n in shard_names(run, folder)), default=-1)
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.written = 0

    def add(self, rows: list[dict] | pa.Table) -> None:
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows)
        if table.num_rows == 0:
            return
        self.buffer.append(table)
        self.buffered += table.num_rows
        while self.buffered >= self.shard_rows:
            merged = pa.concat_tables(self.buffer, promote_options="default")
            self._write(merged.slice(0, self.shard_rows))
            rest = merged.slice(self.shard_rows)
            self.buffer, self.buffered = ([rest], rest.num_rows) if rest.num_rows else ([], 0)

    def close(self) -> None:
        if self.buffered:
            self._write(pa.concat_tables(self.buffer, promote_options="default"))
            self.buffer, self.buffered = [], 0

    def _write(self, table: pa.Table) -> None:
        self.run.write_parquet(f"{self.folder}/part-{self.next:05d}.parquet", table)
        self.next += 1
        self.written += table.num_rows


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "isoformat"):
        return o.isoformat()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
