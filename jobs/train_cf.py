"""Ray job: train the configured CF runs, each as a Ray task that asks for a GPU when `train.device: cuda`.

    ray job submit --working-dir . -- python jobs/train_cf.py --config configs/amazon-toys-p5.yaml
"""

from __future__ import annotations

import json

from _common import parse

from hnl_ray.ray_utils import cluster_gpus, init_ray


def main() -> None:
    args, cfg = parse(__doc__, lambda ap: ap.add_argument("--run", action="append", dest="runs",
                                                          help="only this named run (repeatable)"))
    ray = init_ray(cfg)
    gpus = 1 if cfg.train.device == "cuda" else 0
    if gpus and cluster_gpus() < 1:
        raise SystemExit("train.device is cuda but the Ray cluster has no GPU: a GPU task would wait forever")

    @ray.remote(num_gpus=gpus, num_cpus=1)
    def train_run(cfg_json: str, name: str, force: bool) -> dict:
        from hnl_ray.cf.stage import train_one
        from hnl_ray.config import Config

        c = Config.model_validate_json(cfg_json)
        return train_one(c, _run(c), name, force=force, progress=False)

    names = args.runs or cfg.train.run_names()
    results = ray.get([train_run.remote(cfg.model_dump_json(), n, args.force) for n in names])
    for r in results:
        print(json.dumps({k: r[k] for k in ("run", "best_epoch", "valid", "test")}, indent=1))


def _run(cfg):
    from hnl_ray.storage import RunDir

    return RunDir(cfg.resolved_run_dir())


if __name__ == "__main__":
    main()
