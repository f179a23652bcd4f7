"""What `ray job submit --working-dir .` would upload, and which paths to exclude when it is over Ray's limit.

Ray zips the working directory minus `excludes` (gitignore-style patterns in the runtime env) and the patterns
of .gitignore, and refuses packages larger than its gRPC message limit (512 MiB by default).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .errors import UsageError


def ray_limit() -> int:
    try:
        from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE

        return int(GCS_STORAGE_MAX_SIZE)
    except Exception:  # pragma: no cover - ray internals moved
        return 512 * 1024 * 1024


def _spec(patterns: list[str]):
    from ray._private.thirdparty.pathspec import PathSpec

    return PathSpec.from_lines("gitwildmatch", patterns)


def upload_size(root: str, runtime_env: str | None = None) -> tuple[int, dict[str, int]]:
    """(bytes Ray would upload, bytes per top-level path)."""
    root_p = Path(root).resolve()
    patterns: list[str] = []
    if runtime_env and os.path.exists(runtime_env):
        patterns += list((yaml.safe_load(Path(runtime_env).read_text()) or {}).get("excludes", []))
    gi = root_p / ".gitignore"
    if gi.exists():
        patterns += [ln for ln in gi.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    spec = _spec(patterns)
    per_top: dict[str, int] = {}
    total = 0
    for dirpath, dirnames, filenames in os.walk(root_p):
        rel_dir = Path(dirpath).relative_to(root_p)
        dirnames[:] = [d for d in dirnames if not spec.match_file(str(rel_dir / d) + "/")]
        for f in filenames:
            rel = rel_dir / f
            if spec.match_file(str(rel)):
                continue
            try:
                size = (Path(dirpath) / f).stat().st_size
            except OSError:
                continue
            total += size
            top = rel.parts[0] if len(rel.parts) > 1 else f
            per_top[top] = per_top.get(top, 0) + size
    return total, per_top


def check_upload(root: str = ".", runtime_env: str | None = "runtime_env.yaml", limit: int | None = None) -> str:
    """A one-line verdict; raises UsageError naming the biggest paths to exclude when over the limit."""
    limit = limit or ray_limit()
    total, per_top = upload_size(root, runtime_env)
    mib = 1024 * 1024
    if total <= limit:
        return f"working directory upload: {total / mib:.1f} MiB (Ray's limit {limit / mib:.0f} MiB)"
    biggest = sorted(per_top.items(), key=lambda kv: -kv[1])[:5]
    listing = ", ".join(f"{p} ({s / mib:.1f} MiB)" for p, s in biggest)
    raise UsageError(f"the working directory would upload {total / mib:.1f} MiB, over Ray's {limit / mib:.0f} MiB "
                     f"limit. Exclude the largest paths in {runtime_env or 'the runtime env'} (`excludes:`): "
                     f"{listing}")
