"""Ray job: semantic hard negatives (method 1).

    ray job submit --working-dir . -- python jobs/negatives.py --config configs/toys.yaml --set llm.engine=vllm ...
"""

from __future__ import annotations

import json

from _common import parse

from hnl_ray.ray_utils import init_ray
from hnl_ray.stages.negatives import run_negatives


def main() -> None:
    args, cfg = parse(__doc__)
    init_ray(cfg)
    print(json.dumps(run_negatives(cfg, force=args.force), indent=1, default=str))


if __name__ == "__main__":
    main()
