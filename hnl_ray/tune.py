"""Ray Tune sweeps over CF training: sampler mixing (alpha, semantic vs sampled vs DNS negatives, the contrastive
weight) and the usual CF knobs, with grid / random / Optuna search, ASHA on the validation metric, per-trial
resources, trial checkpoints and experiment resume.

Outputs under <run-dir>/tune/<name>/: results.csv and results.md, alpha.png (validation metric against alpha per
sampler), best_config.yaml, and best_test.json: the test metrics of the best configuration only, evaluated once
after the sweep.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
from typing import Any

import numpy as np
import yaml

from .config import Config
from .config.cf import TrainConfig
from .config.loader import deep_merge
from .config.tune import TuneConfig
from . import artifacts as A
from .artifacts import Artifacts
from .errors import HnlRayError, StageError
from .storage import RunDir

log = logging.getLogger(__name__)


class SweepSpaceError(HnlRayError, ValueError):
    pass


def _nest(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def base_train(cfg: Config) -> dict:
    t = cfg.tune
    if t.base_run is not None and t.base_run not in cfg.train.runs:
        raise SweepSpaceError(f"tune.base_run: {t.base_run!r} is not a run of train.runs "
                              f"({', '.join(cfg.train.runs) or 'none'})")
    tcfg = cfg.train.for_run(t.base_run) if t.base_run else cfg.train
    return tcfg.model_dump(mode="json", exclude={"runs"})


def check_space(cfg: Config) -> None:
    """Every swept key must exist under `train` and every value must be valid there."""
    base = base_train(cfg)
    for key, dom in cfg.tune.space.items():
        kind, values = next(iter(dom.items()))
        samples = values if kind in ("grid", "choice") else values[:1]
        node, parts = base, key.split(".")
        for k, p in enumerate(parts):
            if not isinstance(node, dict) or p not in node:
                where = ".".join(parts[:k]) or "train"
                allowed = ", ".join(sorted(node)) if isinstance(node, dict) else "(not a section)"
                raise SweepSpaceError(f"tune.space.{key}: unknown parameter {'train.' + key!r} "
                                      f"({p!r} is not a key of {where}; allowed: {allowed})")
            node = node[p]
        for value in samples:
            try:
                TrainConfig.model_validate(deep_merge(base, _nest({key: value})))
            except Exception as exc:  # pydantic's message names the field
                raise SweepSpaceError(f"tune.space.{key}: value {value!r} is not valid: {exc}") from None


def param_space(t: TuneConfig) -> dict:
    from ray import tune

    make = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda v: tune.uniform(*v),
            "loguniform": lambda v: tune.loguniform(*v), "randint": lambda v: tune.randint(*v)}
    out = {}
    for key, dom in t.space.items():
        kind, values = next(iter(dom.items()))
        if t.search == "optuna" and kind == "grid":
            kind = "choice"  # Optuna samples; a grid becomes a categorical choice
        out[key] = make[kind](values)
    return out


def sweep_definition(cfg: Config, base: dict) -> dict:
    """What a sweep is: restoring an experiment is only right when all of this is unchanged."""
    t = cfg.tune
    return {"space": t.space, "search": t.search, "num_samples": t.num_samples, "metric": t.metric,
            "scheduler": t.scheduler, "grace_period": t.grace_period, "reduction_factor": t.reduction_factor,
            "base": base, "seed": cfg.seed}


def same_sweep(art: Artifacts, sweep: str, definition: dict) -> None:
    """Raise unless the experiment of `sweep` was started with this very sweep definition."""
    text = art.tune_file(sweep, "sweep.json")
    before = json.loads(text) if text else None
    if before != json.loads(json.dumps(definition)):
        changed = sorted(k for k in definition if before is None or before.get(k) != definition[k])
        where = art.tune_dir(sweep)
        raise SweepSpaceError(
            f"tune: {where} holds a sweep of this name with other settings (changed: "
            f"{', '.join(changed) if before else 'unknown, it has no sweep.json'}). Give the edited sweep a new "
            f"tune.name, or delete {where} to start it again")


def asha_max_t(cfg: Config, base: dict) -> int:
    """ASHA's last rung: the epochs a trial can run, i.e. the base run's `optim.epochs` (or the largest swept)."""
    dom = cfg.tune.space.get("optim.epochs")
    if dom:
        kind, values = next(iter(dom.items()))
        return int(max(values))
    return int(base["optim"]["epochs"])


def _optuna(metric: str, seed: int):
    try:
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=metric, mode="max", seed=seed)
    except (ImportError, AssertionError) as exc:  # Ray asserts that optuna is importable
        raise SweepSpaceError("tune.search: optuna needs the package optuna: pip install 'hnl-ray[tune]' (or "
                              "use tune.search: grid / random)") from exc


def _trial(params: dict, *, base: dict, run: RunDir, seed: int, metric: str) -> None:
    """One Tune trial: CF training reporting the validation metric after each evaluation.

    Every report carries a Tune checkpoint with the trainer's resumable state and the best weights so far: Ray
    uploads it to the sweep's storage (the run directory, also on s3://), a restarted trial continues from it on
    any node, and the sweep's best trial is tested from its last checkpoint, never from a node-local folder."""
    import ray.tune
    from ray.tune import Checkpoint

    from .cf.trainer import BEST
    from .stages.train import build_run

    tcfg = TrainConfig.model_validate(deep_merge(base, _nest(params)))
    # Each report carries the trainer's checkpoint of that epoch: it must be written at every evaluation.
    tcfg = tcfg.model_copy(update={"checkpoint_every": tcfg.eval.every})
    art = Artifacts(run)
    data = art.cf_data()
    out = RunDir(ray.tune.get_context().get_trial_dir())  # node-local scratch of this trial's CF run
    ckpt = ray.tune.get_checkpoint()
    if ckpt is not None:  # a restarted or resumed trial: the trainer continues from its checkpoint
        with ckpt.as_directory() as d:
            restore_trial(d, out)
    trainer = build_run(tcfg, art, data, out, "trial", seed, progress=False)

    key = metric.removeprefix("valid_")  # reported as valid_<metric>; the trainer's dicts say <metric>

    def report(epoch: int, valid: dict, folder: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            for f in ("state.json", "last.safetensors"):
                shutil.copy(out.path(folder, f), os.path.join(d, f))
            if out.exists(BEST):
                shutil.copy(out.path(BEST), os.path.join(d, BEST))
            ray.tune.report({metric: valid[key], "epoch": epoch, "finished": 0},
                            checkpoint=Checkpoint.from_directory(d))

    res = trainer.fit(on_eval=report, evaluate_test=False)
    ray.tune.report({metric: res["valid"][key], "epoch": res["epochs_run"], "finished": 1})


def restore_trial(ckpt_dir: str, out: RunDir) -> None:
    """Put a Tune checkpoint's files where the trainer looks: its resumable state and the best weights so far."""
    from .cf.trainer import BEST, CHECKPOINT

    dst = out.path(CHECKPOINT)
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    for f in os.listdir(ckpt_dir):
        shutil.copy(os.path.join(ckpt_dir, f), out.path(BEST) if f == BEST else os.path.join(dst, f))


def run_tune(cfg: Config, run: RunDir | None = None) -> dict:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from .ray_utils import init_ray

    art = Artifacts(run or cfg.resolved_run_dir())
    t = cfg.tune
    if not t.space:
        raise SweepSpaceError("tune.space is empty: name at least one parameter to sweep (configs/tune/*.yaml)")
    check_space(cfg)
    art.need(A.PREPARED, "prepared data")
    init_ray(cfg)
    base = base_train(cfg)
    base["threads"] = base.get("threads") or max(1, int(t.cpus_per_trial))
    metric = f"valid_{t.metric}"
    storage, fs = art.tune_storage(t.name)
    fs = None if art.run.is_local else fs
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=base, run=art.run, seed=cfg.seed, metric=metric),
        {"cpu": t.cpus_per_trial, "gpu": t.gpus_per_trial})
    path = f"{storage}/ray"
    definition = sweep_definition(cfg, base)
    if tune.Tuner.can_restore(path, storage_filesystem=fs):
        same_sweep(art, t.name, definition)
        log.info("tune: resuming the experiment in %s/ray", art.tune_dir(t.name))
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True, storage_filesystem=fs)
    else:
        search_alg = _optuna(metric, cfg.seed) if t.search == "optuna" else None
        scheduler = (ASHAScheduler(time_attr="epoch", metric=metric, mode="max", max_t=asha_max_t(cfg, base),
                                   grace_period=t.grace_period, reduction_factor=t.reduction_factor)
                     if t.scheduler == "asha" else None)
        tuner = tune.Tuner(
            trainable, param_space=param_space(t),
            tune_config=tune.TuneConfig(num_samples=t.num_samples, max_concurrent_trials=t.max_concurrent_trials,
                                        scheduler=scheduler, search_alg=search_alg,
                                        **({} if scheduler else {"metric": metric, "mode": "max"})),
            run_config=tune.RunConfig(storage_path=storage, storage_filesystem=fs, name="ray", verbose=0,
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
        art.write_tune_file(t.name, "sweep.json", definition)
    grid = tuner.fit()
    return summarise(cfg, art, grid, metric)


def summarise(cfg: Config, art: Artifacts, grid, metric: str) -> dict:
    """Results table, alpha plot, best config, and the best trial's test metrics (evaluated once)."""
    t = cfg.tune
    rows = []
    for r in grid:
        if r.metrics is None:
            continue
        hist = r.metrics_dataframe
        best_valid = float(hist[metric].max()) if hist is not None and metric in hist else float("nan")
        rows.append({**{k: r.config[k] for k in t.space}, "best_valid": best_valid,
                     "epochs": int(r.metrics.get("epoch", 0)), "finished": int(r.metrics.get("finished", 0)),
                     "trial_dir": r.path, "error": str(r.error)[:200] if r.error else None,
                     "checkpoint": r.checkpoint})
    if not rows:
        raise StageError("the sweep produced no results")
    if all(x["error"] for x in rows):
        raise StageError(f"every trial of the sweep failed; the first error: {rows[0]['error']} "
                           f"(full traceback in {rows[0]['trial_dir']}/error.txt)")
    rows.sort(key=lambda x: -np.nan_to_num(x["best_valid"], nan=-1))
    stopped = sum(1 for x in rows if not x["finished"] and not x["error"])
    art.write_tune_file(t.name, "results.csv", _csv([{k: v for k, v in x.items() if k != "checkpoint"}
                                                     for x in rows]))
    head = [*t.space, f"best valid {t.metric}", "epochs", "stopped early by ASHA"]
    md = [f"{len(rows)} trials, {stopped} stopped early by ASHA. Ranked by validation {t.metric}.", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for x in rows:
        md.append("| " + " | ".join([*(str(x[k]) for k in t.space), f"{x['best_valid']:.4f}", str(x["epochs"]),
                                     "failed" if x["error"] else "yes" if not x["finished"] else "no"]) + " |")
    art.write_tune_file(t.name, "results.md", "\n".join(md) + "\n")
    png = alpha_plot(rows, t)
    if png:
        art.write_tune_file(t.name, "alpha.png", png)
    best = rows[0]
    best_train = deep_merge(base_train(cfg), _nest({k: best[k] for k in t.space}))
    full = cfg.model_dump(mode="json")
    full["train"] = {**best_train, "runs": {}}
    full.pop("tune", None)
    art.write_tune_file(t.name, "best_config.yaml", yaml.safe_dump(full, sort_keys=False))
    test = best_test(art, TrainConfig.model_validate(best_train), best)
    out = {"metric": t.metric, "params": {k: best[k] for k in t.space}, "best_valid": best["best_valid"],
           "test": test, "trials": len(rows), "stopped_early": stopped}
    art.write_tune_file(t.name, "best_test.json", out)
    return out


def best_test(art: Artifacts, tcfg: TrainConfig, best: dict) -> dict:
    """Load the best trial's chosen weights (from its last Tune checkpoint, in the sweep's storage) and evaluate
    the test split, once."""
    import torch

    from .cf.evaluate import Evaluator
    from .cf.trainer import BEST
    from .stages.train import load_trained

    data = art.cf_data()
    if best["checkpoint"] is None:
        raise StageError(f"the best trial ({best['trial_dir']}) reported no checkpoint: nothing to test")
    with best["checkpoint"].as_directory() as d:
        if not os.path.exists(os.path.join(d, BEST)):
            raise StageError(f"the best trial's last checkpoint ({best['checkpoint'].path}) has no {BEST}")
        model = load_trained(RunDir(d), tcfg, data)
    with torch.no_grad():
        emb = model()
    res = Evaluator(data, "test", tcfg.eval.ks, tcfg.eval.batch_users).evaluate(emb.users, emb.items)
    return res.metrics


def alpha_plot(rows: list[dict], t: TuneConfig) -> bytes | None:
    key = next((k for k in t.space if k.endswith("alpha")), None)
    if key is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = next((k for k in t.space if k.endswith("sampler.name") or k.endswith("sampler.base")), None)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    groups = sorted({str(r.get(by)) for r in rows}) if by else ["all"]
    for g in groups:
        pts = sorted((r[key], r["best_valid"]) for r in rows if (not by or str(r[by]) == g))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=g)
    ax.set(xlabel=key, ylabel=f"best valid {t.metric}", title="validation metric against alpha")
    if any(r[key] > 0 for r in rows):
        ax.set_xscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _csv(rows: list[dict]) -> str:
    import csv

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
