"""HNLMRec: teacher mining, the contrastive losses, the encoder's pooling, semantic alignment in CF training,
Ray Train fine-tuning with a killed worker, and the bad inputs of the method."""

import math
import os
import threading
import time

import numpy as np
import pyarrow as pa
import pytest
import torch

from cfhelpers import random_data
from hnl_ray import manifest
from hnl_ray.cf.mining import mine_targets
from hnl_ray.cf.semantic import (Adapter, AlignTargets, PairIndex, SemanticInputError, SemanticProvider,
                                 alignment_term)
from hnl_ray.arrays import vector_column
from hnl_ray.artifacts import Artifacts
from hnl_ray.config import load_config
from hnl_ray.config.hnlmrec import FinetuneConfig
from hnl_ray.llm.contrastive import infonce_loss, pairwise_loss
from hnl_ray.llm.encoder import EncoderError, LLMEncoder
from hnl_ray.stages import run_stage
from hnl_ray.stages.train import train_one
from hnl_ray.storage import RunDir

# ------------------------------------------------------------------------------------------------ teacher


@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_teacher_targets_never_a_positive_nor_over_the_rho_bound(gamma):
    data = random_data(n_users=30, n_items=50, per_user=10, seed=3)
    g = torch.Generator().manual_seed(0)
    ue, ie = torch.randn(30, 8, generator=g), torch.randn(50, 8, generator=g)
    text = torch.nn.functional.normalize(torch.randn(50, 6, generator=g), dim=1)
    u, i = data.train
    m = mine_targets(u, i, ue, ie, data.train_csr, k=4, rho=0.95, gamma=gamma, item_text=text, chunk=64)
    scores = (ue @ ie.T).numpy()
    ok = m.items >= 0
    assert ok.any(1).mean() > 0.5  # a pair whose positive the teacher scores lowest has none
    rows, k = np.nonzero(ok)
    j = m.items[rows, k]
    assert not data.positives.contains(u[rows], j).any()
    s_pos = scores[u, i]
    bound = np.where(s_pos < 0, np.minimum(0.95 * s_pos, s_pos), 0.95 * s_pos)
    assert (scores[u[rows], j] < bound[rows] + 1e-6).all()
    assert np.allclose(m.scores[rows, k], scores[u[rows], j], atol=1e-5)
    # the top K of the rank among the eligible, in order, computed by hand for a few pairs
    sim = (text @ text.T).numpy()
    for r in range(0, len(u), 23):
        eligible = [x for x in range(50) if not data.positives.contains(np.array([u[r]]), np.array([x]))[0]
                    and scores[u[r], x] < bound[r]]
        rank = sorted(eligible, key=lambda x: -(scores[u[r], x] + gamma * sim[i[r], x]))
        assert m.items[r].tolist() == rank[:4]


def test_teacher_targets_depend_on_the_positive_and_rho_drops_likely_false_negatives():
    data = random_data(n_users=3, n_items=20, per_user=4, seed=1)
    u, i = data.train
    ue = torch.tensor([[1.0, 0.0]] * 3)
    ie = torch.zeros(20, 2)
    ie[:, 0] = torch.linspace(0, 1, 20)  # higher id, higher score
    text = torch.nn.functional.normalize(torch.randn(20, 4, generator=torch.Generator().manual_seed(5)), dim=1)
    loose = mine_targets(u, i, ue, ie, data.train_csr, k=2, rho=100.0)
    strict = mine_targets(u, i, ue, ie, data.train_csr, k=2, rho=0.5)
    assert strict.rejected_by_rho > loose.rejected_by_rho == 0
    # with gamma, two positives of the same user get different targets (text similarity to each positive)
    pc = mine_targets(u, i, ue, ie * 1e-3, data.train_csr, k=1, rho=100.0, gamma=1.0, item_text=text)
    first = u == 0
    assert len(set(pc.items[first, 0].tolist())) > 1
    with pytest.raises(ValueError, match="teacher.targets"):
        mine_targets(u, i, ue, ie, data.train_csr, k=21, rho=0.95)


# ------------------------------------------------------------------------------------------------ losses


