"""The stage graph, in the registry's order (hnl_ray/stages/__init__.py): prepare -> profiles (items, then
users) -> negatives -> embed -> teacher -> finetune -> hardneg -> train (one CF run per configured name) -> report.

Every stage skips itself when its manifest matches, so a re-run after a crash redoes only what is missing.
`from_` starts at a stage, `only` runs one, `force` redoes the named stages (stages that read their outputs
re-run because their inputs changed). A failure keeps the finished stages and names the stage, the error and
the command that resumes.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from .config import Config
from .errors import HnlRayError, UsageError
from . import stages as registry
from .stages import Stage, context
from .storage import RunDir

log = logging.getLogger(__name__)


class PipelineError(HnlRayError):
    def __init__(self, stage: str, error: BaseException, resume: str):
        super().__init__(f"stage `{stage}` failed: {type(error).__name__}: {error}\n"
                         f"Finished stages are kept. Resume with: {resume}")
        self.stage, self.error, self.resume = stage, error, resume


def selected(cfg: Config, from_: str | None = None, only: str | None = None) -> list[Stage]:
    names = registry.names()
    for key, value in (("--from", from_), ("--only", only)):
        if value is not None and value not in names:
            raise UsageError(f"{key}: unknown stage {value!r}; stages: {', '.join(names)}")
    if only:
        return [registry.get(only)]
    stages = [s for s in names if s in cfg.pipeline.stages]
    if from_:
        if from_ not in stages:
            raise UsageError(f"--from {from_}: not among this config's pipeline.stages ({', '.join(stages)})")
        stages = stages[stages.index(from_):]
    return [registry.get(s) for s in stages]


def run_pipeline(cfg: Config, run: RunDir | None = None, from_: str | None = None, only: str | None = None,
                 force: tuple[str, ...] = (), config_path: str | None = None,
                 on_stage: Callable[[str, dict, float], None] | None = None) -> dict[str, object]:
    unknown = [f for f in force if f not in registry.names()]
    if unknown:
        raise UsageError(f"--force: unknown stage(s) {', '.join(unknown)}; stages: {', '.join(registry.names())}")
    from .runlock import hold

    with hold(context(cfg, run).run, "hnl-ray run"):
        return _run_stages(cfg, run, selected(cfg, from_, only), force, config_path, on_stage)


def _run_stages(cfg, run, stages, force, config_path, on_stage) -> dict[str, object]:
    results: dict[str, object] = {}
    for stage in stages:
        t0 = time.perf_counter()
        try:
            res = stage.run(context(cfg, run, force=stage.name in force))
        except Exception as exc:
            resume = f"hnl-ray run{f' --config {config_path}' if config_path else ''} --from {stage.name}"
            raise PipelineError(stage.name, exc, resume) from exc
        results[stage.name] = res
        if on_stage:
            on_stage(stage.name, res if isinstance(res, dict) else {}, time.perf_counter() - t0)
    return results
