"""The run directory: a local path or any pyarrow filesystem URI (s3://, gs://, ...).

Every write is atomic: the bytes go to a temporary name that is renamed when complete, so a crash never leaves a
file that looks finished.
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

    def __init__(self, uri: str):
        if "://" in uri:
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
            self.uri = uri.rstrip("/")
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(uri)
            self.uri = self.root
        self.root = self.root.rstrip("/")
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"RunDir({self.uri!r})"

    def path(self, *parts: str) -> str:
        """Filesystem path (no scheme) of a file under the run directory."""
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

    def uri_of(self, *parts: str) -> str:
        """Full URI (with scheme for remote filesystems), for readers that take a URI."""
        return "/".join([self.uri, *[p.strip("/") for p in parts if p]])

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
        if self.fs.get_file_info(final).type == pafs.FileType.File:
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
        """A local path for libraries that need one (matplotlib, safetensors); only for local run dirs."""
        if not self.is_local:
            raise RuntimeError(f"{self.uri} is not a local run directory")
        return self.path(*parts)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "isoformat"):
        return o.isoformat()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
