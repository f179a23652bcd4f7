"""The verdict protocol (benchmarks/verdict): its statistics, verdict rule, groups, bench-config validation,
artifact seeding and the resume of a half-finished table."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.verdict import artifacts, groups, report, stats
from benchmarks.verdict.config import BenchConfig, load_bench, missing_need
from hnl_ray.config.loader import ConfigError
from hnl_ray.storage import RunDir

REPO = Path(__file__).parent.parent
CHECKER = REPO.parent.parent / "shared" / "tools" / "check_results_json.py"


# ------------------------------------------------------------------ statistics

def test_mean_sd_is_the_sample_sd():
    assert stats.mean_sd([1.0, 2.0, 3.0]) == {"mean": 2.0, "sd": 1.0}  # population s.d. would be 0.816
    assert stats.mean_sd([0.5]) == {"mean": 0.5, "sd": 0.0}


def test_bootstrap_of_a_two_user_case_matches_its_exact_distribution():
    # d = a - b = [0, 1]: a resample's mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the 95 %
    # percentile interval is [0, 1] and its middle half sits at 0.5.
    ci = stats.paired_bootstrap(np.array([0.2, 1.2]), np.array([0.2, 0.2]), resamples=4000, seed=3)
    assert ci["mean"] == pytest.approx(0.5)
    assert (ci["ci_low"], ci["ci_high"]) == (0.0, 1.0)
    mid = stats.paired_bootstrap(np.array([0.2, 1.2]), np.array([0.2, 0.2]), resamples=4000, level=0.4, seed=3)
    assert mid["ci_low"] == mid["ci_high"] == 0.5


def test_bootstrap_is_paired_and_matches_the_normal_interval():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 3000)  # large per-user spread shared by both rows: pairing removes it
    a, b = base + 0.01 + rng.normal(0, 0.05, 3000), base
    ci = stats.paired_bootstrap(a, b, resamples=2000, seed=1)
    half = 1.96 * np.std(a - b, ddof=1) / np.sqrt(3000)
    assert ci["ci_low"] == pytest.approx(ci["mean"] - half, abs=0.0005)
    assert ci["ci_high"] == pytest.approx(ci["mean"] + half, abs=0.0005)
    assert ci["ci_low"] > 0  # unpaired, the spread of `base` (s.d. 0.29) would swamp a 0.01 difference


def test_bootstrap_refuses_too_few_resamples_in_a_bench_config():
    with pytest.raises(Exception, match="resamples"):
        BenchConfig.model_validate({"dataset": "x", "config": None, "bootstrap": {"resamples": 500},
                                    "rows": {"uniform": {}}})


def test_align_pairs_users_by_id():
    a, b = stats.align(np.array([3, 1, 2]), np.array([30.0, 10.0, 20.0]), np.array([2, 3]), np.array([2.0, 3.0]))
    assert a.tolist() == [20.0, 30.0] and b.tolist() == [2.0, 3.0]


@pytest.mark.parametrize("lo,hi,word", [(0.001, 0.01, "above"), (-0.01, -0.001, "below"),
                                        (-0.001, 0.01, "not distinguishable from"),
                                        (0.0, 0.01, "not distinguishable from")])
def test_verdict_rule(lo, hi, word):
    ci = {"mean": (lo + hi) / 2, "ci_low": lo, "ci_high": hi, "users": 100, "level": 0.95}
    assert stats.verdict(ci) == word
    assert stats.sentence("hnlmrec", "dns", "ndcg@20", ci, 5).startswith(f"hnlmrec is {word} dns on test NDCG@20")


# ------------------------------------------------------------------ groups and diagnostics

def test_popularity_quintiles_and_unseen_items():
    counts = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0])
    g, labels = groups.popularity_groups(counts)
    assert g[0] == g[11] == 5 and labels[5] == "unseen"
    assert np.bincount(g[1:11], minlength=5).tolist() == [2, 2, 2, 2, 2]
    assert g[1] == 0 and g[10] == 4  # the rarest seen item in Q1, the most popular in Q5


def test_activity_bins():
    g, labels = groups.activity_groups(np.array([0, 1, 2, 3, 5, 6, 10, 11, 50]))
    assert [labels[x] for x in g] == ["0 (cold)", "1-2", "1-2", "3-5", "3-5", "6-10", "6-10", ">10", ">10"]


def test_item_group_metrics_from_ranks():
    out = groups.by_item_group(np.array([0, 0, 1]), np.array([0, -1, 3]), np.array([0, 1]), ["a", "b"], 20)
    assert out["a"] == {"pairs": 2, "recall@20": 0.5, "ndcg@20": 0.5}
    assert out["b"]["ndcg@20"] == pytest.approx(1 / np.log2(5))


def test_false_negative_shares():
    from benchmarks.verdict.fhn import shares
    from hnl_ray.cf.data import CFData

    data = CFData(3, 5, (np.array([0, 1]), np.array([0, 1])), (np.array([0]), np.array([2])),
                  (np.array([0]), np.array([3])))
    text = np.eye(5)[[0, 1, 2, 3, 0]]  # item 4 has item 0's text
    res = shares(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 1]), np.array([2, 3, 4, 2]), data, text)
    assert res["share_valid_or_test"] == 0.5 and res["share_valid"] == 0.25 and res["share_test"] == 0.25
    assert res["text_sim_to_positive"] == 0.25


# ------------------------------------------------------------------ configs

def _write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "bench.yaml"
    p.write_text(body)
    return p


def test_bench_config_rejects_unknown_keys_and_unequal_grids(tmp_path):
    with pytest.raises(ConfigError, match="rows.dns.gird"):
        load_bench(_write(tmp_path, "dataset: x\nconfig: null\nrows: {dns: {gird: {}}}\n"))
    with pytest.raises(ConfigError, match="3 points, but every sweep has grid_points = 4"):
        load_bench(_write(tmp_path, "dataset: x\nconfig: null\nrows:\n  dns: {grid: {sampler.candidates: [4, 8, 16]}}\n"))
    with pytest.raises(ConfigError, match="shared by every row"):
        load_bench(_write(tmp_path, "dataset: x\nconfig: null\nrows: {uniform: {train: {optim: {lr: 0.1}}}}\n"))
    with pytest.raises(ConfigError, match="train"):
        load_bench(_write(tmp_path, "dataset: x\nconfig: null\ntrain: {optim: {lrr: 1}}\nrows: {uniform: {}}\n"))


def test_a_control_takes_its_setting_from_an_earlier_row_with_a_grid(tmp_path):
    grid = "{sampler.candidates: [4, 8, 16, 32]}"
    ok = f"dataset: x\nconfig: null\nrows:\n  dns: {{grid: {grid}}}\n  ctl: {{kind: control, setting_from: dns}}\n"
    assert load_bench(_write(tmp_path, ok))[0].rows["ctl"].setting_from == "dns"
    for bad in (f"rows:\n  ctl: {{kind: control, setting_from: dns}}\n  dns: {{grid: {grid}}}\n",  # later row
                "rows:\n  dns: {}\n  ctl: {kind: control, setting_from: dns}\n",  # no grid to take from
                f"rows:\n  dns: {{grid: {grid}}}\n  ctl: {{kind: control, setting_from: dsn}}\n"):  # unknown
        with pytest.raises(ConfigError, match="rows.ctl.setting_from"):
            load_bench(_write(tmp_path, "dataset: x\nconfig: null\n" + bad))


def test_sweeps_need_a_checkpoint_at_every_validation(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint_every"):
        load_bench(_write(tmp_path, "dataset: x\nconfig: null\ngrid_points: 2\ntrain: {checkpoint_every: 4, "
                                    "eval: {every: 2}}\nrows: {dns: {grid: {sampler.candidates: [4, 8]}}}\n"))


def test_a_table_without_a_reference_row_stays_out_of_datasets(tmp_path):
    p = tmp_path / "results.json"
    report.merge_json(p, "t", {"best_classic": None, "rows": {}})
    assert json.loads(p.read_text()) == {"datasets": {}, "pending": {"t": {"best_classic": None, "rows": {}}}}
    report.merge_json(p, "t", {"best_classic": "u", "rows": {"u": {}}})
    assert json.loads(p.read_text()) == {"datasets": {"t": {"best_classic": "u", "rows": {"u": {}}}}}
    # a regenerated table keeps its place among the others, so the file's diff shows only what changed
    report.merge_json(p, "z", {"best_classic": "u", "rows": {}})
    report.merge_json(p, "t", {"best_classic": "u", "rows": {"v": {}}})
    assert list(json.loads(p.read_text())["datasets"]) == ["t", "z"]


def test_every_shipped_bench_config_validates():
    for path in sorted((REPO / "configs" / "bench").glob("*.yaml")):
        bench, _ = load_bench(path)
        assert any(r.kind == "classic" for r in bench.rows.values()), path


def test_missing_needs_are_named():
    assert missing_need("sampler.name=dns") is None
    assert "not implemented" in missing_need("sampler.name=no-such-sampler")
    assert "does not exist" in missing_need("sampler.nothing.source=random")


# ------------------------------------------------------------------ artifacts and the Markdown block

def test_stored_stage_is_seeded_into_an_empty_run(tmp_path, monkeypatch):
    store = tmp_path / "store"
    (store / "ds" / "hardneg").mkdir(parents=True)
    (store / "ds" / "hardneg" / "manifest.json").write_text('{"fingerprint": "f"}')
    (store / "ds" / "hardneg" / "vectors.parquet").write_bytes(b"x")
    monkeypatch.setattr(artifacts, "STORE", store)
    run = RunDir(str(tmp_path / "run"))
    assert artifacts.seed_run("ds", run) == ["hardneg"]
    assert run.read_bytes("hardneg/vectors.parquet") == b"x"
    assert artifacts.seed_run("ds", run) == []  # the run's own folder is never overwritten


def test_a_stage_file_over_the_limit_is_stored_in_parts_and_seeded_byte_for_byte(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    (run_dir / "finetune" / "ray" / "trial").mkdir(parents=True)
    (run_dir / "finetune" / "manifest.json").write_text('{"fingerprint": "f"}')
    blob = np.random.default_rng(0).bytes(2500)
    (run_dir / "finetune" / "adapter.safetensors").write_bytes(blob)
    (run_dir / "finetune" / "ray" / "trial" / "state.json").write_text("{}")  # Ray Train's scratch: not kept
    monkeypatch.setattr(artifacts, "STORE", tmp_path / "store")
    monkeypatch.setattr(artifacts, "FILE_LIMIT", 1000)
    artifacts.save("ds", str(run_dir), "finetune")
    stored = sorted(p.name for p in (tmp_path / "store" / "ds" / "finetune").rglob("*") if p.is_file())
    assert stored == ["adapter.safetensors.part-000", "adapter.safetensors.part-001", "adapter.safetensors.part-002",
                      "manifest.json"]
    assert all((tmp_path / "store" / "ds" / "finetune" / n).stat().st_size < 1000 for n in stored)
    fresh = RunDir(str(tmp_path / "fresh"))
    assert artifacts.seed_run("ds", fresh) == ["finetune"]
    assert fresh.read_bytes("finetune/adapter.safetensors") == blob
    assert not fresh.exists("finetune", "adapter.safetensors.part-000")


def test_the_report_says_how_far_an_unfinished_fine_tuning_got(tmp_path):
    from hnl_ray import manifest
    from hnl_ray.config import load_config
    from hnl_ray.storage import RunDir

    from benchmarks.verdict.table import stage_progress

    bench = BenchConfig.model_validate({"dataset": "x", "config": None, "rows": {"uniform": {}},
                                        "stages": ["prepare", "teacher", "finetune", "hardneg"]})
    cfg = load_config(None, ["finetune.batch_size=32", "finetune.valid_share=0.05", "finetune.num_workers=2"])
    run = RunDir(str(tmp_path))
    for folder, counts in (("prepared", {}), ("teacher", {"pairs_with_target": 10_000})):
        manifest.write(run, folder, stage=folder, fp="f", config_part={}, inputs={}, outputs=[], counts=counts,
                       timings={})
    run.write_text("finetune/carried/carried.json", json.dumps({"fingerprint": "f", "step": 120}))
    got = stage_progress(bench, cfg, run)
    # 9,500 training pairs over 2 workers, 32 per batch: 148 steps in its one epoch
    assert got == {"prepare": "done", "teacher": "done", "finetune": "step 120 of ~148 (checkpointed)",
                   "hardneg": "not run yet"}
    assert report._stages(got) == (" Stages: prepare done; teacher done; finetune step 120 of ~148 "
                                   "(checkpointed); hardneg not run yet.")
    assert report._stages({"prepare": "done"}) == ""  # a finished table does not list them


def test_an_unfinished_finetune_is_carried_to_a_fresh_run_directory(tmp_path, monkeypatch):
    """`carry` stores the checkpoint Ray Train's snapshot names as the latest (in parts when large), and
    `seed_run` puts it in finetune/carried/ of a run that has not finished the stage, once."""
    ray_run = tmp_path / "run" / "finetune" / "ray" / "hnlmrec-fp1"
    for step, name in ((3, "checkpoint_a"), (6, "checkpoint_b")):
        (ray_run / name).mkdir(parents=True)
        (ray_run / name / "state.json").write_text(json.dumps({"step": step}))
        (ray_run / name / "optimizer.safetensors").write_bytes(np.random.default_rng(step).bytes(2500))
    (ray_run / "checkpoint_manager_snapshot.json").write_text(json.dumps(
        {"latest_checkpoint_result": {"checkpoint_dir_name": "checkpoint_b"}}))
    import pyarrow as pa

    from hnl_ray import manifest
    from hnl_ray.stages.finetune import targets_digest

    pairs = pa.table({"user_idx": np.array([0, 0, 1], np.int32), "item_idx": np.array([2, 2, 3], np.int32),
                      "neg_item_idx": np.array([5, 6, 7], np.int32), "k": np.array([0, 1, 0], np.int8), "neg_score": [0.5, 0.4, 0.3]})
    RunDir(str(tmp_path / "run")).write_parquet("teacher/pairs.parquet", pairs)
    manifest.write(RunDir(str(tmp_path / "run")), "teacher", stage="teacher", fp="t", config_part={}, inputs={},
                   outputs=["pairs.parquet"], counts={}, timings={})
    # the digest is of the target ids, not of the scores or the file
    assert targets_digest(pairs) == targets_digest(pairs.set_column(4, "neg_score", pa.array([0.0, 0.0, 0.0])))
    assert targets_digest(pairs) != targets_digest(pairs.set_column(2, "neg_item_idx", pa.array(np.array([5, 7, 6], np.int32))))
    monkeypatch.setattr(artifacts, "STORE", tmp_path / "store")
    monkeypatch.setattr(artifacts, "FILE_LIMIT", 1000)
    got = artifacts.carry("ds", str(tmp_path / "run"))
    assert got["step"] == 6 and got["fingerprint"] == "fp1"
    fresh = RunDir(str(tmp_path / "fresh"))
    assert artifacts.seed_run("ds", fresh) == ["finetune (carried checkpoint, step 6)"]
    assert fresh.read_bytes("finetune/carried/optimizer.safetensors") == (
        ray_run / "checkpoint_b" / "optimizer.safetensors").read_bytes()
    # with the digest of the teacher targets it trained on, which the next machine's stage compares with its own
    assert fresh.read_json("finetune/carried/carried.json") == {"fingerprint": "fp1", "step": 6,
                                                                 "from": "checkpoint_b",
                                                                 "teacher_pairs": targets_digest(pairs)}
    assert artifacts.seed_run("ds", fresh) == []  # already there
    # --report-only on a fresh clone seeds it too, so the progress line reads the carried step
    from benchmarks.verdict.table import kept_records, stage_progress
    from hnl_ray.config import load_config

    bench = BenchConfig.model_validate({"dataset": "ds", "config": None, "rows": {"uniform": {}},
                                        "stages": ["finetune"]})
    said = []
    assert kept_records(bench, tmp_path, str(tmp_path / "clone"), say=said.append) == {}  # no finished rows
    assert said == ["seeded from benchmarks/artifacts/ds: finetune (carried checkpoint, step 6)"]
    assert stage_progress(bench, load_config(None, []), RunDir(str(tmp_path / "clone")))["finetune"].startswith(
        "step 6 of")
    # a second config's fine-tuning in the same run directory, newer: carry asks which, then takes that one
    other = tmp_path / "run" / "finetune" / "ray" / "hnlmrec-fp2"
    (other / "checkpoint_c").mkdir(parents=True)
    (other / "checkpoint_c" / "state.json").write_text(json.dumps(
        {"step": 2, "history": [{"event": "supervision", "step": 0, "teacher_pairs": "d-of-fp2"}]}))
    (other / "checkpoint_manager_snapshot.json").write_text(json.dumps(
        {"latest_checkpoint_result": {"checkpoint_dir_name": "checkpoint_c"}}))
    with pytest.raises(SystemExit, match=r"2 configs \(fp1, fp2\).*--fingerprint"):
        artifacts.carry("ds", str(tmp_path / "run"))
    with pytest.raises(SystemExit, match="no such Ray Train run"):
        artifacts.carry("ds", str(tmp_path / "run"), fingerprint="fp9")
    assert artifacts.carry("ds", str(tmp_path / "run"), fingerprint="fp2")["step"] == 2
    # the digest its own checkpoint records, not the run directory's current teacher targets
    assert json.loads((tmp_path / "store/ds/carried/finetune/carried.json").read_text())["teacher_pairs"] == "d-of-fp2"
    assert artifacts.carry("ds", str(tmp_path / "run"), fingerprint="fp1")["step"] == 6
    fresh.write_text("finetune/manifest.json", "{}")
    fresh.delete("finetune", "carried")
    assert artifacts.seed_run("ds", fresh) == []  # a finished stage gets no checkpoint
    (tmp_path / "run" / "finetune" / "manifest.json").write_text("{}")
    with pytest.raises(SystemExit, match="is finished"):
        artifacts.carry("ds", str(tmp_path / "run"))


def test_markdown_block_is_replaced_in_place(tmp_path):
    p = tmp_path / "results.md"
    p.write_text("# Results\n\nintro\n")
    report.replace_block(p, "ds", "one\n")
    report.replace_block(p, "other", "x\n")
    report.replace_block(p, "ds", "two\n")
    text = p.read_text()
    assert "one" not in text and text.count("two") == 1 and text.index("two") < text.index("x\n")
    assert text.startswith("# Results\n\nintro\n")


# ------------------------------------------------------------------ a half-finished table resumes

BENCH = """
dataset: tiny
config: null
sets: ["data.format=synthetic", "data.n_users=40", "data.n_items=30", "data.mean_interactions=8"]
run_dir: {run}
seeds: [1, 2]
keep_results: true
train:
  model: {{name: mf, dim: 8}}
  optim: {{lr: 0.01, batch_size: 64, epochs: 2}}
  eval: {{metric: ndcg@20, patience: 2, ks: [10, 20]}}
  threads: 1
