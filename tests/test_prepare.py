"""The prepare stage end to end: outputs, stats, manifest skip, bad input."""

import json
import os
import shutil

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from hnl_ray.cli import app
from hnl_ray.config import load_config
from hnl_ray.data.errors import DataError
from hnl_ray.stages import run_stage


def demo_cfg(tmp_path, *sets):
    return load_config(sets=["data.n_users=80", "data.n_items=60", *sets], run_dir=str(tmp_path / "run"))


def test_prepare_demo_writes_contiguous_ids_and_stats(tmp_path):
    stats = run_stage("prepare", demo_cfg(tmp_path, "filters.k_core={user: 3, item: 3}"))
    run = tmp_path / "run" / "prepared"
    train = pq.read_table(run / "train.parquet")
    items = pq.read_table(run / "items.parquet")
    users = pq.read_table(run / "users.parquet")
    assert items["item_idx"].to_pylist() == list(range(stats["items"]))
    assert users["user_idx"].to_pylist() == list(range(stats["users"]))
    assert max(train["item_idx"].to_pylist()) < stats["items"]
    on_disk = json.loads((run / "stats.json").read_text())
    for key in ("users", "items", "interactions_per_split", "density", "interactions_per_user",
                "item_popularity_gini", "k_core_rounds", "filters", "malformed_lines_skipped"):
        assert key in on_disk
    total = sum(on_disk["interactions_per_split"].values())
    assert total == on_disk["interactions"] == sum(pq.read_table(run / f"{s}.parquet").num_rows
                                                   for s in ("train", "valid", "test"))
    # every user keeps training data; items have titles from the generator
    assert set(train["user_idx"].to_pylist()) == set(range(stats["users"]))
    assert items["title"].null_count == 0


def test_rerun_is_skipped_and_force_redoes(tmp_path):
    cfg = demo_cfg(tmp_path)
    first = run_stage("prepare", cfg)
    assert not first.get("skipped")
    again = run_stage("prepare", cfg)
    assert again.get("skipped") and again["interactions"] == first["interactions"]
    assert not run_stage("prepare", cfg, force=True).get("skipped")
    changed = run_stage("prepare", demo_cfg(tmp_path, "seed=7"))
    assert not changed.get("skipped")  # the config changed, so it re-ran


def test_deleted_output_is_not_fresh(tmp_path):
    cfg = demo_cfg(tmp_path)
    run_stage("prepare", cfg)
    (tmp_path / "run" / "prepared" / "valid.parquet").unlink()
    assert not run_stage("prepare", cfg).get("skipped")


def test_recopied_source_reruns_prepare_but_keeps_what_later_stages_key_on(tmp_path, data_dir):
    shutil.copytree(data_dir / "lightgcn", tmp_path / "lg")
    cfg = load_config(sets=["data.format=lightgcn", f"data.path={tmp_path / 'lg'}", "split.method=given",
                            "filters.dedup=none", "split.valid_ratio=0.34"], run_dir=str(tmp_path / "r"))
    manifest = tmp_path / "r" / "prepared" / "manifest.json"
    run_stage("prepare", cfg)
    first = json.loads(manifest.read_text())
    train = tmp_path / "lg" / "train.txt"
    os.utime(train, (1_000_000, 1_000_000))  # as after copying the data again: same bytes, another mtime
    assert not run_stage("prepare", cfg).get("skipped")
    again = json.loads(manifest.read_text())
    assert again["source_fingerprint"] != first["source_fingerprint"]
    assert again["fingerprint"] == first["fingerprint"]  # identical tables: profiles, fine-tuning... stay valid
    assert run_stage("prepare", cfg).get("skipped")
    train.write_text(train.read_text().replace("3 2 4 1 0", "3 2 4 1"))  # an edited source
    assert not run_stage("prepare", cfg).get("skipped")
    assert json.loads(manifest.read_text())["fingerprint"] != first["fingerprint"]


def test_filter_emptying_data_names_filter(tmp_path):
    with pytest.raises(DataError, match=r"filter rating \(filters.min_rating: >= 9.0\) removed every interaction"):
        run_stage("prepare", demo_cfg(tmp_path, "filters.min_rating=9"))


