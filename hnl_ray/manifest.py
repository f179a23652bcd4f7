"""Stage manifests: what a stage was run with and what it wrote, so an identical re-run is skipped.

A stage's *fingerprint* hashes its config section and the fingerprints of the stages it read; a stage is fresh
when its manifest carries the same fingerprint and every file it records is still there with the size and SHA-256
it had when the stage finished (its `outputs`, or the `part-*.parquet` shards of a folder that lists none). A
truncated or altered file makes the stage run again, with a message naming the file (`damaged`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from contextlib import contextmanager
from typing import Any, Iterator

from . import __version__
from .storage import RunDir

MANIFEST = "manifest.json"

log = logging.getLogger(__name__)


def digest(obj: Any) -> str:
    """Stable short hash of any JSON-able object (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def fingerprint(config_part: Any, inputs: dict[str, str] | None = None) -> str:
    return digest({"config": config_part, "inputs": inputs or {}})


def load(run: RunDir, stage_dir: str) -> dict | None:
    rel = f"{stage_dir}/{MANIFEST}"
    if not run.exists(rel):
        return None
    try:
        return run.read_json(rel)
    except (ValueError, OSError):
        return None  # a damaged manifest means "not done"


def is_fresh(run: RunDir, stage_dir: str, fp: str, key: str = "fingerprint") -> bool:
    """`key` names the manifest field compared with `fp`; a manifest without it (written before that field
    existed) is compared by its `fingerprint`."""
    m = load(run, stage_dir)
    if m is None or m.get(key, m.get("fingerprint")) != fp:
        return False
    if not all(run.exists(stage_dir, out) for out in m.get("outputs", [])):
        return False
    bad = damaged(run, stage_dir, m)
    for name, why in bad.items():
        log.warning("%s/%s: %s since the stage finished: the stage runs again", stage_dir, name, why)
    return not bad


def recorded_files(run: RunDir, stage_dir: str, outputs: list[str]) -> list[str]:
    """The files a manifest vouches for: the outputs it lists, else the folder's shards."""
    if outputs:
        return list(outputs)
    return [n for n in run.list(stage_dir, suffix=".parquet") if n.startswith("part-")]


def file_record(run: RunDir, stage_dir: str, name: str) -> dict:
    data = run.read_bytes(f"{stage_dir}/{name}")
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def damaged(run: RunDir, stage_dir: str, m: dict | None = None) -> dict[str, str]:
    """name -> what changed, for the files a finished stage's manifest recorded (missing, resized, rewritten).
    Manifests written before files were recorded vouch for nothing and find nothing damaged."""
    m = m if m is not None else load(run, stage_dir)
    out: dict[str, str] = {}
    for name, rec in ((m or {}).get("files") or {}).items():
        info = run.fs.get_file_info(run.path(stage_dir, name))
        if info.size is None:
            out[name] = "missing"
        elif info.size != rec.get("bytes"):
            out[name] = f"size changed ({rec.get('bytes')} -> {info.size} bytes)"
        elif file_record(run, stage_dir, name)["sha256"] != rec.get("sha256"):
            out[name] = "content changed (SHA-256 differs)"
    return out


def files_digest(run: RunDir, stage_dir: str, names: list[str]) -> str | None:
    """Hash of the bytes of a stage's output files (None when one is missing)."""
    h = hashlib.sha256()
    for name in names:
        if not run.exists(stage_dir, name):
            return None
        h.update(name.encode())
        h.update(hashlib.sha256(run.read_bytes(f"{stage_dir}/{name}")).digest())
    return h.hexdigest()[:16]


def write(run: RunDir, stage_dir: str, *, stage: str, fp: str, config_part: Any, inputs: dict[str, str],
          outputs: list[str], counts: dict[str, Any], timings: dict[str, float], extra: dict | None = None) -> dict:
    m = {
        "stage": stage,
        "fingerprint": fp,
        "config": config_part,
        "inputs": inputs,
        "outputs": outputs,
        "files": {n: file_record(run, stage_dir, n) for n in recorded_files(run, stage_dir, outputs)
                  if run.exists(stage_dir, n)},
        "counts": counts,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "package_version": __version__,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    run.write_json(f"{stage_dir}/{MANIFEST}", m)
    return m


class Timings(dict):
    """Collects named wall-clock timings: `with t("read"): ...`."""

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - t0
