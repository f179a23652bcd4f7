"""The stage registry: every stage of the pipeline, in order, as one `Stage` each.

The pipeline's order, the CLI's stage subcommands, the report's stage table and the benchmarks' stage lists are
all read from `STAGES`. A stage is a module with `run(ctx: Context) -> dict` (its counts, or its results) plus
one line here naming the artifacts it reads and writes (folders of hnl_ray/artifacts.py) and the config sections
its fingerprint covers. The skip / fingerprint / manifest skeleton every stage shares is `step` below:

    fingerprint(config part, upstream fingerprints) -> fresh? skip : (resume or restart the folder) -> work ->
    manifest.write

This module is imported by the config (for the stage names), so it imports nothing heavy.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .. import artifacts as A
from .. import manifest
from ..artifacts import Artifacts
from ..storage import RunDir

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    name: str
    module: str  # implements run(ctx) -> dict
    summary: str  # the CLI's help line
    reads: tuple[str, ...] = ()  # artifact folders
    writes: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()  # config sections in its fingerprint
    ray: bool = False  # needs a Ray cluster (started or joined before it runs)
    named_runs: bool = False  # `--run NAME` selects among train.runs

    def run(self, ctx: Context) -> dict:
        return importlib.import_module(self.module).run(ctx)

    def report_rows(self) -> list[tuple[str, str]]:
        """(label, folder) of each manifest folder it writes, for the report's stage table."""
        folders = [f for f in self.writes if f != A.CF]
        if len(folders) == 1:
            return [(self.name, folders[0])]
        return [(f"{self.name}: {f.rsplit('/', 1)[-1]}", f) for f in folders]


STAGES: tuple[Stage, ...] = (
    Stage("prepare", "hnl_ray.stages.prepare", "Read the source dataset, filter, split and index it.",
          (), (A.PREPARED,), ("data", "filters", "split", "seed")),
    Stage("profiles", "hnl_ray.stages.profiles", "LLM-written item profiles, then user profiles from training "
          "histories.", (A.PREPARED,), (A.ITEM_PROFILES, A.USER_PROFILES), ("profiles", "llm"), ray=True),
    Stage("negatives", "hnl_ray.stages.negatives", "LLM-written semantic hard negatives (method 1) per training "
          "(user, item) pair.", (A.PREPARED, A.ITEM_PROFILES, A.USER_PROFILES), (A.NEGATIVES,),
          ("negatives", "llm", "seed"), ray=True),
    Stage("embed", "hnl_ray.stages.embed", "Sentence embeddings of the catalog and the negatives, grounded to "
          "catalog items.", (A.PREPARED, A.ITEM_PROFILES, A.NEGATIVES), (A.EMBEDDINGS,), ("embed", "negatives"),
          ray=True),
    Stage("teacher", "hnl_ray.stages.teacher", "HNLMRec supervision: train the CF teacher, mine one hard negative "
          "per training pair.", (A.PREPARED, A.EMBEDDINGS), (A.TEACHER, A.CF), ("teacher", "train", "seed")),
    Stage("finetune", "hnl_ray.stages.finetune", "HNLMRec: LoRA contrastive fine-tuning of the LLM on Ray Train.",
          (A.PREPARED, A.ITEM_PROFILES, A.USER_PROFILES, A.TEACHER), (A.FINETUNE,), ("finetune", "seed"),
          ray=True),
    Stage("hardneg", "hnl_ray.stages.hardneg", "HNLMRec inference: the catalogue and every training pair in the "
          "model's space (float16), each pair's N nearest items.",
          (A.PREPARED, A.ITEM_PROFILES, A.USER_PROFILES, A.TEACHER, A.FINETUNE), (A.HARDNEG, A.HARDNEG_BASE),
          ("hardneg", "finetune", "seed"), ray=True),
    Stage("train", "hnl_ray.stages.train", "Train the configured CF runs (train.runs) into cf/<run>/.",
          (A.PREPARED, A.EMBEDDINGS, A.TEACHER, A.HARDNEG), (A.CF,), ("train", "seed"), named_runs=True),
    Stage("report", "hnl_ray.report", "Write report.md and its plots from the run's artifacts.",
          (A.PREPARED, A.CF, A.TUNE), (A.REPORT,)),
)
NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)  # what config's pipeline.stages accepts


