"""Ray job: the whole pipeline (or part of it) on the cluster the job runs on.

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env runtime_env.yaml \\
        -- python jobs/pipeline.py --config configs/toys.yaml [--from STAGE] [--only STAGE] [--force-stage STAGE]

Use a run directory on shared storage (`--run-dir s3://bucket/runs/toys`) so that every node sees the artifacts
and a re-submitted job resumes where the last one stopped.
"""

from __future__ import annotations

import json
import sys
import traceback

from _common import parse

from hnl_ray.pipeline import PipelineError, run_pipeline
from hnl_ray.ray_utils import init_ray


def main() -> None:
    def extra(ap):
        ap.add_argument("--from", dest="from_", help="start at this stage")
        ap.add_argument("--only", help="run only this stage")
        ap.add_argument("--force-stage", action="append", default=[], help="redo this stage (repeatable)")

    args, cfg = parse(__doc__, extra)
    init_ray(cfg)
    try:
        res = run_pipeline(cfg, from_=args.from_, only=args.only, force=tuple(args.force_stage),
                           config_path=args.config,
                           on_stage=lambda s, r, t: print(f"stage {s} done in {t:.1f} s", flush=True))
    except PipelineError as exc:
        traceback.print_exception(exc.__cause__)  # the job log is all a cluster user sees
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps({k: v for k, v in res.items() if k in ("train", "report")}, indent=1, default=str)[:5000])


if __name__ == "__main__":
    main()
