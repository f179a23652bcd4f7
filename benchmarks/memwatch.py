"""Peak memory of a command and everything it starts (Ray's raylet, workers and actors included).

Three figures: the peak of the summed RSS of the command's process tree (an upper bound: each of Ray's ~20
worker processes counts the shared pages of torch and its other libraries again), the peak of the summed PSS
(proportional set size: a shared page is split among the processes that map it, so the sum is the memory the
tree really holds; Ray's object store, shared memory, is split the same way), and the peak of the system's used
memory above the start (which also counts page cache pressure, but includes everyone else's growth).
`/usr/bin/time` reports only the largest single process, which undercounts a Ray run.

    python -m benchmarks.memwatch [--timeline FILE.jsonl] -- make demo

`--timeline` also writes one line per sample (seconds since start, tree RSS, tree PSS, the largest processes'
command lines and PSS), to attribute a peak to a stage.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import psutil


def tree_memory(pid: int) -> tuple[int, int]:
    """(summed RSS, summed PSS) of a process and all its descendants ((0, 0) once it is gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    rss = pss = 0
    for p in procs:
        try:
            full = p.memory_full_info()  # reads smaps_rollup: PSS beside RSS
            rss, pss = rss + full.rss, pss + getattr(full, "pss", full.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return rss, pss


def tree_rss(pid: int) -> int:
    """Summed resident memory of a process and all its descendants (0 once it is gone)."""
    return tree_memory(pid)[0]


def top_processes(pid: int, n: int = 4) -> list[tuple[str, int]]:
    """The n processes of the tree with the largest PSS: (short command line, PSS bytes)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in procs:
        try:
            out.append((" ".join(p.cmdline())[:100], getattr(p.memory_full_info(), "pss", 0)))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return sorted(out, key=lambda x: -x[1])[:n]


def watch(cmd: list[str], interval: float = 0.5, timeline: str | None = None) -> dict:
    """Run `cmd`; returns its exit code, wall time and memory peaks (bytes)."""
    base = psutil.virtual_memory().used
    peak = {"tree": 0, "pss": 0, "used": base}
    done = threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)

    log = open(timeline, "w") if timeline else None

    def sample() -> None:
        k = 0
        while not done.wait(interval):
            rss, pss = tree_memory(proc.pid)
            peak["tree"], peak["pss"] = max(peak["tree"], rss), max(peak["pss"], pss)
            k += 1
            if log is not None and k % 4 == 0:  # every ~2 s
                log.write(json.dumps({"t": round(time.perf_counter() - t0, 1), "rss": rss, "pss": pss,
                                      "top": top_processes(proc.pid)}) + "\n")
                log.flush()
            peak["used"] = max(peak["used"], psutil.virtual_memory().used)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    rc = proc.wait()
    done.set()
    thread.join()
    return {"rc": rc, "wall_s": time.perf_counter() - t0, "peak_tree_rss_bytes": peak["tree"],
            "peak_tree_pss_bytes": peak["pss"],
            "peak_used_above_start_bytes": peak["used"] - base, "used_at_start_bytes": base}


def main() -> None:
    args = sys.argv[1:]
    timeline = None
    if args[:1] == ["--timeline"]:
        timeline, args = args[1], args[2:]
    cmd = args[args.index("--") + 1:] if "--" in args else args
    r = watch(cmd, timeline=timeline)
    print(f"memwatch: {r['wall_s']:.1f} s wall, peak process-tree RSS {r['peak_tree_rss_bytes'] / 2**30:.2f} GiB, "
          f"PSS {r['peak_tree_pss_bytes'] / 2**30:.2f} GiB, "
          f"peak used memory above the start {r['peak_used_above_start_bytes'] / 2**30:.2f} GiB (system used at "
          f"start {r['used_at_start_bytes'] / 2**30:.2f} GiB), rc {r['rc']}", file=sys.stderr)
    raise SystemExit(r["rc"])


if __name__ == "__main__":
    main()
