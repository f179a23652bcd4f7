"""The trainer on the synthetic demo data: learning, early stopping, resume, determinism, outputs, errors."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from hnl_ray.artifacts import Artifacts
from hnl_ray.cf.data import CFData
from hnl_ray.cf.evaluate import Evaluator
from hnl_ray.cf.trainer import Trainer, TrainingError
from hnl_ray.cli import app
from hnl_ray.config import load_config
from hnl_ray.stages import run_stage
from hnl_ray.stages.train import train_one
from hnl_ray.storage import RunDir

# A larger synthetic catalog than the demo's (K = 20 must be a small share of the items).
DATA = ["data.n_users=300", "data.n_items=200", "data.mean_interactions=22", "filters.k_core={user: 5, item: 5}",
        "train.eval.ks=[10, 20]", "train.eval.metric=ndcg@20"]
FAST = ["train.optim.lr=0.01", "train.optim.batch_size=512", "train.optim.epochs=40", "train.eval.patience=8",
        "train.model.dim=32"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfdemo")
    cfg = load_config("configs/demo.yaml", DATA, run_dir=str(root / "run"))
    run_stage("prepare", cfg)
    return cfg, RunDir(str(root / "run"))


def cfg_for(demo_run, tmp_path, *sets):
    cfg, run = demo_run
    c = load_config("configs/demo.yaml", [*DATA, *FAST, "train.runs={}", *sets], run_dir=str(tmp_path))
    # reuse the prepared data of the module fixture
    import shutil

    shutil.copytree(run.path("prepared"), tmp_path / "prepared")
    return c, RunDir(str(tmp_path))


def popularity_recall(data: CFData, k: int = 20) -> float:
    ev = Evaluator(data, "test", [k])
    counts = torch.tensor(data.item_counts, dtype=torch.float32)
    return ev.evaluate(torch.ones(data.n_users, 1), counts[:, None]).metrics[f"recall@{k}"]


@pytest.mark.parametrize("model", ["mf", "lightgcn"])
def test_models_learn_the_demo_data(demo_run, tmp_path, model):
    cfg, run = cfg_for(demo_run, tmp_path, f"train.model.name={model}", "train.optim.epochs=120",
                       "train.eval.patience=25")
    res = run_stage("train", cfg, run, progress=False)[f"{model}-uniform"]
    pop = popularity_recall(Artifacts(run).cf_data())
    assert res["test"]["recall@20"] > 1.3 * pop, (res["test"], pop)


def test_outputs_and_early_stopping_picks_the_validation_best(demo_run, tmp_path):
    cfg, run = cfg_for(demo_run, tmp_path, "train.eval.patience=3", "train.optim.epochs=300")
    res = run_stage("train", cfg, run, progress=False)["lightgcn-uniform"]
    folder = tmp_path / "cf" / "lightgcn-uniform"
    for f in ("metrics.json", "log.jsonl", "learning_curve.png", "per_user_test.parquet", "best.safetensors",
              "checkpoint/last.safetensors", "manifest.json"):
        assert (folder / f).exists(), f
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    valid = {r["epoch"]: r["valid"]["ndcg@20"] for r in log}
    assert res["best_epoch"] == max(valid, key=valid.get)
    assert res["stopped_early"] and res["epochs_run"] == res["best_epoch"] + 3
    # the reported validation metric is that of the chosen epoch (restored weights)
    assert res["valid"]["ndcg@20"] == pytest.approx(valid[res["best_epoch"]], abs=1e-6)
    per_user = pq.read_table(folder / "per_user_test.parquet")
    assert per_user.num_rows == res["test_users"]
    assert np.mean(per_user["recall@20"].to_numpy()) == pytest.approx(res["test"]["recall@20"], abs=1e-6)


def test_fixed_seed_reproduces_exactly(demo_run, tmp_path):
    a_cfg, a_run = cfg_for(demo_run, tmp_path / "a", "train.optim.epochs=6", "train.sampler.name=dns")
    b_cfg, b_run = cfg_for(demo_run, tmp_path / "b", "train.optim.epochs=6", "train.sampler.name=dns")
    a = run_stage("train", a_cfg, a_run, progress=False)["lightgcn-dns"]
    b = run_stage("train", b_cfg, b_run, progress=False)["lightgcn-dns"]
    assert a["test"] == b["test"] and a["valid"] == b["valid"]


@pytest.mark.parametrize("sampler", ["uniform", "mixgcf"])
def test_resume_after_interruption_matches_uninterrupted(demo_run, tmp_path, sampler):
    sets = ["train.optim.epochs=8", "train.eval.patience=50", f"train.sampler.name={sampler}",
            "train.sampler.candidates=4"]
    cfg, run = cfg_for(demo_run, tmp_path / "full", *sets)
    full = run_stage("train", cfg, run, progress=False)[f"lightgcn-{sampler}"]

    cfg2, run2 = cfg_for(demo_run, tmp_path / "cut", *sets)
    data = Artifacts(run2).cf_data()
    name = f"lightgcn-{sampler}"
    first = Trainer(cfg2.train, data, run2.sub("cf", name), name, cfg2.seed, progress=False)
    assert first.fit(stop_after_epoch=3) == {"interrupted_after_epoch": 3}
    del first  # "killed": a new process-like trainer resumes from the checkpoint
    resumed = Trainer(cfg2.train, data, run2.sub("cf", name), name, cfg2.seed, progress=False).fit()
    assert resumed["test"] == full["test"] and resumed["best_epoch"] == full["best_epoch"]
    log = (tmp_path / "cut" / "cf" / name / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in log] == list(range(1, 9))


def test_nan_loss_names_epoch_and_batch(demo_run, tmp_path):
    cfg, run = cfg_for(demo_run, tmp_path)
    trainer = Trainer(cfg.train, Artifacts(run).cf_data(), run.sub("cf", "nan"), "nan", cfg.seed, progress=False)
    trainer.extra_losses.append(lambda ctx: ("boom", torch.tensor(float("nan"))))
    with pytest.raises(TrainingError, match=r"loss is nan at epoch 1, batch 0"):
        trainer.fit()


def test_ngcf_and_popularity_sampler_train(demo_run, tmp_path):
    cfg, run = cfg_for(demo_run, tmp_path, "train.model.name=ngcf", "train.sampler.name=popularity",
                       "train.optim.epochs=3", "train.model.layers=2")
    res = run_stage("train", cfg, run, progress=False)["ngcf-popularity"]
    assert 0 <= res["test"]["recall@20"] <= 1 and res["epochs_run"] == 3


def test_stage_skips_when_fresh_and_redoes_on_change(demo_run, tmp_path):
    cfg, run = cfg_for(demo_run, tmp_path, "train.optim.epochs=2")
    first = train_one(cfg, run, "lightgcn-uniform", progress=False)
    assert not first.get("skipped")
    assert train_one(cfg, run, "lightgcn-uniform", progress=False).get("skipped")
    cfg2, _ = load_config("configs/demo.yaml", [*DATA, *FAST, "train.runs={}", "train.optim.epochs=3"],
                          run_dir=str(tmp_path)), None
    again = train_one(cfg2, run, "lightgcn-uniform", progress=False)
    assert not again.get("skipped") and again["epochs_run"] == 3
    # settings a classic sampler never reads (the semantic sampler's) leave it up to date
    cfg3 = load_config("configs/demo.yaml", [*DATA, *FAST, "train.runs={}", "train.optim.epochs=3",
                                             "train.sampler.semantic.alpha=0.3"], run_dir=str(tmp_path))
    assert train_one(cfg3, run, "lightgcn-uniform", progress=False).get("skipped")


def test_cli_train_named_runs_and_missing_prepare(demo_run, tmp_path):
    cfg, run = cfg_for(demo_run, tmp_path)
    runner = CliRunner()
    sets = [x for s in DATA for x in ("--set", s)]
    res = runner.invoke(app, ["train", "--config", "configs/demo.yaml", "--run-dir", str(tmp_path), *sets,
                              "--set", "train.optim.epochs=2", "--run", "dns"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cf" / "dns" / "metrics.json").exists() and not (tmp_path / "cf" / "uniform").exists()
    res = runner.invoke(app, ["train", "--config", "configs/demo.yaml", "--run-dir", str(tmp_path / "empty")])
    assert res.exit_code == 1 and "hnl-ray prepare" in res.output
    res = runner.invoke(app, ["train", "--set", "train.sampler.name=magic"])
    assert res.exit_code == 2 and "train.sampler.name" in res.output
