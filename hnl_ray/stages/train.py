"""The `train` stage: one CF run per configured name under <run-dir>/cf/<name>/, each skipped when its
manifest matches and resumed from its checkpoint when it was interrupted.

`build_run` is the one place a CF run is assembled (model, sampler with its semantic parts loaded from the
run's artifacts, trainer): the train and teacher stages and every Ray Tune trial use it.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import numpy as np
import pyarrow.compute as pc

from .. import artifacts as A
from .. import manifest
from ..arrays import vectors
from ..artifacts import Artifacts
from ..cf.data import CFData
from ..cf.semantic import SemanticArrays, SemanticInputError, SemanticParts
from ..cf.trainer import METRICS, RUN_FILES, Trainer
from ..config import Config
from ..config.cf import TrainConfig
from ..errors import UsageError
from ..storage import RunDir
from . import Context, Output, step

log = logging.getLogger(__name__)

SEMANTIC = ("semantic", "semantic-item", "hnlmrec")


def run_fingerprint(seed: int, tcfg: TrainConfig, art: Artifacts, extra_inputs: dict | None = None) -> tuple:
    seed = tcfg.seed if tcfg.seed is not None else seed
    part = {"train": tcfg.model_dump(mode="json", exclude={"runs"}), "seed": seed}
    # Sub-sections a sampler does not read: editing them must not retrain its runs, nor the teacher and the LLM
    # stages after it.
    for section in ("semantic", "ahns", "hnlmrec"):
        if section not in tcfg.sampler.sections_used():
            del part["train"]["sampler"][section]
    inputs = {"prepared": art.fingerprint(A.PREPARED) or "missing", **(extra_inputs or {})}
    return part, inputs, seed


def method1_arrays(art: Artifacts) -> SemanticArrays:
    """Method 1's embedded, grounded negatives (false negatives left out)."""
    where = art.negative_embeddings_uri()
    t = art.negative_embeddings()
    if t is None:
        raise SemanticInputError(f"{where} not found: run `hnl-ray negatives` and `hnl-ray embed` first "
                                 "(method-1 semantic negatives)")
    if t.num_rows == 0:
        raise SemanticInputError(f"{where} holds no negatives (all generations failed?)")
    t = t.filter(pc.invert(t["false_negative"]))
    g = t["grounded"].combine_chunks()
    return SemanticArrays("method1", where, t["user_idx"].to_numpy().astype(np.int64),
                          t["item_idx"].to_numpy().astype(np.int64), vectors(t["vector"]),
                          g.flatten().to_numpy().reshape(len(t), g.type.list_size))


def _teacher_targets(art: Artifacts, why: str) -> tuple[tuple, str]:
    where = art.teacher_pairs_uri()
    p = art.teacher_pairs(columns=["user_idx", "item_idx", "neg_item_idx"])
    if p is None:
        raise SemanticInputError(f"{where} not found: {why}")
    return tuple(p[c].to_numpy().astype(np.int64) for c in ("user_idx", "item_idx", "neg_item_idx")), where


def semantic_arrays(tcfg: TrainConfig, art: Artifacts) -> tuple[SemanticArrays, dict]:
    """The artifacts a semantic sampler reads, as arrays, and the fingerprints of those artifacts.
    `semantic.source`: negatives (method 1), hardneg, or the controls base (hardneg-base/), shuffled and random
    (hardneg/'s pairs; the core permutes or replaces the vectors) and teacher (the teacher's targets only)."""
    sc = tcfg.sampler.semantic
    if tcfg.sampler.name == "semantic-item" or sc.source == "negatives":
        arrays = method1_arrays(art)
        if sc.adapter_objective == "item":
            arrays.catalogue, arrays.catalogue_where = _catalogue(art, A.EMBEDDINGS)
        return arrays, {"embeddings": art.fingerprint(A.EMBEDDINGS)}
    if sc.source == "teacher":
        targets, where = _teacher_targets(art, "train.sampler.semantic.source: 'teacher' needs it: run "
                                               "`hnl-ray teacher` first, or choose another source")
        empty = np.zeros(0, np.int64)
        return (SemanticArrays("teacher", where, empty, empty, targets=targets, targets_where=where),
                {"teacher": art.fingerprint(A.TEACHER)})
    folder = A.HARDNEG_BASE if sc.source == "base" else A.HARDNEG
    where = art.uri(folder)
    t = art.hardneg_vectors(columns=["user_idx", "item_idx", "vector"], folder=folder)
    if t is None:
        raise SemanticInputError(f"train.sampler.semantic.source: {sc.source!r} needs {where}, which is missing: "
                                 "run `hnl-ray hardneg` first, or choose another source")
    arrays = SemanticArrays("hardneg", where, t["user_idx"].to_numpy().astype(np.int64),
                            t["item_idx"].to_numpy().astype(np.int64), vectors(t["vector"]))
    inputs = {folder: art.fingerprint(folder)}
    if sc.adapter_objective == "align":
        arrays.targets, arrays.targets_where = _teacher_targets(
            art, "the `align` adapter objective learns from the teacher's pairs; run `hnl-ray teacher`, or set "
                 "train.sampler.semantic.adapter_objective: joint")
        inputs["teacher"] = art.fingerprint(A.TEACHER)
    if sc.adapter_objective == "item":
        arrays.catalogue, arrays.catalogue_where = _catalogue(art, folder)
    return arrays, inputs