def test_pairwise_and_infonce_losses_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    tau = 0.5
    c = 1 / math.sqrt(2)  # cos(q0, p1) = cos(q1, p1)
    # pairs (i, j != i): (0, 1): (1 - c)/tau ; (1, 0): (c - 0)/tau
    expect = -(math.log(1 / (1 + math.exp(-(1 - c) / tau))) + math.log(1 / (1 + math.exp(-c / tau)))) / 2
    assert pairwise_loss(q, p, tau).item() == pytest.approx(expect, rel=1e-6)
    s = torch.tensor([[1.0, c], [0.0, c]]) / tau
    expect_nce = (-torch.log_softmax(s, 1)[0, 0] - torch.log_softmax(s, 1)[1, 1]).item() / 2
    assert infonce_loss(q, p, tau).item() == pytest.approx(expect_nce, rel=1e-6)
    # extra random negatives only add columns
    assert pairwise_loss(q, torch.cat([p, torch.tensor([[-1.0, 0.0]])]), tau).item() > 0


# ------------------------------------------------------------------------------------------------ encoder


def test_pooling_is_the_same_in_training_and_inference(tiny_llm):
    cfg = FinetuneConfig(max_query_tokens=64)
    enc = LLMEncoder(tiny_llm, cfg).eval()
    with torch.no_grad():  # make the adapter non-trivial
        for name, prm in enc.model.named_parameters():
            if "lora_B" in name:
                prm.normal_(0, 0.05)
    texts = ["a short query", "a longer query about dinosaurs and space rockets for kids"]
    with torch.no_grad():
        train_time = enc.encode_queries(texts)
        tensors = enc.trainable_state()
        inf = LLMEncoder(tiny_llm, cfg)
        inf.load_trainable(tensors)
        merged = inf.merge().eval().encode_queries(texts)
    cos = torch.nn.functional.cosine_similarity(train_time, merged, dim=1)
    assert (cos > 0.999).all()
    # last-token pooling reads the appended end token of each (right-padded) row
    tok = enc.tokenize(texts, 64, True)
    last = tok["attention_mask"].sum(1) - 1
    assert (tok["input_ids"][torch.arange(2), last] == enc.tok.eos_token_id).all()


def test_lora_target_that_does_not_exist_is_named(tiny_llm):
    cfg = FinetuneConfig(lora={"target_modules": ["q_proj", "qkv_fused"]})
    with pytest.raises(EncoderError, match=r"finetune.lora.target_modules: qkv_fused not found.*q_proj"):
        LLMEncoder(tiny_llm, cfg)


def test_base_model_without_chat_template_is_refused(tiny_llm, tmp_path):
    import json
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_llm, bare)
    tc = json.loads((bare / "tokenizer_config.json").read_text())
    tc.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(tc))
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(EncoderError, match="has no chat template.*use_chat_template: false"):
        LLMEncoder(str(bare), FinetuneConfig())
    LLMEncoder(str(bare), FinetuneConfig(use_chat_template=False))  # the documented fix works


# ------------------------------------------------------------------------------------------------ alignment


def test_pair_index_lookup_and_fallbacks():
    vecs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    idx = PairIndex(np.array([0, 0, 1]), np.array([3, 4, 2]), vecs, n_users=3, n_items=5)
    out, has = idx.lookup(np.array([0, 0, 1, 2]), np.array([4, 2, 2, 1]), "user_mean")
    assert has.tolist() == [True, True, True, False]
    assert out[0].tolist() == [0.0, 1.0] and out[1].tolist() == [0.5, 0.5] and out[2].tolist() == [1.0, 1.0]
    assert out[3].tolist() == [0.0, 0.0]  # no embedding, no mean: no mixing (never noise)
    out, has = idx.lookup(np.array([0, 0]), np.array([4, 2]), "none")
    assert has.tolist() == [True, False] and out[1].tolist() == [0.0, 0.0]


