"""HNLMRec v2, the LLM side: the encoder rung (a sentence-transformers encoder, mean pooling, same training and
inference), the multi-positive losses against a hand computation, and their batch masks."""

import json
import math
import shutil

import pytest
import torch

from hnl_ray.config.hnlmrec import FinetuneConfig
from hnl_ray.llm.contrastive import (in_batch_accuracy, infonce_loss, multi_positive_loss, pairwise_loss,
                                     target_masks)
from hnl_ray.llm.encoder import EncoderError, LLMEncoder, multi_positive_batch

# ------------------------------------------------------------------------------------------------ losses


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_multi_positive_losses_by_hand():
    # query 0 has positives p0, p1; query 1 has p2; p3 is an extra negative; p1's item is also q1's target,
    # so for q1 column 1 is ignored (neither positive nor negative)
    q = [[1.0, 0.0], [0.0, 1.0]]
    p = [[1.0, 0.2], [0.6, 0.8], [0.1, 1.0], [-1.0, 0.3]]
    tau = 0.5
    s = [[_cos(a, b) / tau for b in p] for a in q]
    pos = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.bool)
    ign = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.bool)
    negs = {0: [2, 3], 1: [0, 3]}
    poss = {0: [0, 1], 1: [2]}
    # infonce: each positive against the query's negatives only, averaged per query, then over queries
    nce = 0.0
    for b in (0, 1):
        terms = [-(s[b][j] - math.log(math.exp(s[b][j]) + sum(math.exp(s[b][n]) for n in negs[b])))
                 for j in poss[b]]
        nce += sum(terms) / len(terms) / 2
    got = multi_positive_loss("infonce", torch.tensor(q), torch.tensor(p), pos, tau, ign)
    assert got.item() == pytest.approx(nce, rel=1e-6)
    # pairwise: -log sigmoid(s+ - s-) over (own positive, negative) pairs, per query then over queries
    pw = 0.0
    for b in (0, 1):
        terms = [math.log(1 + math.exp(-(s[b][j] - s[b][n]))) for j in poss[b] for n in negs[b]]
        pw += sum(terms) / len(terms) / 2
    got = multi_positive_loss("pairwise", torch.tensor(q), torch.tensor(p), pos, tau, ign)
    assert got.item() == pytest.approx(pw, rel=1e-6)


def test_one_positive_on_the_diagonal_equals_the_single_positive_losses():
    g = torch.Generator().manual_seed(0)
    q, p = torch.randn(5, 8, generator=g), torch.randn(7, 8, generator=g)  # 2 extra negatives
    pos = torch.zeros(5, 7, dtype=torch.bool)
    pos[torch.arange(5), torch.arange(5)] = True
    assert multi_positive_loss("infonce", q, p, pos, 0.1).item() == pytest.approx(infonce_loss(q, p, 0.1).item(),
                                                                                 rel=1e-5)
    assert multi_positive_loss("pairwise", q, p, pos, 0.1).item() == pytest.approx(
        pairwise_loss(q, p, 0.1).item(), rel=1e-5)
    with pytest.raises(ValueError, match="without a positive"):
        multi_positive_loss("infonce", q, p, torch.zeros_like(pos), 0.1)


def test_target_masks_layout_padding_and_in_batch_duplicates():
    targets = torch.tensor([[7, 3], [3, -1]])  # query 1 has one target (slot 3 pads); item 3 is in both
    pos, ign = target_masks(targets, torch.tensor([9]))
    assert pos.tolist() == [[True, True, False, False, False], [False, False, True, False, False]]
    # q0: q1's slot of item 3 is ignored, the padding slot too; q1: q0's slot of item 3, and the padding slot
    assert ign.tolist() == [[False, False, True, True, False], [False, True, False, True, False]]
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.0, 1.0], [1.0, 0.1], [0.0, 1.0], [0.0, 1.0], [0.5, 0.5]])
    # q0's best is its own slot 1; q1's best (ignoring the duplicate slot 0 is not needed: slot 0 is q0's
    # positive of another item, a real negative) ties between 0 and 2 -> argmax picks 0, a miss
    assert in_batch_accuracy(q, p, pos, ign) == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------ encoder rung


