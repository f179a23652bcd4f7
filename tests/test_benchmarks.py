"""Every benchmark runs: `python -m benchmarks.NAME --smoke` on tiny data, for each module of benchmarks/.

A module without a smoke mode fails (a benchmark nobody runs rots). Smoke
results go under benchmarks/.work/smoke, never over the committed benchmarks/results/*.json."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
MODULES = sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_")) + \
    sorted(p.name for p in BENCH.iterdir() if (p / "__main__.py").exists())
# Commands that need more than `--smoke` (a step name, the command to watch, a shared dataset).
COMMANDS = {
    "memwatch": ["--", sys.executable, "-c", "pass"],
    "gpu_finetune": None,  # two steps: see test_gpu_finetune_smoke
}
NEEDS_RAY = {"embedding", "generation"}
# Not benchmarks: they compute and write a document, no measurement to smoke.
NOT_BENCHMARKS = {"cost": "a cost model that rewrites docs/cost.md (tests/test_cost.py covers it)"}


def _source(name: str) -> str:
    path = BENCH / f"{name}.py"
    return (path if path.exists() else BENCH / name / "__main__.py").read_text()


def _run(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODULES)
def test_benchmark_smoke_mode_runs(name):
    if name in NOT_BENCHMARKS:
        pytest.skip(f"benchmarks.{name} is {NOT_BENCHMARKS[name]}")
    if name in COMMANDS and COMMANDS[name] is None:
        pytest.skip(f"benchmarks.{name} has its own smoke test below")
    assert name in COMMANDS or "--smoke" in _source(name), (
        f"benchmarks.{name} has no --smoke mode: add one (tiny data, writes under benchmarks/.work/smoke)")
    if name in NEEDS_RAY and os.cpu_count() < 2:
        pytest.skip("needs 2 CPUs for a local Ray")
    done = _run([f"benchmarks.{name}", *COMMANDS.get(name, ["--smoke"])])
    assert done.returncode == 0, f"benchmarks.{name} --smoke failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.mark.slow
def test_gpu_finetune_smoke(tmp_path):
    if not (ROOT.parent / "shared" / "data" / "amazon-toys-p5").exists():
        pytest.skip("gpu_finetune's prepare step reads the shared amazon-toys-p5 data")
    done = _run(["benchmarks.gpu_finetune", "prepare", "--data", str(tmp_path)])
    assert done.returncode == 0, done.stderr[-3000:]
    done = _run(["benchmarks.gpu_finetune", "epoch", "--smoke", "--steps", "2", "--data", str(tmp_path),
                 "--out", str(tmp_path / "out")])
    assert done.returncode == 0, done.stderr[-3000:]