def test_alignment_loss_by_hand_skips_fallback_vectors():
    from types import SimpleNamespace

    # vectors for pairs (0, 3) and (1, 2) only; targets for those and for (0, 4), which falls back to user 0's mean
    idx = PairIndex(np.array([0, 1]), np.array([3, 2]), np.array([[1.0, 0.0], [0.0, 2.0]], np.float32), 2, 5)
    targets = AlignTargets.build(np.array([0, 1, 0]), np.array([3, 2, 4]), np.array([1, 0, 2]), n_items=5)
    adapter = Adapter(2, [], 2)
    with torch.no_grad():
        adapter.net[0].weight.copy_(torch.eye(2))
        adapter.net[0].bias.zero_()
    provider = SemanticProvider(idx, adapter, "user_mean", torch.device("cpu"), detach=True)
    users, pos = np.array([0, 1, 0]), np.array([3, 2, 4])
    mixed, has = provider(users, pos)
    assert has.tolist() == [True, True, True] and not mixed.requires_grad  # `align`: no CF-loss gradient
    items = torch.tensor([[9.0, 9.0], [1.0, 1.0], [0.0, 0.0], [5.0, 5.0], [5.0, 5.0]])
    ctx = SimpleNamespace(users=users, user_vec=torch.zeros(3, 2), emb=SimpleNamespace(items=items))
    name, loss = alignment_term(provider, targets, weight=2.0)(ctx)
    # (0,3) -> item 1: |(1,0)-(1,1)|^2 = 1; (1,2) -> item 0: |(0,2)-(9,9)|^2 = 81 + 49 = 130; (0,4) is a fallback
    assert name == "align" and loss.item() == pytest.approx(2.0 * (1 + 130) / 2)
    loss.backward()
    assert adapter.net[0].weight.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hnl")
    cfg = load_config("configs/demo.yaml", ["data.n_users=60", "data.n_items=40"], run_dir=str(root))
    run_stage("prepare", cfg)
    return cfg, RunDir(str(root))


def fake_hardneg(run: RunDir, pairs: tuple[np.ndarray, np.ndarray], dim: int, seed: int = 0) -> None:
    u, i = pairs
    v = np.random.default_rng(seed).normal(size=(len(u), dim)).astype(np.float16)
    run.write_parquet("hardneg/part-00000.parquet", pa.table({
        "id": [f"pair:{a}:{b}" for a, b in zip(u, i)], "user_idx": u.astype(np.int32),
        "item_idx": i.astype(np.int32), "vector": vector_column(v)}))
    manifest.write(run, "hardneg", stage="hardneg", fp=f"fake{seed}", config_part={}, inputs={}, outputs=[],
                   counts={}, timings={})


def fake_teacher(run: RunDir, pairs: tuple[np.ndarray, np.ndarray], n_items: int, seed: int = 0) -> None:
    """teacher/pairs.parquet for the pairs, with arbitrary hard negatives (the `align` objective's targets)."""
    u, i = pairs
    j = np.random.default_rng(seed).integers(0, n_items, len(u))
    run.write_parquet("teacher/pairs.parquet", pa.table({
        "user_idx": u.astype(np.int32), "item_idx": i.astype(np.int32), "neg_item_idx": j.astype(np.int32)}))
    manifest.write(run, "teacher", stage="teacher", fp=f"fake{seed}", config_part={}, inputs={}, outputs=[],
                   counts={}, timings={})


def semantic_cfg(cfg, *sets):
    return load_config("configs/demo.yaml", ["data.n_users=60", "data.n_items=40", "train.runs={}",
                                             "train.sampler.name=semantic", "train.optim.epochs=2",
                                             "train.sampler.semantic.cl_weight=0.1", *sets],
                       run_dir=cfg.run_dir)


def _semantic_trainer(run, data, *sets):
    from hnl_ray.stages.train import build_run, semantic_parts

    c = semantic_cfg(_cfg_of(run), *sets)
    parts, _ = semantic_parts(c.train, Artifacts(run), data)
    t = build_run(c.train, Artifacts(run), data, run.sub("cf", "sem-test"), "sem-test", 0, progress=False,
                  semantic=parts)
    return t, parts.extra_modules[0]