rows:
  uniform: {{}}
  uniform-margin: {{kind: control, train: {{loss: {{name: margin}}}}}}
  later: {{needs: [sampler.name=not-yet], train: {{sampler: {{name: not-yet}}}}}}
"""


def _verdict(*args: str, store=None) -> subprocess.CompletedProcess:
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    if store is not None:
        env["HNL_BENCH_ARTIFACTS"] = str(store)  # kept results go here, not into the repository
    return subprocess.run([sys.executable, "-m", "benchmarks.verdict", *args], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=600)


def test_stages_outside_the_config_are_refused_by_name(tmp_path):
    cfg = _write(tmp_path, BENCH.format(run=tmp_path / "run"))
    done = _verdict("--config", str(cfg), "--stages", "prepare,finetune")
    assert done.returncode == 2 and "--stages: finetune not in the config's stages (prepare)" in done.stderr, \
        done.stderr
    assert not (tmp_path / "run").exists()  # refused before anything ran


@pytest.mark.slow
def test_a_half_finished_table_resumes_and_reports(tmp_path):
    run = tmp_path / "run"
    cfg = _write(tmp_path, BENCH.format(run=run))
    out = tmp_path / "out"
    store = tmp_path / "store"
    first = _verdict("--config", str(cfg), "--rows", "uniform", "--out", str(out), "--no-diagnostics", store=store)
    assert first.returncode == 0, first.stderr
    done = json.loads((out / "results.json").read_text())["datasets"]["tiny"]
    assert list(done["rows"]) == ["uniform"] and done["best_classic"] == "uniform"
    assert "not run yet" in done["not_run"]["uniform-margin"]
    manifest_before = (run / "cf" / "v-uniform-s1" / "manifest.json").read_text()

    second = _verdict("--config", str(cfg), "--out", str(out), "--no-diagnostics", store=store)
    assert second.returncode == 0, second.stderr
    assert "uniform seed 1: valid ndcg@20" in second.stdout and "(up to date)" in second.stdout
    assert (run / "cf" / "v-uniform-s1" / "manifest.json").read_text() == manifest_before  # not retrained
    rec = json.loads((run / "bench" / "rows" / "uniform.json").read_text())
    assert all(s["skipped"] for s in rec["seeds"].values()) and len(rec["commit"]) >= 7
    assert rec["config"]["model"]["name"] == "mf"
    res = json.loads((out / "results.json").read_text())["datasets"]["tiny"]
    assert set(res["rows"]) == {"uniform", "uniform-margin"}
    assert res["not_run"]["later"].startswith("not run (sampler missing")
    d = res["rows"]["uniform-margin"]["diff_vs_best_classic"]["ndcg@20"]
    assert d["ci_low"] <= d["mean"] <= d["ci_high"]
    assert "## Verdict table: tiny" in (out / "results.md").read_text()
    if CHECKER.exists():
        check = subprocess.run([sys.executable, str(CHECKER), str(out / "results.json")], capture_output=True,
                               text=True)
        assert check.returncode == 0, check.stdout

    # A fresh machine: the run directory is gone, the kept results (committed) are not. Nothing is retrained and
    # the table comes out the same.
    kept = sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())
    assert "tiny/results/cf/v-uniform-margin-s2/per_user_test.parquet" in kept
    assert not [k for k in kept if k.endswith(".safetensors")]  # results, not weights
    shutil.rmtree(run)
    third = _verdict("--config", str(cfg), "--out", str(out), "--no-diagnostics", store=store)
    assert third.returncode == 0, third.stderr
    assert "files of finished rows from" in third.stdout and third.stdout.count("(up to date)") == 4, third.stdout
    assert not (run / "cf" / "v-uniform-s1" / "best.safetensors").exists()  # reported from its results
    again = json.loads((out / "results.json").read_text())["datasets"]["tiny"]
    for row in ("uniform", "uniform-margin"):
        assert again["rows"][row]["test"] == res["rows"][row]["test"], row
    assert again["rows"]["uniform-margin"]["diff_vs_best_classic"] == res["rows"]["uniform-margin"][
        "diff_vs_best_classic"]

    # --report-only on another fresh machine: seeded and prepared, nothing trained, the same table.
    shutil.rmtree(run)
    fourth = _verdict("--config", str(cfg), "--out", str(out), "--no-diagnostics", "--report-only", store=store)
    assert fourth.returncode == 0, fourth.stderr
    assert "files of finished rows from" in fourth.stdout and "(up to date)" not in fourth.stdout
    assert not (run / "cf" / "v-uniform-s1" / "checkpoint.safetensors").exists()
    last = json.loads((out / "results.json").read_text())["datasets"]["tiny"]
    assert last["rows"]["uniform-margin"]["diff_vs_best_classic"] == res["rows"]["uniform-margin"][
        "diff_vs_best_classic"]


def test_saving_a_finished_finetune_replaces_its_carried_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "STORE", tmp_path / "store")
    carried = tmp_path / "store" / "ds" / "carried" / "finetune"
    carried.mkdir(parents=True)
    (carried / "carried.json").write_text('{"fingerprint": "f", "step": 3}')
    (tmp_path / "run" / "finetune").mkdir(parents=True)
    (tmp_path / "run" / "finetune" / "manifest.json").write_text('{"fingerprint": "f"}')
    monkeypatch.setattr(artifacts, "FOLDER_LIMIT", 40)  # the carried file counts until it is replaced
    (carried / "optimizer.safetensors").write_bytes(b"x" * 30)
    got = artifacts.save("ds", str(tmp_path / "run"), "finetune")
    assert got["dataset_total_bytes"] < 40 and not carried.exists()
    (tmp_path / "store" / "ds" / "results").mkdir()
    (tmp_path / "store" / "ds" / "results" / "big").write_bytes(b"x" * 30)
    with pytest.raises(SystemExit, match="limit 20 MB"):  # results count towards the dataset's folder
        artifacts.save("ds", str(tmp_path / "run"), "finetune")


DRAWS = """
dataset: drawn
config: null
sets: ["data.format=synthetic", "data.n_users=40", "data.n_items=30", "data.mean_interactions=8",
       "ray.num_cpus=2", "ray.object_store_memory=100000000", "teacher.train.optim.epochs=2"]