def test_encoder_rung_defaults_and_the_same_pooling_in_training_and_inference(tiny_sentence):
    from sentence_transformers import SentenceTransformer

    cfg = FinetuneConfig(encoder="sentence", max_query_tokens=64)
    assert (cfg.pooling, cfg.use_chat_template) == ("mean", False)
    assert "query" in cfg.lora.target_modules
    assert FinetuneConfig.model_validate(cfg.model_dump()) == cfg  # what the Ray workers receive
    texts = ["a short query", "a longer query about microscopes, pipettes and lab coats for a school"]
    base = LLMEncoder(tiny_sentence, cfg).eval()
    with torch.no_grad():  # before training, the rung is the published encoder: the same vectors as ST's own
        ours = base.encode_queries(texts)
    theirs = torch.from_numpy(SentenceTransformer(tiny_sentence, device="cpu").encode(texts))
    assert (torch.nn.functional.cosine_similarity(ours, theirs, dim=1) > 0.999).all()
    with torch.no_grad():  # a non-trivial adapter: training-time forward vs merged inference
        for name, prm in base.model.named_parameters():
            if "lora_B" in name:
                prm.normal_(0, 0.05)
        train_time = base.encode_queries(texts)
        inf = LLMEncoder(tiny_sentence, cfg)
        inf.load_trainable(base.trainable_state())
        merged = inf.merge().eval().encode_queries(texts)
    assert (torch.nn.functional.cosine_similarity(train_time, merged, dim=1) > 0.999).all()
    assert (torch.nn.functional.cosine_similarity(train_time, ours, dim=1) < 0.9999).any()  # LoRA did act


