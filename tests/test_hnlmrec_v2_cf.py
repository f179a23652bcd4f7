"""HNLMRec v2, CF side, through the train stage: the hnlmrec sampler from each candidate source, the mixing path's
controls and its item-level adapter objective, and a control asked for without its artifact."""

import numpy as np
import pyarrow as pa
import pytest

from hnl_ray import manifest
from hnl_ray.artifacts import Artifacts
from hnl_ray.cf.data import CFData
from hnl_ray.cf.neighbours import pair_neighbours
from hnl_ray.stages.train import train_one
from hnl_ray.config import load_config
from hnl_ray.stages import run_stage
from hnl_ray.arrays import vector_column
from hnl_ray.stages.candidates import CandidateInputError
from hnl_ray.storage import RunDir

SMALL = ["data.n_users=60", "data.n_items=40"]


def _unit(rng, n, d):
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _done(run, folder, fp):
    manifest.write(run, folder, stage=folder, fp=fp, config_part={}, inputs={}, outputs=[], counts={}, timings={})


def write_artifacts(run: RunDir, data: CFData, with_base: bool = True) -> None:
    """What the embed, teacher and hardneg stages write, in their real formats, with random vectors."""
    rng = np.random.default_rng(0)
    items = np.arange(data.n_items, dtype=np.int32)
    run.write_parquet("embeddings/items.parquet", pa.table({"item_idx": items,
                                                            "vector": vector_column(_unit(rng, data.n_items, 8))}))
    _done(run, "embeddings", "e")
    u, i = data.train
    targets = np.stack([rng.integers(0, data.n_items, len(u)) for _ in range(2)], 1)
    run.write_parquet("teacher/pairs.parquet", pa.table({
        "user_idx": np.repeat(u, 2).astype(np.int32), "item_idx": np.repeat(i, 2).astype(np.int32),
        "neg_item_idx": targets.ravel().astype(np.int32), "k": np.tile([0, 1], len(u)).astype(np.int8)}))
    _done(run, "teacher", "t")
    for folder, neighbours in (("hardneg", True), ("hardneg-base", False)):
        if folder == "hardneg-base" and not with_base:
            continue
        cat = _unit(rng, data.n_items, 12)
        vec = _unit(rng, len(u), 12)
        cols = {"id": [f"pair:{a}:{b}" for a, b in zip(u, i)], "user_idx": u.astype(np.int32),
                "item_idx": i.astype(np.int32), "vector": vector_column(vec.astype(np.float16))}
        if neighbours:
            nb = pair_neighbours(vec, u, cat, data.train_csr, 6).astype(np.int32)
            cols["neighbours"] = vector_column(nb)
        run.write_parquet(f"{folder}/part-00000.parquet", pa.table(cols))
        run.write_parquet(f"{folder}/items.parquet", pa.table({"item_idx": items, "vector": vector_column(cat)}))
        _done(run, folder, folder)


@pytest.fixture(scope="module")
def v2_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2")
    cfg = load_config("configs/demo.yaml", SMALL, run_dir=str(root))
    run_stage("prepare", cfg)
    run = RunDir(str(root))
    data = Artifacts(run).cf_data()
    write_artifacts(run, data)
    return cfg, run


def _cfg(run, *sets):
    return load_config("configs/demo.yaml", [*SMALL, "train.runs={}", "train.optim.epochs=2", *sets],
                       run_dir=run.path())


@pytest.mark.parametrize("source", ["text", "hardneg", "base", "shuffled", "random", "teacher"])
def test_hnlmrec_sampler_runs_from_each_source(v2_run, source):
    _, run = v2_run
    cfg = _cfg(run, "train.sampler.name=hnlmrec", f"train.sampler.hnlmrec.source={source}",
               "train.sampler.hnlmrec.neighbours=2", "train.sampler.hnlmrec.uniform=4")
    res = train_one(cfg, run, f"v2-{source}", progress=False)
    assert res["semantic"]["source"] == source and res["semantic"]["pairs_with_neighbours"] > 0
    log = [line for line in run.read_text(f"cf/v2-{source}/log.jsonl").splitlines() if line]
    import json

    stats = json.loads(log[-1])["sampler"]
    assert 0 <= stats["guard_rejected_share"] <= 1 and stats["neighbour_pick_share"] > 0


@pytest.mark.parametrize("source", ["hardneg", "base", "shuffled", "random", "teacher"])
def test_mixing_path_controls_run_through_the_same_path(v2_run, source):
    _, run = v2_run
    cfg = _cfg(run, "train.sampler.name=semantic", f"train.sampler.semantic.source={source}",
               "train.sampler.semantic.alpha=0.5")
    res = train_one(cfg, run, f"mix-{source}", progress=False)
    assert res["semantic"]["source"] == source and 0 <= res["valid"]["ndcg@10"] <= 1


def test_item_objective_reports_held_out_item_recall(v2_run):
    _, run = v2_run
    cfg = _cfg(run, "train.sampler.name=semantic", "train.sampler.semantic.adapter_objective=item",
               "train.sampler.semantic.item_holdout=0.25")
    res = train_one(cfg, run, "mix-item", progress=False)
    sem = res["semantic"]
    assert sem["items_held_out"] == 10 and 0 <= sem["item_recall@10_held_out"] <= 1
    assert "item_nce" in run.read_text("cf/mix-item/log.jsonl")


def test_controls_without_their_artifact_name_the_config_key(tmp_path):
    cfg = load_config("configs/demo.yaml", SMALL, run_dir=str(tmp_path))
    run_stage("prepare", cfg)
    run = RunDir(str(tmp_path))
    write_artifacts(run, Artifacts(run).cf_data(), with_base=False)
    with pytest.raises(CandidateInputError, match="train.sampler.hnlmrec.source: 'base' needs"):
        train_one(_cfg(run, "train.sampler.name=hnlmrec", "train.sampler.hnlmrec.source=base"), run, "x",
                  progress=False)
    from hnl_ray.cf.semantic import SemanticInputError

    with pytest.raises(SemanticInputError, match="train.sampler.semantic.source: 'base' needs"):
        train_one(_cfg(run, "train.sampler.name=semantic", "train.sampler.semantic.source=base"), run, "y",
                  progress=False)
    with pytest.raises(CandidateInputError, match=r"train.sampler.hnlmrec.neighbours: 8 asked, but .* stores 6"):
        train_one(_cfg(run, "train.sampler.name=hnlmrec", "train.sampler.hnlmrec.neighbours=8"), run, "z",
                  progress=False)
