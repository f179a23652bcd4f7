"""Benchmark tables as configs (configs/bench/<dataset>.yaml), validated with pydantic like every config: unknown
keys are errors, and every sweep has the same number of grid points.

A table names the pipeline config it runs on (data, split, LLM stage settings), the CF settings every row shares
(model, dimension, lr, batch, patience, epochs), and its rows. A row may change only the sampler and the loss; its
`grid` (dotted keys under `train`, Cartesian product) is swept on validation through `hnl-ray tune`. A row whose
sampler or source does not exist in this code (`needs`) or whose LLM stages are not in the run directory
(`needs_stages`) is reported as not run, never faked.
"""

from __future__ import annotations

import math
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from hnl_ray.config.base import Section
from hnl_ray.config.cf import TrainConfig
from hnl_ray.config.loader import ConfigError, _read_yaml, deep_merge
from hnl_ray.tune import _nest as nest  # dotted keys -> nested dict, as tune's trials build them

ROW_KEYS = {"sampler", "loss"}  # all else is shared by every row: equal budgets, same model


class SweepSettings(Section):
    scheduler: Literal["none", "asha"] = Field("none", description="`none`: every grid point trains to early "
                                                                   "stopping (equal budgets).")
    max_concurrent_trials: int = Field(1, ge=1, description="Trials at once.")
    cpus_per_trial: float = Field(1, gt=0, description="CPUs per trial.")
    grace_period: int = Field(10, ge=1, description="ASHA only.")
    reduction_factor: float = Field(2, gt=1, description="ASHA only.")


class BootstrapSettings(Section):
    resamples: int = Field(1000, ge=1000, description="Paired per-user bootstrap resamples (at least 1,000).")
    level: float = Field(0.95, gt=0, lt=1, description="Interval level.")
    seed: int = Field(0, description="Seed of the resampling.")


class DiagnosticSettings(Section):
    false_negatives: bool = Field(True, description="One epoch per row at its chosen setting: share of drawn "
                                                    "negatives that are the user's validation/test items, and their "
                                                    "mean text similarity to the positive.")
    text_model: str | None = Field(None, description="sentence-transformers folder for the text similarity "
                                                     "(null: the pipeline's embed.model).")


class RowConfig(Section):
    kind: Literal["classic", "semantic", "control", "teacher"] = Field(
        "classic", description="`classic` rows compete for the best tuned classic sampler (chosen on validation).")
    train: dict[str, Any] = Field(default_factory=dict, description="Overrides of the shared `train`: only "
                                                                    "`sampler` and `loss`.")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="Dotted keys under `train` -> values; "
                                                                         "the product is the row's sweep.")
    needs: list[str] = Field(default_factory=list, description="`train.key=value` the code must accept (e.g. "
                                                               "`sampler.name=ahns`); else the row is not run.")
    needs_stages: list[str] = Field(default_factory=list, description="Stage folders (manifests) the row reads, "
                                                                      "e.g. hardneg; missing: not run.")
    setting_from: str | None = Field(None, description="Run at the chosen grid point of this (earlier) row: a "
                                                       "control that differs from the row it controls in its "
                                                       "switch only (e.g. `source`), not in N, rule or guard.")
    redraw: bool = Field(True, description="Run again on each further draw of the LLM stages (`draws`) when it "
                                           "reads a redrawn stage; false for a row whose input does not change "
                                           "with the draw (the `base` control: the model before fine-tuning).")
    note: str = Field("", description="Shown in the table.")

    @field_validator("train")
    @classmethod
    def _only_sampler_and_loss(cls, v: dict) -> dict:
        if extra := set(v) - ROW_KEYS:
            raise ValueError(f"a row may change only {sorted(ROW_KEYS)}; {sorted(extra)} are shared by every row")
        return v

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict) -> dict:
        for key, values in v.items():
            if key.split(".")[0] not in ROW_KEYS:
                raise ValueError(f"{key}: a grid may sweep only sampler.* and loss.* keys")
            if not values:
                raise ValueError(f"{key}: empty list of values")
        return v

    def points(self) -> int:
        return math.prod(len(v) for v in self.grid.values()) if self.grid else 1


