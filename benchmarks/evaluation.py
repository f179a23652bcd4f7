"""Full-ranking evaluation of all Yelp2018 test users (31,668 users x 38,048 items, train items masked): time
(median of 3) and peak memory, measured in a fresh process.

    python -m benchmarks.evaluation [--smoke]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from ._common import prepared, report, smoke_flag, smoke_prepared

CHILD = r"""
import json, resource, sys, time, torch
from hnl_ray.artifacts import Artifacts
from hnl_ray.cf.data import CFData
from hnl_ray.cf.evaluate import Evaluator
from hnl_ray.storage import RunDir
data = Artifacts(RunDir(sys.argv[1])).cf_data()
torch.manual_seed(0)
u, i = torch.randn(data.n_users, 64), torch.randn(data.n_items, 64)
ev = Evaluator(data, "test", [10, 20], batch_users=int(sys.argv[2]))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = []
for _ in range(3):
    t0 = time.perf_counter(); res = ev.evaluate(u, i); times.append(time.perf_counter() - t0)
print(json.dumps({"times": times, "users": len(res.users), "peak_rss_kb": resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss, "rss_before_eval_kb": base}))
"""


def main() -> None:
    smoke = smoke_flag(__doc__)
    _, run = smoke_prepared("evaluation") if smoke else prepared("yelp2018-lightgcn.yaml", "yelp2018")
    rows, payload = [], {}
    for batch in ((16, 32) if smoke else (2048, 4096)):
        out = subprocess.run([sys.executable, "-c", CHILD, run.path(), str(batch)], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        med = statistics.median(r["times"])
        rows.append([f"batch_users={batch}", f"{r['users']:,}", f"{med:.2f} s", f"{r['peak_rss_kb'] / 2**20:.2f} GiB",
                     f"{(r['peak_rss_kb'] - r['rss_before_eval_kb']) / 2**20:.2f} GiB"])
        payload[f"batch_{batch}"] = {**r, "median_s": med}
    report("evaluation", f"Full-ranking evaluation of every {'smoke' if smoke else 'Yelp2018'} test user "
                         "(median of 3 in one process)",
           ["setting", "users", "time", "peak RSS (process)", "added by evaluation"], rows, payload, smoke=smoke)


if __name__ == "__main__":
    main()
