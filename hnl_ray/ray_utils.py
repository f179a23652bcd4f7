"""Connecting to Ray: `ray.address` from the config, else `RAY_ADDRESS`, else a local Ray. Fails fast (with the
address) when a cluster is named but cannot be reached, instead of hanging."""

from __future__ import annotations

import logging
import os

from .config import Config
from .errors import HnlRayError

log = logging.getLogger(__name__)


class RayConnectError(HnlRayError, RuntimeError):
    pass


def init_ray(cfg: Config, **kwargs):
    import ray

    if ray.is_initialized():
        return ray
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, log_to_driver=True, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayConnectError(f"cannot reach the Ray cluster at {address!r} (from "
                                  f"{'ray.address' if cfg.ray.address else 'RAY_ADDRESS'}): {exc}") from None
        log.info("connected to Ray at %s", address)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus, object_store_memory=cfg.ray.object_store_memory,
                 include_dashboard=False, **kwargs)
        log.info("started a local Ray (%s CPUs)", ray.cluster_resources().get("CPU"))
    return ray


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))
