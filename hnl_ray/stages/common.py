"""Plumbing shared by the stages: reading prepared data, stage folders that resume or restart, Ray startup."""

from __future__ import annotations

import logging
import os

import pyarrow as pa

from .. import manifest
from ..config import Config
from ..storage import RunDir

log = logging.getLogger(__name__)


class MissingInput(FileNotFoundError):
    """A stage's input does not exist yet; the message names the stage to run first."""


def need(run: RunDir, folder: str, stage: str, what: str | None = None) -> dict:
    """The manifest of an upstream stage, or an error naming the command that makes it."""
    m = manifest.load(run, folder)
    if m is None:
        raise MissingInput(f"{what or folder} not found in {run.uri_of(folder)}: run `hnl-ray {stage}` first "
                           "(same --config and --run-dir)")
    return m


def prepared(run: RunDir) -> dict[str, pa.Table]:
    need(run, "prepared", "prepare", "prepared data")
    return {name: run.read_parquet(f"prepared/{name}.parquet")
            for name in ("train", "items", "users")}


def begin(run: RunDir, folder: str, fp: str, force: bool) -> bool:
    """Prepare a resumable stage folder. Returns True when the stage is already complete (skip it).

    The folder's `run.json` records the fingerprint of the work in progress: shards written under another
    config are deleted rather than mixed in; shards of the same config are kept and completed."""
    if not force and manifest.is_fresh(run, folder, fp):
        return True
    started = run.read_json(f"{folder}/run.json") if run.exists(folder, "run.json") else None
    if force or (started is not None and started.get("fingerprint") != fp):
        run.delete(folder)
    elif started is None and run.exists(folder):
        run.delete(folder)  # leftovers without a record of what made them
    if run.exists(folder, manifest.MANIFEST):
        run.delete(folder, manifest.MANIFEST)  # being redone or completed: not fresh until it finishes
    run.write_json(f"{folder}/run.json", {"fingerprint": fp})
    return False


def ensure_ray(cfg: Config):
    import ray

    if not ray.is_initialized():
        from ..ray_utils import init_ray

        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "0")
        init_ray(cfg)
    return ray
