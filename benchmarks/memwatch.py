"""Peak memory of a command and everything it starts (Ray's raylet, workers and actors included), sampled from the
system's used memory: `/usr/bin/time` reports only the largest single process, which undercounts a Ray run.

    python -m benchmarks.memwatch -- make demo
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import psutil


def main() -> None:
    cmd = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    base = psutil.virtual_memory().used
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            peak[0] = max(peak[0], psutil.virtual_memory().used)

    threading.Thread(target=sample, daemon=True).start()
    t0 = time.perf_counter()
    rc = subprocess.call(cmd)
    done.set()
    print(f"memwatch: {time.perf_counter() - t0:.1f} s wall, peak used memory above the start "
          f"{(peak[0] - base) / 2**30:.2f} GiB (system used at start {base / 2**30:.2f} GiB), rc {rc}",
          file=sys.stderr)
    raise SystemExit(rc)


if __name__ == "__main__":
    main()
