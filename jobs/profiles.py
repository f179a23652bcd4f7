"""Ray job: LLM item and user profiles.

    ray job submit --working-dir . -- python jobs/profiles.py --config configs/toys.yaml --set llm.engine=vllm ...
"""

from __future__ import annotations

import json

from _common import parse

from hnl_ray.ray_utils import init_ray
from hnl_ray.stages.profiles import run_profiles


def main() -> None:
    args, cfg = parse(__doc__)
    init_ray(cfg)
    print(json.dumps(run_profiles(cfg, force=args.force), indent=1, default=str))


if __name__ == "__main__":
    main()
