"""The `embed` stage: sentence embeddings of the catalog and of the method-1 hard negatives, then grounding.

* embeddings/items.parquet: `item_idx`, `vector` (L2-normalised, fixed-size list).
* embeddings/negatives.parquet: per valid negative (`pair:{u}:{i}:{k}`): `vector`, the `grounded` catalog items
  nearest to it by cosine (the user's training positives excluded) with their `grounded_sim`, `max_pos_sim`
  (its highest similarity to one of the user's training positives) and `false_negative` when that exceeds
  `negatives.false_negative_ceiling` (such a negative is too close to something the user liked: its grounded ids
  are -1 and samplers skip it; its vector is kept for analysis).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow as pa
import torch

from .. import artifacts as A
from .. import manifest
from ..arrays import vector_column
from ..cf.data import csr
from ..cf.evaluate import ragged_rows
from ..llm.embedder import embed_dataset
from ..llm.models import fingerprint_name, resolve_sentence_model
from . import Context, Output, step

log = logging.getLogger(__name__)


def item_texts(items: pa.Table, fields: list[str], profiles: dict[int, str]) -> list[str]:
    out = []
    for it in items.to_pylist():
        parts = []
        for f in fields:
            v = profiles.get(it["item_idx"]) if f == "profile" else it.get(f)
            if isinstance(v, list):
                v = ", ".join(v)
            if v:
                parts.append(str(v))
        out.append(". ".join(parts) or f"item {it['item_id']}")
    return out


def embed_texts(ctx: Context, texts: list[str]) -> np.ndarray:
    """Embed through Ray Data (an actor pool); rows come back in any order and are put back in input order."""
    ray = ctx.ray()
    if not texts:
        return np.zeros((0, 0), np.float32)
    ds = ray.data.from_items([{"_row": r, "text": t} for r, t in enumerate(texts)])
    rows, vecs = [], []
    for batch in embed_dataset(ds, ctx.cfg.embed).iter_batches(batch_format="numpy", batch_size=4096):
        rows.append(batch["_row"])
        vecs.append(np.asarray(batch["vector"]))
    return np.concatenate(vecs)[np.argsort(np.concatenate(rows))]


def ground(neg_vecs: np.ndarray, neg_users: np.ndarray, item_vecs: np.ndarray, train_csr, top: int,
           ceiling: float, chunk: int = 4096) -> dict[str, np.ndarray]:
    """Nearest catalog items per negative (the user's training positives excluded) and the false-negative guard.
    Vectorised in chunks; cosine = dot product of normalised vectors."""
    n = len(neg_vecs)
    top = min(top, item_vecs.shape[0])
    grounded = np.zeros((n, top), np.int32)
    sims = np.zeros((n, top), np.float32)
    max_pos = np.full(n, -1.0, np.float32)
    items_t = torch.from_numpy(np.ascontiguousarray(item_vecs, dtype=np.float32)).T.contiguous()
    for s in range(0, n, chunk):
        v = torch.from_numpy(np.ascontiguousarray(neg_vecs[s: s + chunk], dtype=np.float32))
        scores = v @ items_t
        rows, cols = ragged_rows(*train_csr, neg_users[s: s + chunk])
        r_t, c_t = torch.from_numpy(rows), torch.from_numpy(cols)
        pos_scores = scores[r_t, c_t]
        mp = torch.full((len(v),), -1.0).scatter_reduce(0, r_t, pos_scores, reduce="amax", include_self=True)
        max_pos[s: s + chunk] = mp.numpy()
        scores[r_t, c_t] = -torch.inf
        val, idx = torch.topk(scores, top, dim=1)
        grounded[s: s + chunk] = idx.numpy()
        sims[s: s + chunk] = val.numpy()
    flagged = max_pos >= ceiling
    grounded[flagged] = -1  # too close to something the user liked: not used as a negative item
    return {"grounded": grounded, "grounded_sim": sims, "max_pos_sim": max_pos, "false_negative": flagged}


def items_fingerprint(embed_manifest: dict) -> str:
    """What the catalog's vectors were computed from (manifests written before it existed: the whole stage's)."""
    return embed_manifest.get("items_fingerprint") or embed_manifest["fingerprint"]


def run(ctx: Context) -> dict:
    cfg, art = ctx.cfg, ctx.art
    prep = art.need(A.PREPARED, "prepared data")
    uses_profile = "profile" in cfg.embed.item_fields
    neg_fp = art.fingerprint(A.NEGATIVES)
    inputs = {"prepared": prep["fingerprint"], "negatives": neg_fp}
    if uses_profile:
        inputs["item_profiles"] = art.need(A.ITEM_PROFILES, "item profiles")["fingerprint"]
    part = {"embed": cfg.embed.model_dump(mode="json", include={"model", "dtype", "item_fields"}),
            "negatives": cfg.negatives.model_dump(mode="json", include={"ground_top", "false_negative_ceiling"}),
            "model_path": fingerprint_name(resolve_sentence_model(cfg.embed.model))}
    # The catalog's vectors do not depend on the method-1 negatives: consumers of items.parquet alone (the teacher)
    # key on this, so generating negatives later does not invalidate the teacher and the LLM work behind it.
    items_fp = manifest.fingerprint({k: part[k] for k in ("embed", "model_path")},
                                    {k: v for k, v in inputs.items() if k != "negatives"})

    def work(fp: str) -> Output:
        data = art.prepared()
        timings = manifest.Timings()
        items = data["items"]
        profiles = art.item_profiles() if uses_profile else {}
        with timings("items"):
            item_vecs = embed_texts(ctx, item_texts(items, cfg.embed.item_fields, profiles))
        art.write_item_vectors(items["item_idx"], item_vecs)
        counts = {"items": items.num_rows, "dim": int(item_vecs.shape[1])}
        negs = art.negatives(valid_only=True) if neg_fp is not None else None
        if negs is not None and negs.num_rows:
            with timings("negatives"):
                neg_vecs = embed_texts(ctx, negs["hard_negative_item"].to_pylist())
            with timings("ground"):
                train = data["train"]
                tcsr = csr(train["user_idx"].to_numpy().astype(np.int64),
                           train["item_idx"].to_numpy().astype(np.int64), int(data["users"].num_rows))
                g = ground(neg_vecs, negs["user_idx"].to_numpy().astype(np.int64), item_vecs, tcsr,
                           cfg.negatives.ground_top, cfg.negatives.false_negative_ceiling)
            table = pa.table({"id": negs["id"], "user_idx": negs["user_idx"], "item_idx": negs["item_idx"],
                              "k": negs["k"], "vector": vector_column(neg_vecs),
                              "grounded": vector_column(g["grounded"]),
                              "grounded_sim": vector_column(g["grounded_sim"]), "max_pos_sim": g["max_pos_sim"],
                              "false_negative": g["false_negative"]})
            counts.update({"negatives": table.num_rows, "false_negatives_flagged": int(g["false_negative"].sum()),
                           "mean_grounded_sim": round(float(g["grounded_sim"][:, 0].mean()), 4)})
        else:
            table = pa.table({"id": pa.array([], pa.string())})
            counts["negatives"] = 0
        art.write_negative_embeddings(table)
        log.info("embed: %s", json.dumps(counts))
        return Output(counts=counts, outputs=A.EMBEDDING_FILES, timings=timings,
                      extra={"items_fingerprint": items_fp})

    return step(ctx, A.EMBEDDINGS, part, inputs, work, label="embed")