class BenchConfig(Section):
    dataset: str = Field(..., description="Name of the table (results.json key).")
    note: str = Field("", description="Shown under the table's title (e.g. what CPU time allowed).")
    config: str | None = Field(..., description="Pipeline config (relative to this file); null: the defaults "
                                                "with `sets`.")
    sets: list[str] = Field(default_factory=list, description="`--set` overrides of the pipeline config (LLM "
                                                              "stage settings).")
    run_dir: str | None = Field(None, description="Run directory (null: benchmarks/.work/verdict-<dataset>).")
    stages: list[str] = Field(["prepare"], description="Pipeline stages run before the rows, in order.")
    keep_results: bool = Field(False, description="Keep every finished CF run's results (not its weights), sweep "
                                                  "choice and row record in benchmarks/artifacts/<dataset>/results/, "
                                                  "so that the table resumes on a fresh machine once committed.")
    seeds: list[int] = Field([1, 2, 3, 4, 5], description="CF seeds per chosen configuration.")
    metric: str = Field("ndcg@20", description="Selection metric (validation only).")
    report_metrics: list[str] = Field(["ndcg@20", "recall@20"], description="Test metrics of the table.")
    grid_points: int = Field(4, ge=1, description="Points of every row's sweep (rows without a grid: 1).")
    train: dict[str, Any] = Field(default_factory=dict, description="CF settings every row shares.")
    sweep: SweepSettings = Field(default_factory=SweepSettings)
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings)
    diagnostics: DiagnosticSettings = Field(default_factory=DiagnosticSettings)
    draws: list[int] = Field(
        default_factory=list, description="Further draws of the LLM stages: for each S, `draw_stages` run again "
        "with the pipeline's `llm_seed: S` in RUN/draws/S (the other stages' outputs copied from the table's run), "
        "and every row that reads their outputs (and has not `redraw: false`) runs again, at the setting chosen on "
        "the first draw, over the same CF seeds: rows `<row>@S` of the table.")
    draw_stages: list[str] = Field(["teacher", "finetune", "hardneg"], description="The stages a draw redoes.")
    draw_sets: list[str] = Field(default_factory=list, description="`--set` overrides for the draws only (e.g. "
                                                                   "hardneg.base_control=false).")
    headline: str = Field("hnlmrec", description="The row the headline asks about.")
    headline_controls: list[str] = Field(["random", "teacher"], description="Controls the headline row must "
                                                                            "beat too.")
    rows: dict[str, RowConfig] = Field(..., description="Rows, in table order.")

    @model_validator(mode="after")
    def _check(self) -> "BenchConfig":
        if not self.seeds:
            raise ValueError("seeds: at least one")
        names = list(self.rows)
        for name, row in self.rows.items():
            if row.setting_from is not None:
                src = self.rows.get(row.setting_from)
                if src is None or not src.grid or names.index(row.setting_from) > names.index(name) or row.grid:
                    raise ValueError(f"rows.{name}.setting_from: {row.setting_from!r} must be an earlier row with a "
                                     "grid, and this row has none of its own")
            if row.grid and row.points() != self.grid_points:
                raise ValueError(f"rows.{name}.grid: {row.points()} points, but every sweep has grid_points = "
                                 f"{self.grid_points} (equal validation budgets)")
        ev = self.train.get("eval", {}).get("every", 1)
        ck = self.train.get("checkpoint_every", 1)
        if any(r.grid for r in self.rows.values()) and ev % ck:
            # hnl_ray.tune's trial reports the checkpoint written at each validation epoch
            raise ValueError(f"train.checkpoint_every ({ck}) must divide train.eval.every ({ev}) for the sweeps")
        if not any(r.kind == "classic" for r in self.rows.values()):
            raise ValueError("rows: at least one `classic` row (the reference of every interval)")
        if bad := [n for n in self.rows if "@" in n]:
            raise ValueError(f"rows: {', '.join(bad)}: `@` marks a row's other draws (hnlmrec@2)")
        if self.draws and (bad := [s for s in self.draw_stages if s not in self.stages]):
            raise ValueError(f"draw_stages: {', '.join(bad)} not in stages ({', '.join(self.stages)})")
        if len(set(self.draws)) != len(self.draws):
            raise ValueError(f"draws: {self.draws} repeats a seed")
        if self.metric not in self.report_metrics:
            raise ValueError(f"metric {self.metric} must be one of report_metrics")
        return self


def load_bench(path: str | Path) -> tuple[BenchConfig, Path]:
    """Read and validate a bench config (YAML with `extends:`), naming the file and dotted keys at fault."""
    path = Path(path)
    raw = _read_yaml(path)
    try:
        bench = BenchConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}"
                 + ("" if isinstance(e.get("input"), dict) or e["type"] == "missing" else f" (got {e['input']!r})")
                 for e in exc.errors()]
        raise ConfigError(f"invalid bench config {path}:\n  " + "\n  ".join(lines)) from None
    try:
        TrainConfig.model_validate(bench.train)
    except ValidationError as exc:
        raise ConfigError(f"invalid bench config {path}: train: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    return bench, path.resolve().parent


def missing_need(need: str) -> str | None:
    """None when `train.<key>=<value>` is accepted by this code's TrainConfig, else what is missing."""
    key, _, value = need.partition("=")
    model: Any = TrainConfig
    for part in key.split("."):
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return f"train.{key} does not exist"
        model = field.annotation
    if value:
        allowed = [str(a) for a in typing.get_args(model)] if typing.get_origin(model) is Literal else None
        if allowed is not None and value not in allowed:
            return f"train.{key}={value} is not implemented (known: {', '.join(allowed)})"
    return None


DRAW = "@"  # `<row>@<S>`: the row on draw S of the LLM stages


def base_row(name: str) -> str:
    """The bench row of a table row (`hnlmrec@2` -> `hnlmrec`)."""
    return name.split(DRAW, 1)[0]


def draw_folder(name: str) -> str:
    """The run directory, relative to the table's, that a table row's CF runs and stage outputs are in."""
    return f"draws/{name.split(DRAW, 1)[1]}" if DRAW in name else ""


def redrawn_rows(bench: BenchConfig) -> list[str]:
    """Rows that read an output of a redrawn stage, less those marked `redraw: false` (they run again on every
    draw)."""
    from hnl_ray.stages import get

    folders = {f for s in bench.draw_stages for f in get(s).writes}
    return [n for n, r in bench.rows.items() if r.redraw and folders & set(r.needs_stages)]


def row_train(bench: BenchConfig, row: RowConfig, params: dict[str, Any] | None = None) -> TrainConfig:
    """The row's full CF settings: shared ⊕ row ⊕ chosen grid point. A bad key is an error naming the row."""
    merged = deep_merge(deep_merge(bench.train, row.train), nest(params or {}))
    merged.pop("runs", None)
    return TrainConfig.model_validate(merged)