def _cfg_of(run):
    return load_config("configs/demo.yaml", ["data.n_users=60", "data.n_items=40"], run_dir=run.path())


@pytest.mark.parametrize("objective", ["align", "joint"])
def test_adapter_weights_change_after_a_step(demo_run, objective):
    _, run = demo_run
    data = Artifacts(run).cf_data()
    fake_hardneg(run, data.train, dim=24)
    fake_teacher(run, data.train, data.n_items)
    from hnl_ray.cf.semantic import hardneg_index
    from hnl_ray.stages.train import semantic_arrays

    arrays, _ = semantic_arrays(semantic_cfg(_cfg_of(run)).train, Artifacts(run))
    norms = hardneg_index(arrays, data).vecs.norm(dim=1)  # cosine-trained vectors: directions only
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    t, adapter = _semantic_trainer(run, data, "train.sampler.semantic.alpha=0.5",
                                   f"train.sampler.semantic.adapter_objective={objective}")
    before = [p.detach().clone() for p in adapter.parameters()]
    users, pos = data.train[0][:64], data.train[1][:64]
    parts_loss = t._step(users, pos, 1, 0)
    assert parts_loss["cl"] > 0
    assert ("align" in parts_loss) == (objective == "align")
    after = list(adapter.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # the reference code's adapter never moves
    assert isinstance(adapter, Adapter)


def test_align_objective_cuts_the_cf_loss_from_the_adapter_and_learns_the_targets(demo_run):
    _, run = demo_run
    data = Artifacts(run).cf_data()
    fake_hardneg(run, data.train, dim=24, seed=4)
    fake_teacher(run, data.train, data.n_items, seed=4)
    users, pos = data.train[0][:64], data.train[1][:64]
    # Without the alignment term, nothing but the CF loss could move the adapter: under `align` it must not.
    t, adapter = _semantic_trainer(run, data, "train.sampler.semantic.alpha=0.5",
                                   "train.sampler.semantic.align_weight=0")
    t._step(users, pos, 1, 0)
    assert all(p.grad is None or not p.grad.any() for p in adapter.parameters())
    t, adapter = _semantic_trainer(run, data, "train.sampler.semantic.alpha=0.5",
                                   "train.sampler.semantic.adapter_objective=joint")
    t._step(users, pos, 1, 0)
    assert any(p.grad is not None and p.grad.any() for p in adapter.parameters())
    # With it, the adapter's outputs move towards the targets' CF embeddings.
    t, adapter = _semantic_trainer(run, data, "train.sampler.semantic.alpha=0.5", "train.optim.lr=0.01")
    first = t._step(users, pos, 1, 0)["align"]
    for b in range(30):
        last = t._step(users, pos, 1, b + 1)["align"]
    assert last < 0.5 * first


def test_align_objective_without_teacher_pairs_names_the_stage(tmp_path):
    cfg = load_config("configs/demo.yaml", ["data.n_users=40", "data.n_items=30"], run_dir=str(tmp_path))
    run_stage("prepare", cfg)
    run = RunDir(str(tmp_path))
    fake_hardneg(run, Artifacts(run).cf_data().train, dim=8)
    with pytest.raises(SemanticInputError, match=r"run `hnl-ray teacher`, or set "
                                                 r"train.sampler.semantic.adapter_objective: joint"):
        train_one(semantic_cfg(cfg), run, "no-teacher", progress=False)


def test_semantic_run_end_to_end_and_alpha_zero_control(demo_run):
    cfg, run = demo_run
    data = Artifacts(run).cf_data()
    fake_hardneg(run, data.train, dim=24, seed=1)
    fake_teacher(run, data.train, data.n_items, seed=1)
    res = train_one(semantic_cfg(cfg), run, "hnlmrec", progress=False)
    assert res["semantic"]["llm_dim"] == 24 and 0 <= res["test"]["recall@10"] <= 1
    assert res["semantic"]["pairs_with_align_target"] > 0
    res0 = train_one(semantic_cfg(cfg, "train.sampler.semantic.alpha=0"), run, "hnlmrec-a0", progress=False)
    assert res0["test"]["recall@10"] >= 0


def test_hardneg_dimension_mismatch_and_unknown_pairs_fail_early(demo_run):
    cfg, run = demo_run
    data = Artifacts(run).cf_data()
    fake_hardneg(run, data.train, dim=24, seed=2)
    with pytest.raises(SemanticInputError, match=r"hardneg holds 24-dimensional embeddings, but "
                                                 r"train.sampler.semantic.llm_dim is 4096"):
        train_one(semantic_cfg(cfg, "train.sampler.semantic.llm_dim=4096"), run, "bad-dim", progress=False)
    fake_hardneg(run, (np.array([0, data.n_users + 5]), np.array([0, 1])), dim=24, seed=3)
    with pytest.raises(SemanticInputError, match="name users or items missing from the prepared data"):
        train_one(semantic_cfg(cfg), run, "bad-ids", progress=False)


def test_semantic_sampler_without_its_artifact_names_the_stage(tmp_path):
    cfg = load_config("configs/demo.yaml", ["data.n_users=40", "data.n_items=30", "train.runs={}",
                                            "train.sampler.name=semantic-item"], run_dir=str(tmp_path))
    run_stage("prepare", cfg)
    with pytest.raises(SemanticInputError, match=r"run `hnl-ray negatives` and `hnl-ray embed` first"):
        train_one(cfg, RunDir(str(tmp_path)), "x", progress=False)


# ------------------------------------------------------------------------------------------------ Ray Train


def _fake_profiles_and_teacher(cfg, run: RunDir, target_seed: int = 0) -> None:
    """Minimal upstream artifacts for fine-tuning: profiles and teacher pairs (their targets drawn with
    `target_seed`: another seed stands for a teacher retrained on another machine, same fingerprint)."""
    data = Artifacts(run).cf_data()
    for folder, key, n in (("profiles/items", "item_idx", data.n_items), ("profiles/users", "user_idx",
                                                                           data.n_users)):
        run.write_parquet(f"{folder}/part-00000.parquet", pa.table({
            "id": [f"{key[:4]}:{k}" for k in range(n)], key: np.arange(n, dtype=np.int32),
            "status": ["ok"] * n, "summarization": [f"profile {k}" for k in range(n)]}))
        manifest.write(run, folder, stage=folder, fp="fake", config_part={}, inputs={}, outputs=[], counts={},
                       timings={})
    u, i = data.train
    rng = np.random.default_rng(target_seed)
    run.write_parquet("teacher/pairs.parquet", pa.table({
        "user_idx": u.astype(np.int32), "item_idx": i.astype(np.int32),
        "neg_item_idx": rng.integers(0, data.n_items, len(u)).astype(np.int32)}))
    manifest.write(run, "teacher", stage="teacher", fp="fake", config_part={}, inputs={}, outputs=["pairs.parquet"],
                   counts={}, timings={})


def test_finetune_on_ray_train_resumes_after_a_killed_worker(ray_session, tiny_llm, tmp_path):

    cfg = load_config("configs/demo.yaml", [
        "data.n_users=40", "data.n_items=30", f"finetune.base_model={tiny_llm}", "finetune.num_workers=2",
        "finetune.cpus_per_worker=0.5", "finetune.batch_size=4", "finetune.max_steps=40",
        "finetune.checkpoint_every=3", "finetune.max_failures=2", "finetune.max_query_tokens=48",
        "finetune.epochs=3", "finetune.lr=0.001", "hardneg.pairs_per_user=2", "hardneg.batch_size=16"],
        run_dir=str(tmp_path))
    run_stage("prepare", cfg)
    run = RunDir(str(tmp_path))
    _fake_profiles_and_teacher(cfg, run)
    killed = {}

    def killer():  # kill one training worker once the first checkpoint exists
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            # a checkpoint the controller has registered (its snapshot names one), not one mid-upload
            snaps = list((tmp_path / "finetune" / "ray").glob("*/checkpoint_manager_snapshot.json"))
            if snaps and "checkpoint_dir_name" in snaps[0].read_text():
                import psutil

                workers = [p for p in psutil.process_iter(["cmdline"])
                           if any("RayTrainWorker" in c for c in (p.info["cmdline"] or []))]
                if workers:
                    workers[-1].kill()
                    killed["pid"] = workers[-1].pid
            time.sleep(0.1)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    metrics = run_stage("finetune", cfg, run)
    th.join(timeout=1)
    assert killed, "no worker was killed: the run finished before its first checkpoint"
    assert metrics["steps"] == 40 and metrics["resumed"] >= 1
    assert (tmp_path / "finetune" / "adapter.safetensors").exists()
    res = run_stage("hardneg", cfg, run)
    assert res["pairs"] > 0 and res["check_min_cosine"] >= 0.999 and res["dtype"] == "float16"


@pytest.mark.slow
def test_a_checkpoint_carried_to_a_fresh_run_directory_resumes_to_the_same_adapter(ray_session, tiny_llm,
                                                                                     tmp_path):
    """A fine-tuning that outlasts a session: its step-3 checkpoint, carried into another run directory of the
    same config (finetune/carried/), is where that run starts; it ends with the uninterrupted run's adapter."""
    import json
    import shutil

    from safetensors.numpy import load_file

    sets = ["data.n_users=40", "data.n_items=30", f"finetune.base_model={tiny_llm}", "finetune.num_workers=1",
            "finetune.batch_size=4", "finetune.max_steps=6", "finetune.checkpoint_every=3",
            "finetune.max_query_tokens=48", "finetune.epochs=3", "finetune.lr=0.001"]
    runs = {}
    for name in ("a", "b"):
        cfg = load_config("configs/demo.yaml", sets, run_dir=str(tmp_path / name))
        run_stage("prepare", cfg)
        _fake_profiles_and_teacher(cfg, RunDir(str(tmp_path / name)))
        runs[name] = cfg
    first = run_stage("finetune", runs["a"])
    assert first["steps"] == 6 and first["resumed"] == 0
    (ray_run,) = (tmp_path / "a" / "finetune" / "ray").glob("hnlmrec-*")
    def checkpoint_at(step: int):  # checkpoint_* folders (not Ray's checkpoint_manager_snapshot.json)
        return next(d for d in ray_run.glob("checkpoint_*")
                    if d.is_dir() and json.loads((d / "state.json").read_text())["step"] == step)

    step3 = checkpoint_at(3)
    carried = tmp_path / "b" / "finetune" / "carried"
    shutil.copytree(step3, carried)
    (carried / "carried.json").write_text(json.dumps({"fingerprint": ray_run.name.removeprefix("hnlmrec-"),
                                                      "step": 3}))
    second = run_stage("finetune", runs["b"])
    assert second["steps"] == 6 and second["resumed"] == 1
    assert len(second["teacher_targets"]) == 1  # the same targets before and after the resume
    a, b = (load_file(str(tmp_path / n / "finetune" / "adapter.safetensors")) for n in ("a", "b"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not carried.exists()  # used up

    # A run killed after its last step but before its manifest: its final checkpoint, carried, finishes the stage.
    step6 = checkpoint_at(6)
    cfg_c = load_config("configs/demo.yaml", sets, run_dir=str(tmp_path / "c"))
    run_stage("prepare", cfg_c)
    # ... on a machine whose retrained teacher gave other targets: used (same fingerprint), and said
    _fake_profiles_and_teacher(cfg_c, RunDir(str(tmp_path / "c")), target_seed=1)
    shutil.copytree(step6, tmp_path / "c" / "finetune" / "carried")
    # as a run begun before the record: its history without the digest, which `carry` wrote in carried.json
    state = json.loads((tmp_path / "c" / "finetune" / "carried" / "state.json").read_text())
    state["history"] = [r for r in state["history"] if r.get("event") != "supervision"]
    (tmp_path / "c" / "finetune" / "carried" / "state.json").write_text(json.dumps(state))
    (tmp_path / "c" / "finetune" / "carried" / "carried.json").write_text(
        json.dumps({"fingerprint": ray_run.name.removeprefix("hnlmrec-"), "step": 6,
                    "teacher_pairs": second["teacher_targets"][0]}))
    third = run_stage("finetune", cfg_c)
    assert third["steps"] == 6 and third["resumed"] == 1
    assert len(third["teacher_targets"]) == 2 and third["teacher_targets"][0] == second["teacher_targets"][0]
    c = load_file(str(tmp_path / "c" / "finetune" / "adapter.safetensors"))
    assert all(np.array_equal(a[k], c[k]) for k in a)


def test_a_carried_checkpoint_of_another_config_or_other_workers_is_not_loaded(tmp_path):
    from hnl_ray.errors import StageError
    from hnl_ray.stages.finetune import carried_checkpoint

    run = RunDir(str(tmp_path))
    run.write_text("finetune/carried/carried.json", '{"fingerprint": "other", "step": 3}')
    run.write_text("finetune/carried/state.json", '{"step": 3, "workers": 1, "batch_size": 32}')
    assert carried_checkpoint(Artifacts(run), "mine", 1, 32) is None
    assert carried_checkpoint(Artifacts(run), "other", 1, 32) == run.path("finetune", "carried")
    with pytest.raises(StageError, match=r"finetune.num_workers=1 and finetune.batch_size=32, this run has 2 and 32"):
        carried_checkpoint(Artifacts(run), "other", 2, 32)


def test_bf16_precision_computes_in_bf16_on_cpu_and_keeps_fp32_outputs(tiny_sentence):
    from hnl_ray.config import load_config
    from hnl_ray.stages.finetune import config_part

    seen = []
    out = {}
    for precision in ("auto", "fp32", "bf16"):
        cfg = FinetuneConfig(encoder="sentence", precision=precision, max_query_tokens=32)
        torch.manual_seed(0)
        enc = LLMEncoder(tiny_sentence, cfg).eval()
        lin = next(m for m in enc.model.modules() if isinstance(m, torch.nn.Linear))
        h = lin.register_forward_hook(lambda m, i, o: seen.append((precision, o.dtype)))
        with torch.no_grad(), enc.autocast(torch.device("cpu")):
            out[precision] = enc.encode_queries(["a wooden puzzle for kids", "a board game"])
        h.remove()
    assert dict(seen) == {"auto": torch.float32, "fp32": torch.float32, "bf16": torch.bfloat16}  # auto: CPU fp32
    assert all(v.dtype == torch.float32 for v in out.values())  # pooled vectors stay fp32
    assert torch.equal(out["auto"], out["fp32"])
    cos = torch.nn.functional.cosine_similarity(out["bf16"], out["fp32"], dim=1)
    assert (cos > 0.99).all() and not torch.equal(out["bf16"], out["fp32"])
    # how the steps are computed, as threads: not in the fingerprint (a carried checkpoint may go on in fp32)
    parts = [config_part(load_config(None, [f"finetune.precision={p}"]), "m") for p in ("auto", "fp32", "bf16")]
    assert parts[0] == parts[1] == parts[2] and "precision" not in parts[0]["finetune"]


@pytest.mark.slow
def test_a_bf16_fine_tuning_and_its_inference_agree(ray_session, tiny_sentence, tmp_path):
    cfg = load_config("configs/demo.yaml", [
        "data.n_users=40", "data.n_items=30", f"finetune.base_model={tiny_sentence}", "finetune.encoder=sentence",
        "finetune.precision=bf16", "finetune.num_workers=1", "finetune.batch_size=8", "finetune.max_steps=6",
        "finetune.max_query_tokens=48", "finetune.lr=0.001", "hardneg.pairs_per_user=2", "hardneg.batch_size=16"],
        run_dir=str(tmp_path))
    run_stage("prepare", cfg)
    run = RunDir(str(tmp_path))
    _fake_profiles_and_teacher(cfg, run)
    metrics = run_stage("finetune", cfg, run)
    assert metrics["steps"] == 6 and metrics["precision"] == ["bf16"]
    res = run_stage("hardneg", cfg, run)  # merged adapter in bf16 against the training-time forward in bf16
    assert res["pairs"] > 0 and res["check_min_cosine"] >= 0.999 and res["precision"] == "bf16"
