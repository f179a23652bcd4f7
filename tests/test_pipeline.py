"""The whole stage graph on small demo data (tiny random LLM for speed): caching, --force, --from/--only,
failures that say how to resume, the report, sweeps, and a real `ray job submit` to a two-node local cluster."""

import os
import subprocess
import sys
import time

import pytest

from hnl_ray.config import ConfigError, load_config
from hnl_ray.pipeline import PipelineError, run_pipeline
from hnl_ray.errors import MissingInput
from hnl_ray.ray_utils import RayConnectError, init_ray
from hnl_ray.storage import RunDir
from hnl_ray.tune import SweepSpaceError, check_space

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small(tiny_llm: str) -> list[str]:
    return ["data.n_users=48", "data.n_items=32", "filters.k_core.user=3", "filters.k_core.item=3",
            f"llm.model={tiny_llm}", "llm.max_new_tokens=40", f"finetune.base_model={tiny_llm}",
            "finetune.max_steps=4", "finetune.checkpoint_every=2", "finetune.max_query_tokens=64",
            "hardneg.pairs_per_user=1", "train.optim.epochs=6", "train.eval.patience=3"]


@pytest.fixture(scope="module")
def piped(ray_session, tiny_llm, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    cfg = load_config(os.path.join(REPO, "configs/demo.yaml"), small(tiny_llm), run_dir=str(root))
    first = run_pipeline(cfg)
    return cfg, RunDir(str(root)), first


def _finished(run: RunDir, folder: str) -> str:
    return run.read_json(f"{folder}/manifest.json")["finished_at"]


def test_full_pipeline_writes_every_stage_and_the_report(piped):
    cfg, run, first = piped
    for folder in ("prepared", "profiles/items", "profiles/users", "negatives", "embeddings", "teacher",
                   "finetune", "hardneg"):
        assert run.exists(folder, "manifest.json"), folder
    assert set(first["train"]) == set(cfg.train.run_names())
    report = run.read_text("report.md")
    for section in ("## Dataset", "## Stages", "## Sampler comparison", "learning_curves.png", "groups.png"):
        assert section in report
    for name in cfg.train.run_names():
        assert f"| {name} |" in report
    assert run.exists("report", "learning_curves.png") and run.exists("report", "groups.png")


def test_second_run_skips_everything_and_force_train_redoes_only_training(piped):
    cfg, run, _ = piped
    before = {f: _finished(run, f) for f in ("prepared", "profiles/users", "finetune", "hardneg", "cf/uniform")}
    t0 = time.perf_counter()
    res = run_pipeline(cfg)
    assert time.perf_counter() - t0 < 60
    assert res["prepare"]["skipped"] and res["finetune"]["skipped"]
    assert all(r.get("skipped") for r in res["train"].values())
    assert {f: _finished(run, f) for f in before} == before
    time.sleep(1.1)
    res = run_pipeline(cfg, force=("train",))
    assert not any(r.get("skipped") for r in res["train"].values())
    after = {f: _finished(run, f) for f in before}
    assert after["cf/uniform"] != before["cf/uniform"]
    assert all(after[f] == before[f] for f in before if f != "cf/uniform")


def test_only_and_from_and_unknown_stage(piped):
    cfg, run, _ = piped
    assert list(run_pipeline(cfg, only="report")) == ["report"]
    assert list(run_pipeline(cfg, from_="train")) == ["train", "report"]
    with pytest.raises(ValueError, match="--from: unknown stage 'trian'"):
        run_pipeline(cfg, from_="trian")


def test_missing_upstream_stage_names_what_to_run_first(tmp_path):
    cfg = load_config(os.path.join(REPO, "configs/demo.yaml"), run_dir=str(tmp_path))
    with pytest.raises(PipelineError) as err:
        run_pipeline(cfg, only="negatives", config_path="configs/demo.yaml")
    assert isinstance(err.value.error, MissingInput)
    assert "run `hnl-ray prepare` first" in str(err.value)
    assert "Resume with: hnl-ray run --config configs/demo.yaml --from negatives" in str(err.value)


def test_a_failing_stage_keeps_finished_ones_and_says_how_to_resume(piped, tmp_path):
    cfg, run, _ = piped
    import shutil

    shutil.copytree(run.path(), tmp_path / "copy")
    bad = load_config(os.path.join(REPO, "configs/demo.yaml"), small(cfg.finetune.base_model) +
                      ["finetune.lora.target_modules=[nope_proj]"], run_dir=str(tmp_path / "copy"))
    with pytest.raises(PipelineError) as err:
        run_pipeline(bad, config_path="demo.yaml")
    msg = str(err.value)
    assert "stage `finetune` failed" in msg and "nope_proj not found" in msg and "--from finetune" in msg
    assert RunDir(str(tmp_path / "copy")).exists("teacher", "manifest.json")  # finished stages intact


def test_ray_address_pointing_at_nothing_fails_fast(monkeypatch):
    import ray

    cfg = load_config(sets=["ray.address=127.0.0.1:1"])
    if ray.is_initialized():
        pytest.skip("a Ray session is already up in this process")
    t0 = time.perf_counter()
    with pytest.raises(RayConnectError, match=r"127.0.0.1:1"):
        init_ray(cfg)
    assert time.perf_counter() - t0 < 60


def test_sweep_space_with_unknown_parameter_is_named():
    # Checked when the config loads (not when the sweep starts), with the same messages as check_space.
    with pytest.raises(ConfigError, match=r"tune.space.sampler.semantic.alhpa: unknown parameter .*allowed: "
                                          r".*alpha"):
        load_config(os.path.join(REPO, "configs/tune/demo-alpha.yaml"),
                    ["tune.space={sampler.semantic.alhpa: {grid: [0.1]}}"])
    with pytest.raises(ConfigError, match="value 2.0 is not valid"):
        load_config(os.path.join(REPO, "configs/tune/demo-alpha.yaml"),
                    ["tune.space={sampler.semantic.alpha: {grid: [2.0]}}"])
    cfg = load_config(os.path.join(REPO, "configs/tune/demo-alpha.yaml"))
    cfg.tune.space["sampler.semantic.alhpa"] = {"grid": [0.1]}  # changed after loading: check_space still says
    with pytest.raises(SweepSpaceError, match="alhpa: unknown parameter"):
        check_space(cfg)


@pytest.mark.slow
def test_alpha_sweep_with_asha(piped):
    from hnl_ray.tune import run_tune

    cfg, run, _ = piped
    sweep = load_config(os.path.join(REPO, "configs/tune/demo-alpha.yaml"),
                        small(cfg.llm.model) + ["train.optim.epochs=16", "train.eval.patience=50",
                                                "tune.grace_period=2",
                                                # a checkpoint period that is not the evaluation's (it failed
                                                # every trial: the report copied a checkpoint not yet written)
                                                "train.eval.every=2", "train.checkpoint_every=3"],
                        run_dir=run.path())
    res = run_tune(sweep, run)
    assert res["trials"] == 12 and res["stopped_early"] >= 4
    for f in ("results.csv", "results.md", "alpha.png", "best_config.yaml", "best_test.json"):
        assert run.exists("tune", "demo-alpha", f)
    assert set(res["test"]) >= {"recall@10", "ndcg@10"}


@pytest.mark.slow
def test_ray_job_submit_to_a_two_node_local_cluster(tiny_llm, tmp_path):
    # The job's `python` is looked up on the nodes' PATH: put this interpreter's bin first (an activated venv).
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
           "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    ray_bin = os.path.join(bindir, "ray")
    port, dash = 6391, 8291

    def ray(*args, check=True, timeout=180):
        done = subprocess.run([ray_bin, *args], env=env, capture_output=True, text=True, timeout=timeout)
        assert not check or done.returncode == 0, f"ray {args[:2]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    import tempfile

    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray puts sockets under it
    # The second node needs its own temp dir: sharing one, its runtime-env agent garbage-collects the job's
    # working_dir that the head's driver is running in (the driver then dies with its cwd gone).
    temp2 = tempfile.mkdtemp(prefix="rj", dir="/tmp")
    ray("start", "--head", f"--port={port}", f"--dashboard-port={dash}", "--num-cpus=2",
        "--object-store-memory=300000000", "--include-dashboard=true", "--disable-usage-stats",
        "--dashboard-agent-listen-port=52491", f"--temp-dir={temp}")
    try:
        # Own agent ports: the suite's Ray already holds the default (52365), and a node whose agent cannot bind
        # never registers, so the job API keeps answering "No available agent".
        ray("start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--object-store-memory=200000000",
            "--dashboard-agent-listen-port=52492", f"--temp-dir={temp2}")
        # The dashboard's job API comes up a little after `ray start` returns.
        for _ in range(60):
            if ray("job", "list", f"--address=http://127.0.0.1:{dash}", check=False, timeout=30).returncode == 0:
                break
            time.sleep(2)
        run_dir = tmp_path / "jobrun"
        sets = []
        for s in small(tiny_llm) + ["ray.num_cpus=null", "ray.object_store_memory=null"]:
            sets += ["--set", s]
        job_id = f"hnl-test-{os.getpid()}"
        submit = ["job", "submit", f"--address=http://127.0.0.1:{dash}", "--submission-id", job_id,
                  "--working-dir", REPO, "--runtime-env", os.path.join(REPO, "runtime_env.yaml"), "--no-wait", "--",
                  "python", "-m", "hnl_ray.cli", "run", "--config", "configs/demo.yaml", "--run-dir", str(run_dir), *sets]
        for _ in range(40):  # the job API answers before the nodes' agents have registered ("No available agent")
            done = ray(*submit, check=False)
            if done.returncode == 0 or "No available agent" not in done.stdout + done.stderr:
                break
            time.sleep(3)
        assert done.returncode == 0, f"ray job submit failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        deadline, status = time.time() + 900, ""
        while time.time() < deadline:
            st = ray("job", "status", f"--address=http://127.0.0.1:{dash}", job_id, check=False)
            status = st.stdout + st.stderr  # Ray's CLI logs the status line to stderr
            if any(s in status.upper() for s in ("SUCCEEDED", "FAILED", "STOPPED")):
                break
            time.sleep(5)
        got = ray("job", "logs", f"--address=http://127.0.0.1:{dash}", job_id, check=False)
        logs = got.stdout + got.stderr
        assert "SUCCEEDED" in status.upper(), logs[-4000:]
        assert (run_dir / "report.md").exists() and (run_dir / "hardneg" / "manifest.json").exists()
        st = ray("status", f"--address=127.0.0.1:{port}", check=False)
        nodes = st.stdout + st.stderr
        assert nodes.count("node_") >= 2, nodes
    finally:
        # Stop only this cluster's processes (`ray stop` would also stop the test session's own Ray).
        import psutil

        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(t in part for part in (p.info["cmdline"] or []) for t in (temp, temp2)):
                    p.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
