"""The `teacher` stage (HNLMRec's supervision): train a CF model with a classic sampler (the CF run
`cf/teacher`), then mine K pair-conditioned targets per sampled training pair over the whole catalogue
(hnl_ray/cf/mining.py: training positives and j with s_T(u, j) >= rho * s_T(u, i) excluded, ranked by
s_T(u, j) + gamma * cos(t_i, t_j)).

Outputs: teacher/pairs.parquet, one row per (pair, target): user_idx, item_idx, neg_item_idx, k (0 = the best
target), pos_score, neg_score; and teacher/embeddings.safetensors (the teacher's final user and item embeddings,
for the optional CF soft tokens). The manifest counts, as a diagnostic only, the targets that are the user's
validation or test items (nothing is chosen on it).
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import torch

from .. import artifacts as A
from .. import manifest
from ..cf.data import PositiveSet
from ..cf.mining import mine_targets
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
    tcfg = TrainConfig.model_validate(deep_merge(base, cfg.teacher.train))
    if cfg.llm_seed is not None and tcfg.seed is None:  # another draw of the stages: another teacher too
        tcfg = tcfg.model_copy(update={"seed": cfg.llm_seed})
    return tcfg


def run(ctx: Context) -> dict:
    cfg, art = ctx.cfg, ctx.art
    art.need(A.PREPARED, "prepared data")
    emb_m = art.need(A.EMBEDDINGS, "item text embeddings")
    tcfg = teacher_train_config(cfg)
    result = train_one(cfg, art, RUN, force=ctx.force, progress=ctx.progress, tcfg=tcfg)
    inputs = {"teacher_cf": art.fingerprint(art.cf_folder(RUN)), "embeddings": items_fingerprint(emb_m)}
    part = {"teacher": cfg.teacher.model_dump(mode="json", exclude={"train"}), "seed": cfg.draw_seed}

    def work(fp: str) -> Output:
        timings = manifest.Timings()
        data = art.cf_data()
        model = load_trained(art.cf_run(RUN), tcfg, data)
        with torch.no_grad():
            emb = model()
        text = art.item_vectors().astype(np.float32)
        if text.shape[0] != data.n_items:
            raise StageError(f"{art.items_uri(A.EMBEDDINGS)} has {text.shape[0]} items, the prepared "
                             f"data {data.n_items}: re-run `hnl-ray embed`")
        users, items = sample_pairs(*data.train, cfg.teacher.pairs_per_user, cfg.draw_seed)
        tc = cfg.teacher
        with timings("mine"):
            m = mine_targets(users, items, emb.users, emb.items, data.train_csr, tc.targets, tc.rho, tc.gamma,
                             torch.from_numpy(text) if tc.gamma else None)
        ok = m.items >= 0  # (P, K)
        row, k = np.nonzero(ok)
        art.write_teacher_pairs(pa.table({
            "user_idx": users[row].astype(np.int32), "item_idx": items[row].astype(np.int32),
            "neg_item_idx": m.items[row, k].astype(np.int32), "k": k.astype(np.int8),
            "pos_score": m.pos_score[row], "neg_score": m.scores[row, k]}))
        art.write_teacher_embeddings(emb.users, emb.items)
        held = PositiveSet(np.r_[data.valid[0], data.test[0]], np.r_[data.valid[1], data.test[1]], data.n_users,
                           data.n_items)
        future = held.contains(users[row], m.items[row, k])
        counts = {"pairs_sampled": int(len(users)), "targets": int(ok.sum()),
                  "pairs_with_target": int(ok.any(1).sum()), "pairs_with_k_targets": int(ok.all(1).sum()),
                  "rejected_by_rho": m.rejected_by_rho,
                  "targets_in_valid_or_test_diagnostic": int(future.sum()),
                  "targets_in_valid_or_test_share_diagnostic": round(float(future.mean()) if len(future) else 0.0,
                                                                     5),
                  "teacher_test": result["test"], "teacher_best_epoch": result["best_epoch"]}
        return Output(counts=counts, outputs=A.TEACHER_FILES, timings=timings)

    return step(ctx, A.TEACHER, part, inputs, work, label="teacher")