run_dir: {run}
seeds: [1, 2]
keep_results: true
stages: [prepare, embed, teacher]
draws: [7]
draw_stages: [teacher]
headline: tt
headline_controls: []
train:
  model: {{name: mf, dim: 8}}
  optim: {{lr: 0.01, batch_size: 64, epochs: 2}}
  eval: {{metric: ndcg@20, patience: 2, ks: [10, 20]}}
  threads: 1
rows:
  uniform: {{}}
  tt: {{kind: control, needs_stages: [teacher], train: {{sampler: {{name: hnlmrec, hnlmrec: {{source: teacher}}}}}}}}
"""


def test_draws_share_the_split_and_redo_only_the_drawn_stages():
    cfg = BenchConfig.model_validate({"dataset": "x", "config": None, "stages": ["prepare", "teacher"],
                                      "draws": [2], "draw_stages": ["teacher"],
                                      "rows": {"uniform": {}, "tt": {"needs_stages": ["teacher"]},
                                               "text": {"needs_stages": ["embeddings"]},
                                               "fixed": {"needs_stages": ["teacher"], "redraw": False}}})
    from benchmarks.verdict.table import table_rows

    # only rows that read a redrawn stage, and not those that say their input does not change with the draw
    assert table_rows(cfg) == ["uniform", "tt", "text", "fixed", "tt@2"]
    for bad, why in (({"draws": [2], "draw_stages": ["finetune"]}, "not in stages"),
                     ({"draws": [2, 2], "draw_stages": ["teacher"]}, "repeats"),
                     ({"rows": {"a@2": {}}}, "`@` marks")):
        with pytest.raises(Exception, match=why):
            BenchConfig.model_validate({"dataset": "x", "config": None, "stages": ["prepare", "teacher"],
                                        "rows": {"uniform": {}}, **bad})


@pytest.mark.slow
def test_a_second_draw_of_the_llm_stages_is_a_row_of_its_own(tmp_path):
    run, store, out = tmp_path / "run", tmp_path / "store", tmp_path / "out"
    cfg = _write(tmp_path, DRAWS.format(run=run))
    done = _verdict("--config", str(cfg), "--out", str(out), "--no-diagnostics", store=store)
    assert done.returncode == 0, done.stderr
    fp = lambda d, f: json.loads((d / f / "manifest.json").read_text())["fingerprint"]  # noqa: E731
    draw = run / "draws" / "7"
    assert fp(draw, "prepared") == fp(run, "prepared")  # the same split and inputs
    assert fp(draw, "embeddings") == fp(run, "embeddings")
    assert fp(draw, "teacher") != fp(run, "teacher")  # another draw of the teacher
    mine = lambda d: (d / "teacher" / "pairs.parquet").read_bytes()  # noqa: E731
    assert mine(draw) != mine(run)
    res = json.loads((out / "results.json").read_text())["datasets"]["drawn"]
    assert set(res["rows"]) == {"uniform", "tt", "tt@7"}
    assert res["rows"]["tt@7"]["test"] != res["rows"]["tt"]["test"]
    assert "diff_vs_best_classic" in res["rows"]["tt@7"]
    assert "Draw 7 of the LLM stages: `tt@7` is" in res["headline"]
    assert "2 draws" in (out / "results.md").read_text()
    kept = {str(p.relative_to(store)) for p in store.rglob("*") if p.is_file()}
    assert "drawn/results/draws/7/cf/v-tt-s2/per_user_test.parquet" in kept and \
        "drawn/results/bench/rows/tt@7.json" in kept

    # a fresh machine: the draw's rows come back from the kept results, nothing is retrained
    shutil.rmtree(run)
    again = _verdict("--config", str(cfg), "--out", str(out), "--no-diagnostics", "--report-only", store=store)
    assert again.returncode == 0, again.stderr
    back = json.loads((out / "results.json").read_text())["datasets"]["drawn"]
    assert back["rows"]["tt@7"]["diff_vs_best_classic"] == res["rows"]["tt@7"]["diff_vs_best_classic"]
