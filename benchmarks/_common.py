"""Shared helpers: preparing the shared datasets once, timing with medians, printing and saving results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from hnl_ray.cf.data import CFData

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"  # prepared data and runs (git-ignored)
RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared" / "data"

console = Console(width=130)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "unknown")
    except OSError:
        return platform.processor() or "unknown"


def commit() -> str:
    """The checkout's commit, `+dirty` when its code or configs differ from it (uncommitted or untracked files
    make the figures unreproducible from the sha alone)."""
    import subprocess

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "hnl_ray", "benchmarks", "configs"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    import torch

    from hnl_ray.stages.finetune import native_bf16

    return {"cpus": os.cpu_count(), "cpu_model": cpu_model(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "load_avg_1_5_15": list(os.getloadavg()),  # the machine is shared: absolute times depend on it
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the SIMD level torch's kernels use
            "native_bf16": native_bf16(),  # bf16 fine-tuning is 1.14-1.95x faster with it, emulated without
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def prepared(config: str, name: str):
    """Prepare a shared dataset (skipped when already prepared) and return (Config, RunDir)."""
    from hnl_ray.config import load_config
    from hnl_ray.stages import run_stage
    from hnl_ray.storage import RunDir

    if not SHARED.exists():
        raise SystemExit(f"{SHARED} not found: the benchmarks read the shared datasets in place")
    cfg = load_config(ROOT / "configs" / config, run_dir=str(WORK / name))
    run_stage("prepare", cfg)
    return cfg, RunDir(str(WORK / name))


def synthetic(n_users: int = 300, n_items: int = 400, per_user: int = 12, seed: int = 0) -> CFData:
    """A random bipartite graph with a train/valid/test split (the smoke mode's data)."""
    import numpy as np

    from hnl_ray.cf.data import CFData

    rng = np.random.default_rng(seed)
    pairs = np.stack([np.repeat(np.arange(n_users), per_user),
                      np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])], 1)
    split = np.tile(np.r_[np.zeros(per_user - 2), 1, 2], n_users)
    parts = {name: (pairs[split == k, 0], pairs[split == k, 1]) for k, name in enumerate(("train", "valid", "test"))}
    return CFData(n_users=n_users, n_items=n_items, **parts)


def smoke_prepared(name: str, *sets: str):
    """The demo's synthetic data, tiny, prepared under WORK/smoke/<name>: (Config, RunDir) for smoke modes."""
    from hnl_ray.config import load_config
    from hnl_ray.stages import run_stage
    from hnl_ray.storage import RunDir

    folder = WORK / "smoke" / name
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["data.n_users=60", "data.n_items=40", *sets],
                      run_dir=str(folder))
    run_stage("prepare", cfg)
    return cfg, RunDir(str(folder))


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def report(name: str, title: str, columns: list[str], rows: list[list], payload: dict, smoke: bool = False) -> None:
    """Print the table and write RESULTS/name.json (a smoke run writes under WORK/smoke, not the committed one)."""
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[str(x) for x in r])
    console.print(t)
    folder = WORK / "smoke" if smoke else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(), "commit": commit(),
               "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
               **payload}
    out.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    console.print(f"wrote {out.relative_to(ROOT)}")


def smoke_flag(doc: str) -> bool:
    """`--smoke`: tiny data, a few repeats, results under benchmarks/.work/smoke (checks that it runs)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny synthetic data: checks that the benchmark runs")
    return ap.parse_args().smoke