def _catalogue(art: Artifacts, folder: str) -> tuple[np.ndarray, str]:
    """The items in the pair vectors' space, for `adapter_objective: item`: (n_items, d), row = item_idx."""
    t = art.item_vector_table() if folder == A.EMBEDDINGS else art.hardneg_items(folder)
    where = art.items_uri(folder)
    if t is None:
        raise SemanticInputError(f"train.sampler.semantic.adapter_objective: item needs the catalogue in the "
                                 f"model's space {where}, which is missing: run `hnl-ray hardneg` (`hnl-ray embed` "
                                 "for method 1) first, or choose another objective")
    v = vectors(t["vector"]).astype(np.float32)
    n = int(t["item_idx"].to_numpy().max()) + 1 if t.num_rows else 0
    out = np.zeros((n, v.shape[1]), np.float32)
    out[t["item_idx"].to_numpy()] = v
    return out / np.linalg.norm(out, axis=1, keepdims=True).clip(min=1e-12), where


def semantic_parts(tcfg: TrainConfig, art: Artifacts, data: CFData, seed: int = 0
                   ) -> tuple[SemanticParts | None, dict]:
    """The semantic sampler's parts (adapter, mixing sampler, extra losses; the hnlmrec sampler's candidates)
    and its inputs' fingerprints; (None, {}) for classic samplers."""
    if tcfg.sampler.name not in SEMANTIC:
        return None, {}
    if tcfg.sampler.name == "hnlmrec":
        from .candidates import hnlmrec_parts

        return hnlmrec_parts(tcfg, art, data, seed)
    from ..cf.models import output_dim
    from ..cf.semantic import build_semantic
    from ..cf.trainer import pick_device

    arrays, inputs = semantic_arrays(tcfg, art)
    return build_semantic(tcfg, arrays, data, output_dim(tcfg.model), pick_device(tcfg.device), seed), inputs


def build_run(tcfg: TrainConfig, art: Artifacts, data: CFData, out: RunDir, name: str, seed: int,
              progress: bool = True, semantic: SemanticParts | None = None) -> Trainer:
    """A CF run ready to fit: model, sampler (with its semantic parts) and trainer writing into `out`."""
    if semantic is None:
        semantic, _ = semantic_parts(tcfg, art, data, seed)
    return Trainer(tcfg, data, out, name, seed, progress=progress,
                   **(semantic.trainer_kwargs() if semantic is not None else {}))


