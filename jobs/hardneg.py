"""Ray job: the HNLMRec hardneg stage.

    ray job submit --working-dir . -- python jobs/hardneg.py --config configs/toys.yaml
"""

from __future__ import annotations

import json

from _common import parse

from hnl_ray.ray_utils import init_ray
from hnl_ray.stages.hardneg import run_hardneg


def main() -> None:
    args, cfg = parse(__doc__)
    init_ray(cfg)
    print(json.dumps(run_hardneg(cfg, force=args.force), indent=1, default=str))


if __name__ == "__main__":
    main()
