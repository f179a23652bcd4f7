"""Ray job: the HNLMRec finetune stage.

    ray job submit --working-dir . -- python jobs/finetune.py --config configs/toys.yaml
"""

from __future__ import annotations

import json

from _common import parse

from hnl_ray.ray_utils import init_ray
from hnl_ray.stages.finetune import run_finetune


def main() -> None:
    args, cfg = parse(__doc__)
    init_ray(cfg)
    print(json.dumps(run_finetune(cfg, force=args.force), indent=1, default=str))


if __name__ == "__main__":
    main()
