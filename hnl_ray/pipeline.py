"""The stage graph: prepare -> profiles (items, then users) -> negatives -> embed -> teacher -> finetune ->
hardneg -> train (one CF run per configured name) -> report.

Every stage skips itself when its manifest matches, so a re-run after a crash redoes only what is missing.
`from_` starts at a stage, `only` runs one, `force` redoes the named stages (stages that read their outputs
re-run because their inputs changed). A failure keeps the finished stages and names the stage, the error and
the command that resumes.
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import Callable

from .config import Config
from .config.root import STAGES
from .storage import RunDir

log = logging.getLogger(__name__)

FUNCTIONS: dict[str, tuple[str, str]] = {
    "prepare": ("hnl_ray.data.prepare", "prepare"),
    "profiles": ("hnl_ray.stages.profiles", "run_profiles"),
    "negatives": ("hnl_ray.stages.negatives", "run_negatives"),
    "embed": ("hnl_ray.stages.embed", "run_embed"),
    "teacher": ("hnl_ray.stages.teacher", "run_teacher"),
    "finetune": ("hnl_ray.stages.finetune", "run_finetune"),
    "hardneg": ("hnl_ray.stages.hardneg", "run_hardneg"),
    "train": ("hnl_ray.cf.stage", "train"),
    "report": ("hnl_ray.report", "write_report"),
}


class PipelineError(RuntimeError):
    def __init__(self, stage: str, error: BaseException, resume: str):
        super().__init__(f"stage `{stage}` failed: {type(error).__name__}: {error}\n"
                         f"Finished stages are kept. Resume with: {resume}")
        self.stage, self.error, self.resume = stage, error, resume


def function(stage: str) -> Callable:
    module, name = FUNCTIONS[stage]
    return getattr(importlib.import_module(module), name)


def selected(cfg: Config, from_: str | None = None, only: str | None = None) -> list[str]:
    for key, value in (("--from", from_), ("--only", only)):
        if value is not None and value not in STAGES:
            raise ValueError(f"{key}: unknown stage {value!r}; stages: {', '.join(STAGES)}")
    if only:
        return [only]
    stages = [s for s in STAGES if s in cfg.pipeline.stages]
    if from_:
        if from_ not in stages:
            raise ValueError(f"--from {from_}: not among this config's pipeline.stages ({', '.join(stages)})")
        stages = stages[stages.index(from_):]
    return stages


def run_pipeline(cfg: Config, run: RunDir | None = None, from_: str | None = None, only: str | None = None,
                 force: tuple[str, ...] = (), config_path: str | None = None,
                 on_stage: Callable[[str, dict, float], None] | None = None) -> dict[str, object]:
    run = run or RunDir(cfg.resolved_run_dir())
    unknown = [f for f in force if f not in STAGES]
    if unknown:
        raise ValueError(f"--force: unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    results: dict[str, object] = {}
    for stage in selected(cfg, from_, only):
        t0 = time.perf_counter()
        try:
            fn = function(stage)
            if stage == "report":
                res = {"report": fn(cfg, run)}
            else:
                res = fn(cfg, run, force=stage in force)
        except Exception as exc:
            resume = f"hnl-ray run{f' --config {config_path}' if config_path else ''} --from {stage}"
            raise PipelineError(stage, exc, resume) from exc
        results[stage] = res
        if on_stage:
            on_stage(stage, res if isinstance(res, dict) else {}, time.perf_counter() - t0)
    return results