def test_date_filter_on_sequence_source_is_refused(tmp_path, data_dir):
    cfg = load_config(sets=["data.format=p5", f"data.path={data_dir / 'p5'}", "filters.date_from=2015-01-01"],
                      run_dir=str(tmp_path / "r"))
    with pytest.raises(DataError, match="date_from/date_to need real timestamps"):
        run_stage("prepare", cfg)


def test_given_split_with_cold_test_ids(tmp_path, data_dir):
    shutil.copytree(data_dir / "lightgcn", tmp_path / "lg")
    (tmp_path / "lg" / "test.txt").write_text("0 3\n1 4\n2 1\n3 3\n0 5\n")  # item 5 is in no train line
    (tmp_path / "lg" / "item_list.txt").open("a").write("newItem 5\n")
    sets = ["data.format=lightgcn", f"data.path={tmp_path / 'lg'}", "split.method=given", "filters.dedup=none",
            "split.valid_ratio=0"]
    with pytest.raises(DataError) as err:
        run_stage("prepare", load_config(sets=sets, run_dir=str(tmp_path / "r1")))
    msg = str(err.value)
    assert "test.txt" in msg and "1 test interactions have ids never seen in train" in msg and "newItem" in msg
    stats = run_stage("prepare", load_config(sets=sets + ["split.cold_start=drop"], run_dir=str(tmp_path / "r2")))
    assert stats["cold_start_drop_test"] == 1 and stats["interactions_per_split"]["test"] == 4


def test_lightgcn_given_split_carves_validation(tmp_path, data_dir):
    cfg = load_config(sets=["data.format=lightgcn", f"data.path={data_dir / 'lightgcn'}", "split.method=given",
                            "filters.dedup=none", "split.valid_ratio=0.34"], run_dir=str(tmp_path / "r"))
    stats = run_stage("prepare", cfg)
    per = stats["interactions_per_split"]
    assert per["test"] == 4 and per["train"] + per["valid"] == 13 and per["valid"] >= 1
    assert stats["users"] == 4 and stats["items"] == 5


def test_on_error_skip_is_counted_in_stats(tmp_path, data_dir):
    d = data_dir / "amazon2018"
    cfg = load_config(sets=["data.format=amazon", f"data.reviews={d / 'Toys_and_Games.json'}",
                            "data.on_error=skip", "filters.dedup=none"], run_dir=str(tmp_path / "r"))
    stats = run_stage("prepare", cfg)
    assert stats["malformed_lines_skipped"] == 2
    assert list(stats["malformed_lines_by_file"].values()) == [2]


def test_amazon_window_and_rating_filters_are_logged(tmp_path, data_dir):
    d = data_dir / "amazon2018"
    cfg = load_config(sets=["data.format=amazon", f"data.reviews={d / 'Toys_and_Games.json'}",
                            f"data.meta={d / 'meta_Toys_and_Games.json'}", "data.on_error=skip",
                            "filters.min_rating=4", "filters.date_from=2015-01-01", "filters.date_to=2018-01-01"],
                      run_dir=str(tmp_path / "r"))
    stats = run_stage("prepare", cfg)
    steps = {s["filter"]: (s["before"], s["after"]) for s in stats["filters"]}
    assert steps["rating"] == (4, 3) and steps["date window"] == (3, 2)
    assert stats["interactions"] == 2


def test_cli_prepare_and_help(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "prepare" in res.output
    res = runner.invoke(app, ["prepare", "--help"])
    assert res.exit_code == 0 and "--set" in res.output and "--run-dir" in res.output
    res = runner.invoke(app, ["prepare", "--set", "data.n_users=60", "--set", "data.n_items=40",
                              "--run-dir", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli" / "prepared" / "manifest.json").exists()
    res = runner.invoke(app, ["prepare", "--set", "filters.min_ratin=3"])
    assert res.exit_code == 2 and "did you mean 'min_rating'" in res.output


def test_rating_filter_on_source_without_ratings_is_refused(tmp_path, data_dir):
    cfg = load_config(sets=["data.format=lightgcn", f"data.path={data_dir / 'lightgcn'}", "split.method=given",
                            "filters.min_rating=4"], run_dir=str(tmp_path / "r"))
    with pytest.raises(DataError, match="source has no ratings"):
        run_stage("prepare", cfg)
