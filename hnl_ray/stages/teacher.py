"""The `teacher` stage (HNLMRec's supervision): train a CF model with a classic sampler (the CF run
`cf/teacher`), then mine one hard negative j* per sampled training pair (see hnl_ray/cf/mining.py), guarded
against false negatives with the items' text embeddings.

Outputs: teacher/pairs.parquet (user_idx, item_idx, neg_item_idx, pos_score, neg_score, neg_rank) and
teacher/embeddings.safetensors (the teacher's final user and item embeddings, for the optional CF soft tokens).
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import save as st_save

from .. import manifest
from ..cf.data import CFData
from ..cf.mining import mine_hard_negatives
from ..cf.stage import load_trained, train_one
from ..config import Config
from ..config.cf import TrainConfig
from ..config.loader import deep_merge
from ..llm.embedder import vectors
from ..storage import RunDir
from .common import need
from .embed import FOLDER as EMBED
from .embed import items_fingerprint
from .negatives import sample_pairs

log = logging.getLogger(__name__)

FOLDER = "teacher"
RUN = "teacher"
OUTPUTS = ["pairs.parquet", "embeddings.safetensors"]


def teacher_train_config(cfg: Config) -> TrainConfig:
    base = cfg.train.model_dump(exclude={"runs"})
    return TrainConfig.model_validate(deep_merge(base, cfg.teacher.train))


def run_teacher(cfg: Config, run: RunDir | None = None, force: bool = False, progress: bool = True) -> dict:
    run = run or RunDir(cfg.resolved_run_dir())
    need(run, "prepared", "prepare", "prepared data")
    emb_m = need(run, EMBED, "embed", "item text embeddings")
    tcfg = teacher_train_config(cfg)
    result = train_one(cfg, run, RUN, force=force, progress=progress, tcfg=tcfg)
    inputs = {"teacher_cf": manifest.load(run, f"cf/{RUN}")["fingerprint"], "embeddings": items_fingerprint(emb_m)}
    part = {"teacher": cfg.teacher.model_dump(mode="json", exclude={"train"}), "seed": cfg.seed}
    fp = manifest.fingerprint(part, inputs)
    if not force and manifest.is_fresh(run, FOLDER, fp):
        log.info("teacher: up to date, skipped")
        return {**manifest.load(run, FOLDER)["counts"], "skipped": True}
    timings = manifest.Timings()
    data = CFData.from_run(run)
    model = load_trained(run, RUN, tcfg, data)
    with torch.no_grad():
        emb = model()
    text = vectors(run.read_parquet(f"{EMBED}/items.parquet")["vector"]).astype(np.float32)
    if text.shape[0] != data.n_items:
        raise ValueError(f"{run.uri_of(EMBED, 'items.parquet')} has {text.shape[0]} items, the prepared data "
                         f"{data.n_items}: re-run `hnl-ray embed`")
    users, items = sample_pairs(*data.train, cfg.teacher.pairs_per_user, cfg.seed)
    with timings("mine"):
        m = mine_hard_negatives(users, items, emb.users, emb.items, data.positives, data.train_csr,
                                torch.from_numpy(text), cfg.teacher.candidates, cfg.teacher.guard_threshold,
                                cfg.teacher.guard_top, np.random.default_rng(cfg.seed + 17))
    k = m.keep
    run.write_parquet(f"{FOLDER}/pairs.parquet", pa.table({
        "user_idx": users[k].astype(np.int32), "item_idx": items[k].astype(np.int32),
        "neg_item_idx": m.neg[k].astype(np.int32), "pos_score": m.pos_score[k], "neg_score": m.neg_score[k],
        "neg_rank": m.neg_rank[k]}))
    run.write_bytes(f"{FOLDER}/embeddings.safetensors", st_save({"users": emb.users.contiguous(),
                                                                  "items": emb.items.contiguous()}))
    counts = {"pairs_sampled": int(len(users)), "pairs_with_negative": int(k.sum()),
              "pairs_dropped_by_guard": int((~k).sum()), "candidates_rejected_by_guard": m.guard_skipped,
              "neg_above_pos_share": round(float((m.neg_score[k] > m.pos_score[k]).mean()) if k.any() else 0.0, 4),
              "teacher_test": result["test"], "teacher_best_epoch": result["best_epoch"]}
    manifest.write(run, FOLDER, stage="teacher", fp=fp, config_part=part, inputs=inputs, outputs=OUTPUTS,
                   counts=counts, timings=dict(timings))
    return counts
