"""Config of Ray Tune sweeps (`tune:`), kept in configs/tune/*.yaml."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from .base import SafeName, Section
from .cf import Metric

DOMAINS = ("grid", "choice", "uniform", "loguniform", "randint")


class TuneConfig(Section):
    name: SafeName = Field("sweep", description="Sweep name: results go to <run-dir>/tune/<name>/.")
    base_run: str | None = Field(None, description="A named run of train.runs whose settings trials start from "
                                                   "(null: the `train` settings).")
    metric: Metric = Field("ndcg@20", description="Validation metric the scheduler and the choice of the best "
                                               "trial read (the test split is never used).")
    search: Literal["grid", "random", "optuna"] = Field("grid", description="Search algorithm.")
    num_samples: int = Field(1, ge=1, description="grid: repeats of the grid; random/optuna: trials.")
    max_concurrent_trials: int = Field(2, ge=1, description="Trials running at once.")
    cpus_per_trial: float = Field(1, gt=0, description="CPUs per trial.")
    gpus_per_trial: float = Field(0, ge=0, description="GPUs per trial (fractions let small CF models share).")
    scheduler: Literal["asha", "none"] = Field("asha", description="ASHA stops weak trials early.")
    grace_period: int = Field(3, ge=1, description="ASHA: epochs every trial gets.")
    reduction_factor: float = Field(2, gt=1, description="ASHA: keep 1/reduction_factor at each rung.")
    space: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Dotted keys under `train` -> one domain: {grid: [...]}, {choice: [...]}, {uniform: [lo, hi]}, "
                    "{loguniform: [lo, hi]} or {randint: [lo, hi]}. E.g. `sampler.semantic.alpha: {grid: [0, "
                    "0.01, 0.1]}`.")

    @field_validator("space")
    @classmethod
    def _domains(cls, v: dict) -> dict:
        for key, dom in v.items():
            if not isinstance(dom, dict) or len(dom) != 1 or next(iter(dom)) not in DOMAINS:
                raise ValueError(f"space.{key}: give exactly one of {', '.join(DOMAINS)} (got {dom!r})")
        return v
