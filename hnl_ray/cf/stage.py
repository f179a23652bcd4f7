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

OUTPUTS = ["metrics.json", "log.jsonl", "learning_curve.png", "per_user_test.parquet", "ranks_test.parquet",
           "best.safetensors"]


def run_fingerprint(cfg: Config, tcfg: TrainConfig, run: RunDir, extra_inputs: dict | None = None) -> tuple:
    seed = tcfg.seed if tcfg.seed is not None else cfg.seed
    part = {"train": tcfg.model_dump(mode="json", exclude={"runs"}), "seed": seed}
    if tcfg.sampler.name not in ("semantic", "semantic-item"):
        # Unused by classic samplers: editing it must not retrain them, nor the teacher and the LLM stages after it.
        del part["train"]["sampler"]["semantic"]
    prep = manifest.load(run, "prepared") or {}
    inputs = {"prepared": prep.get("fingerprint", "missing"), **(extra_inputs or {})}
    return manifest.fingerprint(part, inputs), part, inputs, seed


def _semantic(tcfg: TrainConfig, run: RunDir, data: CFData):
    if tcfg.sampler.name not in ("semantic", "semantic-item"):
        return None
    from .models import output_dim
    from .semantic import build_semantic
    from .trainer import pick_device

    return build_semantic(tcfg, run, data, output_dim(tcfg.model), pick_device(tcfg.device))


def _trainer_kwargs(semantic) -> dict:
    if semantic is None:
        return {}
    return dict(sampler_factory=semantic.sampler_factory, extra_modules=semantic.extra_modules,
                extra_losses=semantic.extra_losses, epoch_hooks=semantic.epoch_hooks)


def semantic_parts(tcfg: TrainConfig, run: RunDir, data: CFData) -> dict:
    """Trainer keyword arguments for semantic samplers (adapter, mixing sampler, contrastive term); {} otherwise."""
    return _trainer_kwargs(_semantic(tcfg, run, data))


def train_one(cfg: Config, run: RunDir, name: str, data: CFData | None = None, force: bool = False,
              progress: bool = True, trainer_hook: Callable[[Trainer], None] | None = None,
              extra_inputs: dict | None = None, tcfg: TrainConfig | None = None) -> dict:
    """Train (or skip, or resume) one named run; returns its metrics.json."""
    tcfg = tcfg or cfg.train.for_run(name)
    data = data or CFData.from_run(run)
    semantic = _semantic(tcfg, run, data)
    if semantic is not None:
        extra_inputs = {**(extra_inputs or {}), **semantic.inputs}
    fp, part, inputs, seed = run_fingerprint(cfg, tcfg, run, extra_inputs)
    folder = f"cf/{name}"
    if not force and manifest.is_fresh(run, folder, fp):
        log.info("train %s: up to date, skipped", name)
        return {**run.read_json(f"{folder}/metrics.json"), "skipped": True}
    started = run.read_json(f"{folder}/run.json") if run.exists(folder, "run.json") else None
    if force or (started is not None and started.get("fingerprint") != fp):
        run.delete(folder)  # a changed config never resumes an old checkpoint
    run.write_json(f"{folder}/run.json", {"fingerprint": fp})
    trainer = Trainer(tcfg, data, run, name, seed, progress=progress, **_trainer_kwargs(semantic))
    if trainer_hook is not None:
        trainer_hook(trainer)
    timings = manifest.Timings()
    with timings("fit"):
        result = trainer.fit()
    if semantic is not None:
        result["semantic"] = semantic.describe
        run.write_json(f"{folder}/metrics.json", result)
    manifest.write(run, folder, stage="train", fp=fp, config_part=part, inputs=inputs, outputs=OUTPUTS,
                   counts={"best_epoch": result["best_epoch"], "epochs_run": result["epochs_run"]},
                   timings=dict(timings))
    return result


def load_trained(run: RunDir, name: str, tcfg: TrainConfig, data: CFData):
    """The chosen (best-validation) model of a finished CF run, in eval mode on CPU."""
    from . import checkpoint
    from .models import build_model

    model = build_model(tcfg.model, data.n_users, data.n_items, *data.train)
    tensors = checkpoint.read_tensors(run, f"cf/{name}/best.safetensors")
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")},
                          strict=False)
    return model.eval()


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
