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

from .. import artifacts as A
from .. import manifest
from ..cf.mining import mine_hard_negatives
from ..config import Config
from ..config.cf import TrainConfig
from ..config.loader import deep_merge
from ..errors import StageError
from . import Context, Output, step
from .embed import items_fingerprint
from .negatives import sample_pairs
from .train import load_trained, train_one

log = logging.getLogger(__name__)

RUN = "teacher"  # the teacher's CF run: <run-dir>/cf/teacher/


def teacher_train_config(cfg: Config) -> TrainConfig:
    base = cfg.train.model_dump(exclude={"runs"})
    return TrainConfig.model_validate(deep_merge(base, cfg.teacher.train))


def run(ctx: Context) -> dict:
    cfg, art = ctx.cfg, ctx.art
    art.need(A.PREPARED, "prepared data")
    emb_m = art.need(A.EMBEDDINGS, "item text embeddings")
    tcfg = teacher_train_config(cfg)
    result = train_one(cfg, art, RUN, force=ctx.force, progress=ctx.progress, tcfg=tcfg)
    inputs = {"teacher_cf": art.fingerprint(art.cf_folder(RUN)), "embeddings": items_fingerprint(emb_m)}
    part = {"teacher": cfg.teacher.model_dump(mode="json", exclude={"train"}), "seed": cfg.seed}

    def work(fp: str) -> Output:
        timings = manifest.Timings()
        data = art.cf_data()
        model = load_trained(art.cf_run(RUN), tcfg, data)
        with torch.no_grad():
            emb = model()
        text = art.item_vectors().astype(np.float32)
        if text.shape[0] != data.n_items:
            raise StageError(f"{art.uri(A.EMBEDDINGS, 'items.parquet')} has {text.shape[0]} items, the prepared "
                             f"data {data.n_items}: re-run `hnl-ray embed`")
        users, items = sample_pairs(*data.train, cfg.teacher.pairs_per_user, cfg.seed)
        with timings("mine"):
            m = mine_hard_negatives(users, items, emb.users, emb.items, data.positives, data.train_csr,
                                    torch.from_numpy(text), cfg.teacher.candidates, cfg.teacher.guard_threshold,
                                    cfg.teacher.guard_top, np.random.default_rng(cfg.seed + 17))
        k = m.keep
        art.write_teacher_pairs(pa.table({
            "user_idx": users[k].astype(np.int32), "item_idx": items[k].astype(np.int32),
            "neg_item_idx": m.neg[k].astype(np.int32), "pos_score": m.pos_score[k], "neg_score": m.neg_score[k],
            "neg_rank": m.neg_rank[k]}))
        art.write_teacher_embeddings(emb.users, emb.items)
        counts = {"pairs_sampled": int(len(users)), "pairs_with_negative": int(k.sum()),
                  "pairs_dropped_by_guard": int((~k).sum()), "candidates_rejected_by_guard": m.guard_skipped,
                  "neg_above_pos_share": round(float((m.neg_score[k] > m.pos_score[k]).mean()) if k.any() else 0.0,
                                               4),
                  "teacher_test": result["test"], "teacher_best_epoch": result["best_epoch"]}
        return Output(counts=counts, outputs=A.TEACHER_FILES, timings=timings)

    return step(ctx, A.TEACHER, part, inputs, work, label="teacher")