def train_one(cfg: Config, run: RunDir | Artifacts, name: str, data: CFData | None = None, force: bool = False,
              progress: bool = True, trainer_hook: Callable[[Trainer], None] | None = None,
              extra_inputs: dict | None = None, tcfg: TrainConfig | None = None,
              results_kept: tuple[str, ...] = ()) -> dict:
    """Train (or skip, or resume) one named run; returns its metrics.json.

    `results_kept` (a benchmark's stored results): files that, with the manifest and metrics.json, stand for a
    finished run of the same fingerprint whose weights were not kept; such a run is reported, not retrained."""
    art = run if isinstance(run, Artifacts) else Artifacts(run)
    tcfg = tcfg or cfg.train.for_run(name)
    data = data or art.cf_data()
    semantic, sem_inputs = semantic_parts(tcfg, art, data, tcfg.seed if tcfg.seed is not None else cfg.seed)
    part, inputs, seed = run_fingerprint(cfg.seed, tcfg, art, {**(extra_inputs or {}), **sem_inputs})
    out = art.cf_run(name)
    folder = art.cf_folder(name)
    if results_kept and not force and (m := manifest.load(art.run, folder)) is not None \
            and m.get("fingerprint") == manifest.fingerprint(part, inputs) \
            and all(art.run.exists(folder, f) for f in (METRICS, *results_kept)):
        return {**out.read_json(METRICS), "skipped": True}

    def work(fp: str) -> Output:
        trainer = build_run(tcfg, art, data, out, name, seed, progress, semantic)
        if trainer_hook is not None:
            trainer_hook(trainer)
        timings = manifest.Timings()
        with timings("fit"):
            result = trainer.fit()
        if semantic is not None:
            result["semantic"] = {**semantic.describe,
                                  **(semantic.after_fit(trainer) if semantic.after_fit else {})}
            out.write_json(METRICS, result)
        return Output(counts={"best_epoch": result["best_epoch"], "epochs_run": result["epochs_run"]},
                      outputs=RUN_FILES, timings=timings, result=result)

    # A run folder resumes its checkpoint only under the same fingerprint: a changed config starts afresh.
    ctx = Context(cfg, art, force=force, progress=progress)
    return step(ctx, art.cf_folder(name), part, inputs, work, label="train", resumable=True,
                cached=lambda: out.read_json(METRICS))


def load_trained(out: RunDir, tcfg: TrainConfig, data: CFData):
    """The chosen (best-validation) model of a finished CF run (its folder `out`), in eval mode on CPU."""
    from ..cf import checkpoint
    from ..cf.models import build_model
    from ..cf.trainer import BEST

    model = build_model(tcfg.model, data.n_users, data.n_items, *data.train)
    tensors = checkpoint.read_tensors(out, BEST)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")},
                          strict=False)
    return model.eval()


def run(ctx: Context) -> dict[str, dict]:
    cfg = ctx.cfg
    wanted = ctx.runs or cfg.train.run_names()
    unknown = [n for n in wanted if n not in cfg.train.run_names()]
    if unknown:
        raise UsageError(f"unknown run(s) {', '.join(unknown)}; configured in train.runs: "
                         f"{', '.join(cfg.train.run_names())}")
    if _on_gpu_workers(ctx):
        return _train_on_gpu_workers(ctx, wanted)
    data = ctx.art.cf_data()
    return {name: train_one(cfg, ctx.art, name, data=data, force=ctx.force, progress=ctx.progress)
            for name in wanted}


def _on_gpu_workers(ctx: Context) -> bool:
    """`train.device: cuda` from a driver without a GPU (a cluster's CPU head, in a Ray job): each run becomes a
    Ray task on a GPU worker instead of failing here (after the autoscaler has provided one)."""
    import torch

    if ctx.cfg.train.device != "cuda" or torch.cuda.is_available():
        return False
    if not (ctx.cfg.ray.address or os.environ.get("RAY_ADDRESS")):
        return False
    from ..ray_utils import ensure_resources

    ctx.ray()
    # GPU node types may start at zero nodes: the autoscaler adds one, or this fails naming the GPU
    ensure_resources([{"GPU": 1, "CPU": 1}], "train.device: cuda (each CF run a Ray task on a GPU worker)")
    return True


def _train_on_gpu_workers(ctx: Context, names: list[str]) -> dict[str, dict]:
    ray = ctx.ray()

    @ray.remote(num_gpus=1, num_cpus=1)
    def train_remote(cfg_json: str, art: Artifacts, name: str, force: bool) -> dict:
        from hnl_ray.config import Config

        return train_one(Config.model_validate_json(cfg_json), art, name, force=force, progress=False)

    refs = [train_remote.remote(ctx.cfg.model_dump_json(), ctx.art, n, ctx.force) for n in names]
    return dict(zip(names, ray.get(refs)))
