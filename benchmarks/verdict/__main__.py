"""Command line of the verdict tables: `python -m benchmarks.verdict --config configs/bench/<dataset>.yaml`."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from hnl_ray.config.loader import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "bench" / "smoke.yaml"
DOCS = ROOT / "docs"


def parse(argv: list[str] | None) -> argparse.Namespace:
    from . import __doc__ as doc

    ap = argparse.ArgumentParser(prog="python -m benchmarks.verdict", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="bench config (configs/bench/<dataset>.yaml)")
    ap.add_argument("--smoke", action="store_true", help=f"the tiny synthetic table ({SMOKE.relative_to(ROOT)}), "
                                                         "written under its run directory, not docs/")
    ap.add_argument("--run-dir", help="run directory (default: the config's, else benchmarks/.work/verdict-NAME)")
    ap.add_argument("--out", help="folder for results.md / results.json (default: docs/; --smoke: RUN_DIR/out)")
    ap.add_argument("--rows", help="comma-separated rows to run now (the others are reported as they stand)")
    ap.add_argument("--stages", help="comma-separated pipeline stages to run now instead of the config's `stages` "
                                     "(e.g. `prepare,embed`: the classic rows while the LLM stages wait; rows "
                                     "whose stage outputs are missing are reported as not run)")
    ap.add_argument("--report-only", action="store_true", help="train nothing: tables from the finished rows")
    ap.add_argument("--no-diagnostics", action="store_true", help="skip the false-hard-negative epoch")
    args = ap.parse_args(argv)
    if not args.config and not args.smoke:
        ap.error("give --config configs/bench/<dataset>.yaml or --smoke")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .config import load_bench

    path = Path(args.config) if args.config else SMOKE
    try:
        bench, here = load_bench(path)
        from .table import table_rows

        if args.rows and (unknown := [r for r in args.rows.split(",") if r not in table_rows(bench)]):
            raise ConfigError(f"--rows: unknown {', '.join(unknown)} (rows of {path}: "
                              f"{', '.join(table_rows(bench))})")
        if args.stages and (unknown := [s for s in args.stages.split(",") if s not in bench.stages]):
            raise ConfigError(f"--stages: {', '.join(unknown)} not in the config's stages ({', '.join(bench.stages)})")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_dir = args.run_dir or (str((here / bench.run_dir).resolve()) if bench.run_dir else
                               str(ROOT / "benchmarks" / ".work" / f"verdict-{bench.dataset}"))
    out = Path(args.out) if args.out else (Path(run_dir) / "out" if args.smoke else DOCS)
    command = "python -m benchmarks.verdict " + ("--smoke" if args.smoke and not args.config else
                                                 f"--config {shlex.quote(str(_rel(path)))}")
    return run(bench, here, run_dir, out, command, args)


def _rel(p: Path) -> Path:
    try:
        return p.resolve().relative_to(ROOT)
    except ValueError:
        return p


def run(bench, here: Path, run_dir: str, out: Path, command: str, args: argparse.Namespace) -> int:
    from hnl_ray.storage import RunDir

    from . import analysis, groups, report, table

    run_ = RunDir(run_dir)
    t0 = time.perf_counter()
    try:
        if args.report_only:
            records = table.kept_records(bench, here, run_dir)
        else:
            records = table.run_rows(bench, here, run_dir, only=args.rows.split(",") if args.rows else None,
                                     diagnostics=not args.no_diagnostics,
                                     stages=args.stages.split(",") if args.stages else None)
    finally:
        _shutdown_ray()
    cfg = table.pipeline_config(bench, here, run_dir)
    finished = any(r.get("status") == "run" for r in records.values())
    diag = not args.no_diagnostics and bench.diagnostics.false_negatives and finished
    text = table.item_text_vectors(cfg, run_, bench.diagnostics.text_model) if diag else None
    res = analysis.analyse(bench, run_, records, text, diagnostics=diag)
    done, total = len(res["rows"]), len(table.table_rows(bench))
    # a finished table is dated by its last row and lists no stages (a --report-only run prepares only the data)
    ends = [r["finished_at"] for r in records.values() if r.get("finished_at")]
    as_of = (max(ends).replace("T", " ")[:16] + " UTC" if done == total and ends
             else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    progress = {"rows_done": done, "rows_total": total, "not_run": res["not_run"],
                "stages": table.stage_progress(bench, cfg, run_) if done < total else {}, "as_of": as_of}
    out.mkdir(parents=True, exist_ok=True)
    plot_name = None
    if res["rows"]:
        png = groups.plot({n: r["groups"] for n, r in res["rows"].items()}, bench.metric,
                          f"{bench.dataset}: test {bench.metric} by group (mean over seeds)")
        (out / "results").mkdir(exist_ok=True)
        (out / "results" / f"{bench.dataset}-groups.png").write_bytes(png)
        plot_name = f"results/{bench.dataset}-groups.png"
    report.replace_block(out / "results.md", bench.dataset, report.markdown(bench, res, command, progress,
                                                                            plot_name))
    report.merge_json(out / "results.json", bench.dataset, report.results_json(bench, res, command, progress))
    print(f"{bench.dataset}: {done} of {progress['rows_total']} rows; best classic {res['best_classic']}; "
          f"{res['headline']}")
    print(f"wrote {out / 'results.md'} and {out / 'results.json'} ({time.perf_counter() - t0:.0f} s)")
    return 0


def _shutdown_ray() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