def names() -> tuple[str, ...]:
    return tuple(s.name for s in STAGES)


def get(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    from ..errors import UsageError

    raise UsageError(f"unknown stage {name!r}; stages: {', '.join(names())}")


@dataclass
class Context:
    """What a stage's `run` gets: the config, the run's artifacts, and how it was asked to run."""

    cfg: Config
    art: Artifacts
    force: bool = False
    progress: bool = True
    runs: list[str] | None = None  # named_runs stages: only these

    @property
    def run(self) -> RunDir:
        return self.art.run

    def ray(self):
        """Ray, started (or joined) on first use."""
        import ray

        if not ray.is_initialized():
            from ..quiet import quiet_output
            from ..ray_utils import init_ray

            quiet_output()
            init_ray(self.cfg)
        from ..quiet import quiet_ray_data

        quiet_ray_data()
        return ray


def context(cfg: Config, run: RunDir | str | None = None, **kwargs: Any) -> Context:
    return Context(cfg, Artifacts(run if run is not None else cfg.resolved_run_dir()), **kwargs)


def run_stage(name: str, cfg: Config, run: RunDir | str | None = None, **kwargs: Any) -> dict:
    """Run (or skip) one stage: `run_stage("embed", cfg, force=True)`, holding the run directory's lock."""
    from ..runlock import hold

    ctx = context(cfg, run, **kwargs)
    with hold(ctx.run, f"hnl-ray {name}"):
        return get(name).run(ctx)


# ------------------------------------------------------------------------------------------------- skeleton


@dataclass
class Output:
    """What a stage's work produced, for its manifest."""

    counts: dict
    outputs: list[str] = field(default_factory=list)  # files of the folder that must exist for it to be fresh
    timings: dict = field(default_factory=dict)
    extra: dict | None = None
    result: dict | None = None  # what the stage returns, when not its counts
    fingerprint: str | None = None  # what downstream stages key on, when not the input fingerprint


def step(ctx: Context, folder: str, part: Any, inputs: dict, work: Callable[[str], Output], *,
         label: str | None = None, resumable: bool = False, key: str = "fingerprint",
         cached: Callable[[], dict] | None = None) -> dict:
    """Skip a folder whose manifest matches `manifest.fingerprint(part, inputs)`; otherwise run `work(fp)` and
    write the manifest. `resumable` folders keep the partial output of an interrupted run of the same fingerprint
    (and delete one of another); `cached` gives a skipped stage's return value (default: its manifest's counts)."""
    run = ctx.run
    fp = manifest.fingerprint(part, inputs)
    fresh = begin(run, folder, fp, ctx.force) if resumable else (
        not ctx.force and manifest.is_fresh(run, folder, fp, key=key))
    if fresh:
        log.debug("%s: up to date, skipped", label or folder)  # the CLI's summary line says so
        return {**(cached() if cached else ctx.art.manifest(folder)["counts"]), "skipped": True}
    out = work(fp)
    manifest.write(run, folder, stage=label or folder.replace("/", "-"), fp=out.fingerprint or fp,
                   config_part=part, inputs=inputs, outputs=out.outputs, counts=out.counts,
                   timings=dict(out.timings), extra=out.extra)
    return out.result if out.result is not None else out.counts


def begin(run: RunDir, folder: str, fp: str, force: bool) -> bool:
    """Prepare a resumable stage folder. Returns True when the stage is already complete (skip it).

    The folder's `run.json` records the fingerprint of the work in progress: shards written under another
    config are deleted rather than mixed in; shards of the same config are kept and completed."""
    if not force and manifest.is_fresh(run, folder, fp):
        return True
    for name in manifest.damaged(run, folder):  # a finished folder's shard cut short or altered: redo its rows
        if run.exists(folder, name):
            log.warning("%s/%s is damaged: deleted; its rows are generated again", folder, name)
            run.delete(folder, name)
    started = run.read_json(f"{folder}/run.json") if run.exists(folder, "run.json") else None
    if force or (started is not None and started.get("fingerprint") != fp):
        run.delete(folder)
    elif started is None and run.exists(folder):
        run.delete(folder)  # leftovers without a record of what made them
    if run.exists(folder, manifest.MANIFEST):
        run.delete(folder, manifest.MANIFEST)  # being redone or completed: not fresh until it finishes
    run.write_json(f"{folder}/run.json", {"fingerprint": fp})
    return False
