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


class ResourceUnavailable(HnlRayError, RuntimeError):
    """The cluster could not provide a stage's resources (GPUs, an accelerator type) within the wait."""


# Set by init_ray: how long a stage waits for the autoscaler, and whether this process started a local Ray (which
# has no autoscaler: nothing will ever be added, so a missing resource fails at once).
_CLUSTER = {"wait_s": 900.0, "local": False}


def init_ray(cfg: Config, **kwargs):
    import ray

    if ray.is_initialized():
        return ray
    _CLUSTER["wait_s"] = cfg.ray.resource_wait_s
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
        _CLUSTER["local"] = True
        log.info("started a local Ray (%s CPUs)", ray.cluster_resources().get("CPU"))
    return ray




def accelerator_bundle(bundle: dict, accelerator_type: str | None) -> dict:
    """A resource bundle pinned to an accelerator type (Ray's `accelerator_type:<T>` node resource)."""
    if not accelerator_type:
        return dict(bundle)
    from ray._private.ray_constants import RESOURCE_CONSTRAINT_PREFIX

    return {**bundle, f"{RESOURCE_CONSTRAINT_PREFIX}{accelerator_type}": 0.001}


def _describe(bundles: list[dict]) -> str:
    shapes: dict[str, int] = {}
    for b in bundles:
        key = ", ".join(f"{k}: {v:g}" for k, v in sorted(b.items()))
        shapes[key] = shapes.get(key, 0) + 1
    return " + ".join(f"{n} x {{{k}}}" for k, n in shapes.items())


def ensure_resources(bundles: list[dict], what: str, wait_s: float | None = None) -> None:
    """Wait until the cluster can hold `bundles` at once, asking the autoscaler for them; raise
    ResourceUnavailable naming `what` and the resources when it cannot within `wait_s` (default
    `ray.resource_wait_s`). A cluster whose GPU node types start at zero nodes thus gets them added, instead of the
    stage failing on today's count (`ray.cluster_resources()` counts live nodes only).

    The check holds a placement group of the bundles until it is ready (pending placement groups are what the
    autoscaler scales for), then releases it for the stage, which starts while the new nodes are still up."""
    import ray
    from ray.autoscaler.sdk import request_resources
    from ray.exceptions import GetTimeoutError
    from ray.util.placement_group import placement_group, remove_placement_group

    bundles = [{k: float(v) for k, v in b.items() if v} for b in bundles]
    bundles = [b for b in bundles if b]
    if not bundles:
        return
    wait = _CLUSTER["wait_s"] if wait_s is None else wait_s
    have = ray.cluster_resources()
    need: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            need[k] = need.get(k, 0.0) + v
    short = {k: v for k, v in need.items() if have.get(k, 0.0) < v}
    if _CLUSTER["local"] and short:
        raise ResourceUnavailable(
            f"{what} needs {_describe(bundles)}, but this local Ray (started by hnl-ray, no autoscaler) has "
            + ", ".join(f"{have.get(k, 0):g} {k}" for k in short) + ": run on a cluster that has them "
            "(ray.address / RAY_ADDRESS), or change the setting named above")
    if not short:
        return  # there already (busy or not: the stage's tasks queue for them like any others)
    request_resources(bundles=bundles)  # a standing hint for the autoscaler while the group waits
    pg = placement_group(bundles, strategy="PACK")
    try:
        ray.get(pg.ready(), timeout=max(wait, 1.0))
    except GetTimeoutError:
        have = ray.cluster_resources()
        raise ResourceUnavailable(
            f"{what} needs {_describe(bundles)}, and the Ray cluster could not provide it within {wait:g} s "
            f"(ray.resource_wait_s); it has " + (", ".join(f"{have.get(k, 0):g} {k}" for k in need) or "none")
            + ". Check that the cluster config has a node type with these resources and max_workers > 0, or "
            "raise ray.resource_wait_s if nodes take longer to start") from None
    finally:
        remove_placement_group(pg)
        request_resources(bundles=[])  # the stage's own tasks and actors keep the nodes busy from here
    log.info("%s: the cluster holds %s", what, _describe(bundles))
