"""Run directories shared or corrupted: two commands on one run directory (one refuses, naming the other), a
truncated or altered output file (the stage runs again, with a message; a damaged shard's rows are redone)."""

import logging
import subprocess
import sys
import time

import pyarrow as pa
from typer.testing import CliRunner

from hnl_ray import manifest
from hnl_ray.config import load_config
from hnl_ray.llm.generate import forget_engine_failures
from hnl_ray.runlock import LOCK
from hnl_ray.stages import begin, run_stage
from hnl_ray.storage import RunDir, ShardWriter, read_shards

SMALL = ["data.n_users=40", "data.n_items=30"]


def shards(run, folder, n=3, rows=2):
    w = ShardWriter(run, folder, rows)
    w.add([{"id": f"item:{k}", "status": "ok", "error": None} for k in range(n * rows)])
    w.close()


def test_concurrent_prepare_one_refuses_naming_the_other(tmp_path):
    from hnl_ray.cli import app

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom hnl_ray.runlock import RunLock\nfrom hnl_ray.storage import "
         "RunDir\nRunLock(RunDir(sys.argv[1]), 'hnl-ray prepare (the other one)').acquire()\nprint('held', "
         "flush=True)\ntime.sleep(600)", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = CliRunner().invoke(app, ["prepare", "--run-dir", str(tmp_path), *sum((["--set", s] for s in SMALL),
                                                                                   [])])
        text = " ".join(res.output.split())
        assert res.exit_code == 1, res.output
        assert "in use by `hnl-ray prepare (the other one)`" in text and f"pid {holder.pid}" in text
        assert "Traceback" not in text and not (tmp_path / "prepared").exists()
    finally:
        holder.kill()
        holder.wait()
    res = CliRunner().invoke(app, ["prepare", "--run-dir", str(tmp_path), *sum((["--set", s] for s in SMALL), [])])
    assert res.exit_code == 0, res.output  # the killed holder's lock is taken over
    assert not (tmp_path / LOCK).exists()


def test_manifest_records_sizes_and_checksums_and_a_truncated_output_reruns(tmp_path, caplog):
    cfg = load_config(sets=SMALL, run_dir=str(tmp_path))
    run_stage("prepare", cfg)
    files = manifest.load(RunDir(str(tmp_path)), "prepared")["files"]
    assert files["train.parquet"]["bytes"] > 0 and len(files["train.parquet"]["sha256"]) == 64
    assert run_stage("prepare", cfg).get("skipped")
    p = tmp_path / "prepared" / "train.parquet"
    p.write_bytes(p.read_bytes()[:-20])
    with caplog.at_level(logging.WARNING):
        out = run_stage("prepare", cfg)
    assert not out.get("skipped") and "prepared/train.parquet: size changed" in caplog.text
    assert run_stage("prepare", cfg).get("skipped")


def test_damaged_shard_of_a_finished_folder_is_detected_and_only_its_rows_redone(tmp_path, caplog):
    run = RunDir(str(tmp_path))
    assert not begin(run, "gen", "fp1", force=False)
    shards(run, "gen")
    manifest.write(run, "gen", stage="gen", fp="fp1", config_part={}, inputs={}, outputs=[], counts={},
                   timings={})
    assert sorted(manifest.load(run, "gen")["files"]) == ["part-00000.parquet", "part-00001.parquet",
                                                          "part-00002.parquet"]
    assert begin(run, "gen", "fp1", force=False)  # fresh
    p = tmp_path / "gen" / "part-00001.parquet"
    p.write_bytes(p.read_bytes()[:-30])
    with caplog.at_level(logging.WARNING):
        assert not begin(run, "gen", "fp1", force=False)
    assert "gen/part-00001.parquet: size changed" in caplog.text and "its rows are generated again" in caplog.text
    assert sorted(read_shards(run, "gen", columns=["id"])["id"].to_pylist()) == [
        "item:0", "item:1", "item:4", "item:5"]  # the two rows of the damaged shard will be generated again


def test_unreadable_shard_of_an_unfinished_folder_is_dropped_with_a_message(tmp_path, caplog):
    run = RunDir(str(tmp_path))
    shards(run, "gen", n=2)
    p = tmp_path / "gen" / "part-00000.parquet"
    p.write_bytes(p.read_bytes()[:10])
    with caplog.at_level(logging.WARNING):
        forget_engine_failures(run, "gen")
    assert "part-00000.parquet cannot be read" in caplog.text
    assert read_shards(run, "gen", columns=["id"]).num_rows == 2


def test_rows_whose_request_failed_are_asked_again_on_resume(tmp_path):
    run = RunDir(str(tmp_path))
    w = ShardWriter(run, "gen", 3)
    w.add([{"id": "a", "status": "ok", "error": None},
           {"id": "b", "status": "failed", "error": "engine error: request failed: HTTP 500"},
           {"id": "c", "status": "failed", "error": "summarization: too short"}])
    w.close()
    assert forget_engine_failures(run, "gen") == 1
    assert sorted(read_shards(run, "gen")["id"].to_pylist()) == ["a", "c"]
    assert isinstance(read_shards(run, "gen"), pa.Table) and time.time()
