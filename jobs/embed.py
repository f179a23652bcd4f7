"""Ray job: sentence embeddings of the catalog and the negatives, grounded to catalog items.

    ray job submit --working-dir . -- python jobs/embed.py --config configs/toys.yaml --set llm.engine=vllm ...
"""

from __future__ import annotations

import json

from _common import parse

from hnl_ray.ray_utils import init_ray
from hnl_ray.stages.embed import run_embed


def main() -> None:
    args, cfg = parse(__doc__)
    init_ray(cfg)
    print(json.dumps(run_embed(cfg, force=args.force), indent=1, default=str))


if __name__ == "__main__":
    main()
