"""The `train` stage: one CF run per configured name under <run-dir>/cf/<name>/, each skipped when its
manifest matches and resumed from its checkpoint when it was interrupted."""

from __future__ import annotations

import logging
from typing import Callable

from .. import manifest
from ..config import Config
from ..config.cf import TrainConfig
from ..storage import RunDir
from .data import CFData
from .trainer import Trainer

log = logging.getLogger(__name__)

OUTPUTS = ["metrics.json", "log.jsonl", "learning_curve.png", "per_user_test.parquet", "best.safetensors"]


def run_fingerprint(cfg: Config, tcfg: TrainConfig, run: RunDir, extra_inputs: dict | None = None) -> tuple:
    seed = tcfg.seed if tcfg.seed is not None else cfg.seed
    part = {"train": tcfg.model_dump(mode="json", exclude={"runs"}), "seed": seed}
    prep = manifest.load(run, "prepared") or {}
    inputs = {"prepared": prep.get("fingerprint", "missing"), **(extra_inputs or {})}
    return manifest.fingerprint(part, inputs), part, inputs, seed


def train_one(cfg: Config, run: RunDir, name: str, data: CFData | None = None, force: bool = False,
              progress: bool = True, trainer_hook: Callable[[Trainer], None] | None = None,
              extra_inputs: dict | None = None, tcfg: TrainConfig | None = None) -> dict:
    """Train (or skip, or resume) one named run; returns its metrics.json."""
    tcfg = tcfg or cfg.train.for_run(name)
    fp, part, inputs, seed = run_fingerprint(cfg, tcfg, run, extra_inputs)
    folder = f"cf/{name}"
    if not force and manifest.is_fresh(run, folder, fp):
        log.info("train %s: up to date, skipped", name)
        return {**run.read_json(f"{folder}/metrics.json"), "skipped": True}
    started = run.read_json(f"{folder}/run.json") if run.exists(folder, "run.json") else None
    if force or (started is not None and started.get("fingerprint") != fp):
        run.delete(folder)  # a changed config never resumes an old checkpoint
    run.write_json(f"{folder}/run.json", {"fingerprint": fp})
    data = data or CFData.from_run(run)
    trainer = Trainer(tcfg, data, run, name, seed, progress=progress)
    if trainer_hook is not None:
        trainer_hook(trainer)
    timings = manifest.Timings()
    with timings("fit"):
        result = trainer.fit()
    manifest.write(run, folder, stage="train", fp=fp, config_part=part, inputs=inputs, outputs=OUTPUTS,
                   counts={"best_epoch": result["best_epoch"], "epochs_run": result["epochs_run"]},
                   timings=dict(timings))
    return result


def train(cfg: Config, run: RunDir | None = None, names: list[str] | None = None, force: bool = False,
          progress: bool = True) -> dict[str, dict]:
    run = run or RunDir(cfg.resolved_run_dir())
    wanted = names or cfg.train.run_names()
    unknown = [n for n in wanted if n not in cfg.train.run_names()]
    if unknown:
        raise ValueError(f"unknown run(s) {', '.join(unknown)}; configured in train.runs: "
                         f"{', '.join(cfg.train.run_names())}")
    data = CFData.from_run(run)
    return {name: train_one(cfg, run, name, data=data, force=force, progress=progress) for name in wanted}