def test_encoder_rung_trains_with_multiple_positives(tiny_sentence):
    cfg = FinetuneConfig(encoder="sentence", max_query_tokens=64, loss="infonce", lr=1e-2)
    enc = LLMEncoder(tiny_sentence, cfg)
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=cfg.lr)
    queries = ["user likes microscopes", "user likes pipettes"]
    passages = ["slide covers", "lens cloth", "pipette tips", "pipette tips"]  # q1 has one target, padded
    targets = torch.tensor([[10, 11], [12, -1]])
    losses = []
    for _ in range(8):
        loss, q, p, tokens, (pos, ign) = multi_positive_batch(enc, enc, queries, passages, targets,
                                                              torch.device("cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert tokens > 0 and pos.sum() == 3 and losses[-1] < losses[0]


def test_model_dropout_sets_the_base_models_rates_and_keeps_loras(tiny_sentence):
    texts = ["user likes microscopes and slide covers", "user likes pipettes"]

    def twice(cfg):
        enc = LLMEncoder(tiny_sentence, cfg).train()  # dropout acts in training mode only
        return enc, enc.encode_queries(texts), enc.encode_queries(texts)

    enc, a, b = twice(FinetuneConfig(encoder="sentence", max_query_tokens=64))
    assert not torch.allclose(a, b)  # as published: BERT's hidden and attention dropout 0.1
    assert enc.model.base_model.model.config.hidden_dropout_prob == 0.1
    enc, a, b = twice(FinetuneConfig(encoder="sentence", max_query_tokens=64, model_dropout=0.0,
                                     lora={"dropout": 0.0}))
    assert torch.allclose(a, b)  # no random mask anywhere
    cfg = enc.model.base_model.model.config
    assert cfg.hidden_dropout_prob == cfg.attention_probs_dropout_prob == 0.0
    enc = LLMEncoder(tiny_sentence, FinetuneConfig(encoder="sentence", model_dropout=0.0, lora={"dropout": 0.05}))
    rates = {n.rsplit(".", 1)[0].rsplit(".", 1)[-1]: m.p for n, m in enc.model.named_modules()
             if isinstance(m, torch.nn.Dropout)}
    assert rates.pop("lora_dropout") == 0.05 and set(rates.values()) == {0.0}, rates


def test_encoder_without_mean_pooling_or_with_last_pooling_is_refused(tiny_sentence, tmp_path):
    with pytest.raises(EncoderError, match=r"finetune.pooling: last.*pools by mean"):
        LLMEncoder(tiny_sentence, FinetuneConfig(encoder="sentence", pooling="last"))
    cls = tmp_path / "cls"
    shutil.copytree(tiny_sentence, cls)
    pool = cls / "1_Pooling" / "config.json"
    pc = json.loads(pool.read_text())
    pc["pooling_mode"] = "cls"
    pool.write_text(json.dumps(pc))
    with pytest.raises(EncoderError, match=r"finetune.base_model: .* pools by cls"):
        LLMEncoder(str(cls), FinetuneConfig(encoder="sentence"))
    with pytest.raises(EncoderError, match=r"finetune.base_model: .*not a sentence-transformers folder"):
        LLMEncoder(str(tmp_path), FinetuneConfig(encoder="sentence"))


def test_sentence_folder_as_a_causal_model_names_the_key(tiny_sentence):
    from hnl_ray.llm.models import ModelNotFound, resolve_finetune_model

    with pytest.raises(ModelNotFound, match="set finetune.encoder: sentence"):
        resolve_finetune_model(FinetuneConfig(base_model=tiny_sentence), "/tmp")
    assert resolve_finetune_model(FinetuneConfig(encoder="sentence"), "/tmp").endswith("model")


# ------------------------------------------------------------------------------------------------ stages


def _fake_upstream(run, k: int) -> None:
    """Profiles and a v2 teacher table (one row per (pair, target), K per pair, the first pair with one)."""
    import numpy as np
    import pyarrow as pa

    from hnl_ray import manifest
    from hnl_ray.artifacts import Artifacts

    data = Artifacts(run).cf_data()
    for folder, key, n in (("profiles/items", "item_idx", data.n_items), ("profiles/users", "user_idx",
                                                                           data.n_users)):
        run.write_parquet(f"{folder}/part-00000.parquet", pa.table({
            "id": [f"{key[:4]}:{x}" for x in range(n)], key: np.arange(n, dtype=np.int32),
            "status": ["ok"] * n, "summarization": [f"profile {x}" for x in range(n)]}))
        manifest.write(run, folder, stage=folder, fp="fake", config_part={}, inputs={}, outputs=[], counts={},
                       timings={})
    u, i = data.train
    rng = np.random.default_rng(0)
    rows = [(a, b, int(j), r) for p, (a, b) in enumerate(zip(u.tolist(), i.tolist()))
            for r, j in enumerate(rng.choice(data.n_items, 1 if p == 0 else k, replace=False))]
    run.write_parquet("teacher/pairs.parquet", pa.table({
        "user_idx": pa.array([r[0] for r in rows], pa.int32()), "item_idx": pa.array([r[1] for r in rows], pa.int32()),
        "neg_item_idx": pa.array([r[2] for r in rows], pa.int32()), "k": pa.array([r[3] for r in rows], pa.int8())}))
    manifest.write(run, "teacher", stage="teacher", fp="fake", config_part={}, inputs={}, outputs=[], counts={},
                   timings={})


def test_supervision_groups_k_targets_per_pair(tmp_path):
    from hnl_ray.artifacts import Artifacts
    from hnl_ray.config import load_config
    from hnl_ray.stages import run_stage
    from hnl_ray.stages.finetune import supervision
    from hnl_ray.storage import RunDir

    cfg = load_config("configs/demo.yaml", ["data.n_users=20", "data.n_items=30"], run_dir=str(tmp_path))
    run_stage("prepare", cfg)
    run = RunDir(str(tmp_path))
    _fake_upstream(run, k=3)
    t = supervision(cfg, Artifacts(run))
    pairs = run.read_parquet("teacher/pairs.parquet")
    assert t["targets"].type.list_size == 3 and t.num_rows == len({(a, b) for a, b in zip(
        pairs["user_idx"].to_pylist(), pairs["item_idx"].to_pylist())})
    first = t.slice(0, 1).to_pylist()[0]
    assert first["targets"][1:] == [-1, -1] and first["positives"][1] == first["positives"][0]  # padded
    row = t.slice(1, 1).to_pylist()[0]
    import pyarrow.compute as pc

    want = pairs.filter(pc.and_(pc.equal(pairs["user_idx"], row["user_idx"]),
                                pc.equal(pairs["item_idx"], row["item_idx"])))
    assert row["targets"] == want["neg_item_idx"].to_pylist()  # best first, as the teacher listed them


def test_encoder_rung_finetune_and_hardneg_catalogue_neighbours_and_base_control(ray_session, tiny_sentence,
                                                                                tmp_path):
    import numpy as np

    from hnl_ray import manifest
    from hnl_ray.arrays import vectors
    from hnl_ray.artifacts import Artifacts
    from hnl_ray.config import load_config
    from hnl_ray.errors import ConfigValueError
    from hnl_ray.stages import run_stage
    from hnl_ray.storage import RunDir, read_shards

    over = ["data.n_users=24", "data.n_items=30", "finetune.encoder=sentence",
            f"finetune.base_model={tiny_sentence}", "finetune.num_workers=1", "finetune.cpus_per_worker=0.5",
            "finetune.batch_size=4", "finetune.max_steps=3", "finetune.loss=infonce", "finetune.lr=0.01",
            "finetune.max_query_tokens=48", "finetune.random_negatives=2", "hardneg.neighbours=5",
            "hardneg.base_control=true", "hardneg.batch_size=16", "hardneg.pairs_per_user=null"]
    cfg = load_config("configs/demo.yaml", over, run_dir=str(tmp_path))
    run_stage("prepare", cfg)
    run = RunDir(str(tmp_path))
    _fake_upstream(run, k=2)
    m = run_stage("finetune", cfg, run)
    assert m["steps"] == 3 and m["targets_per_pair"] == 2 and m["encoder"] == "sentence" and m["pairs_per_s"] > 0
    res = run_stage("hardneg", cfg, run)
    data = Artifacts(run).cf_data()
    assert res["check_min_cosine"] >= 0.999 and res["items"] == data.n_items
    assert res["pairs"] == len(set(zip(*(x.tolist() for x in data.train))))  # every distinct training pair
    assert res["base_control"]["check_min_cosine"] >= 0.999
    for folder in ("hardneg", "hardneg-base"):
        t = read_shards(run, folder)
        nb = vectors(t["neighbours"])
        assert nb.shape[1] == 5
        users = t["user_idx"].to_numpy()
        assert not data.positives.contains(np.repeat(users, 5), nb.reshape(-1).clip(min=0))[nb.reshape(-1) >= 0].any()
        assert manifest.load(run, folder)["counts"]["neighbours"] == 5
    tuned = vectors(read_shards(run, "hardneg")["vector"]).astype(np.float32)
    base = vectors(read_shards(run, "hardneg-base")["vector"]).astype(np.float32)
    assert not np.allclose(tuned, base, atol=1e-3)  # fine-tuning changed the vectors; the control has the base's
    # the catalogue in the model's space: one row per item, the same passages as training
    cat = run.read_parquet("hardneg/items.parquet")
    assert cat["item_idx"].to_pylist() == list(range(data.n_items))
    assert run_stage("hardneg", cfg, run)["skipped"]
    cfg_big = load_config("configs/demo.yaml", over + ["hardneg.neighbours=31"], run_dir=str(tmp_path))
    with pytest.raises(ConfigValueError, match=f"hardneg.neighbours: 31 nearest items.*{data.n_items} items"):
        run_stage("hardneg", cfg_big, run)


def test_finetune_rungs_benchmark_smoke(tmp_path):
    from benchmarks.finetune_rungs import main

    out = tmp_path / "rungs.json"
    res = main(["--smoke", "--rounds", "2", "--steps", "1", "--batch", "4", "--k", "2", "--out", str(out)])
    assert json.loads(out.read_text())["median_pairs_per_s"] == res["median_pairs_per_s"]
    assert all(res["median_pairs_per_s"][r] > 0 for r in ("encoder", "llm"))
    assert [r["order"] for r in res["rounds"]] == [["encoder", "llm"], ["llm", "encoder"]]  # interleaved
    assert res["rungs"]["encoder"]["pooling"] == "mean" and res["rungs"]["llm"]["pooling"] == "last"


def test_finetune_rungs_benchmark_compares_precisions(tmp_path):
    from benchmarks.finetune_rungs import main

    out = tmp_path / "precision.json"
    res = main(["--smoke", "--rounds", "2", "--steps", "1", "--batch", "4", "--k", "2", "--rungs", "encoder",
                "--precisions", "fp32,bf16", "--out", str(out)])
    assert [r["order"] for r in res["rounds"]] == [["encoder/fp32", "encoder/bf16"],
                                                  ["encoder/bf16", "encoder/fp32"]]
    assert res["rungs"]["encoder/bf16"]["precision"] == "bf16" and res["median_speedup_bf16"]["encoder"] > 0
    one = res["bf16_vs_fp32_one_step"]["encoder"]
    assert 0.9 < one["grad_cosine"] < 1.0 and one["loss_rel_diff"] < 0.05  # close, but bf16 was really used


def test_text_user_profiles_are_the_users_recent_training_titles(tmp_path):
    from hnl_ray.artifacts import Artifacts
    from hnl_ray.config import load_config
    from hnl_ray.stages import run_stage

    cfg = load_config("configs/demo.yaml", ["data.n_users=12", "data.n_items=30", "profiles.item_source=text",
                                            "profiles.user_source=text", "profiles.user_history=2"],
                      run_dir=str(tmp_path))
    run_stage("prepare", cfg)
    res = run_stage("profiles", cfg)  # no LLM, no Ray
    art = Artifacts(str(tmp_path))
    data = art.prepared()
    train = data["train"].sort_by([("user_idx", "ascending"), ("timestamp", "descending")]).to_pylist()
    titles = dict(zip(data["items"]["item_idx"].to_pylist(), data["items"]["title"].to_pylist()))
    u = train[0]["user_idx"]
    recent = [titles[r["item_idx"]] for r in train if r["user_idx"] == u][:2]
    assert art.user_profiles()[u] == "Recently bought: " + "; ".join(recent) + "."
    assert res["users"]["source"] == "training item titles" and res["users"]["rows"] == len(art.user_profiles())
    assert run_stage("profiles", cfg)["users"]["skipped"]
