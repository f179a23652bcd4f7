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
import pyarrow.compute as pc
import torch

from .. import manifest
from ..cf.data import csr
from ..cf.evaluate import ragged_rows
from ..config import Config
from ..llm.embedder import embed_dataset, vector_column
from ..llm.models import resolve_sentence_model
from ..storage import RunDir
from .common import ensure_ray, need, prepared
from .negatives import FOLDER as NEG_FOLDER
from .profiles import ITEMS as ITEM_PROFILES
from .profiles import profile_texts

log = logging.getLogger(__name__)

FOLDER = "embeddings"
OUTPUTS = ["items.parquet", "negatives.parquet"]


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


def embed_texts(cfg: Config, texts: list[str]) -> np.ndarray:
    """Embed through Ray Data (an actor pool); rows come back in any order and are put back in input order."""
    ray = ensure_ray(cfg)
    if not texts:
        return np.zeros((0, 0), np.float32)
    ds = ray.data.from_items([{"_row": r, "text": t} for r, t in enumerate(texts)])
    rows, vecs = [], []
    for batch in embed_dataset(ds, cfg.embed).iter_batches(batch_format="numpy", batch_size=4096):
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


def _list_column(a: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


def items_fingerprint(embed_manifest: dict) -> str:
    """What the catalog's vectors were computed from (manifests written before it existed: the whole stage's)."""
    return embed_manifest.get("items_fingerprint") or embed_manifest["fingerprint"]


def run_embed(cfg: Config, run: RunDir | None = None, force: bool = False) -> dict:
    run = run or RunDir(cfg.resolved_run_dir())
    prep = need(run, "prepared", "prepare", "prepared data")
    uses_profile = "profile" in cfg.embed.item_fields
    neg_m = manifest.load(run, NEG_FOLDER)
    inputs = {"prepared": prep["fingerprint"], "negatives": neg_m["fingerprint"] if neg_m else None}
    if uses_profile:
        inputs["item_profiles"] = need(run, ITEM_PROFILES, "profiles", "item profiles")["fingerprint"]
    part = {"embed": cfg.embed.model_dump(mode="json", include={"model", "dtype", "item_fields"}),
            "negatives": cfg.negatives.model_dump(mode="json", include={"ground_top", "false_negative_ceiling"}),
            "model_path": resolve_sentence_model(cfg.embed.model)}
    fp = manifest.fingerprint(part, inputs)
    # The catalog's vectors do not depend on the method-1 negatives: consumers of items.parquet alone (the teacher)
    # key on this, so generating negatives later does not invalidate the teacher and the LLM work behind it.
    items_fp = manifest.fingerprint({k: part[k] for k in ("embed", "model_path")},
                                    {k: v for k, v in inputs.items() if k != "negatives"})
    if not force and manifest.is_fresh(run, FOLDER, fp):
        log.info("embed: up to date, skipped")
        return {**manifest.load(run, FOLDER)["counts"], "skipped": True}
    data = prepared(run)
    timings = manifest.Timings()
    items = data["items"]
    profiles = profile_texts(run, ITEM_PROFILES, "item_idx") if uses_profile else {}
    with timings("items"):
        item_vecs = embed_texts(cfg, item_texts(items, cfg.embed.item_fields, profiles))
    run.write_parquet(f"{FOLDER}/items.parquet", pa.table({"item_idx": items["item_idx"],
                                                            "vector": vector_column(item_vecs)}))
    counts = {"items": items.num_rows, "dim": int(item_vecs.shape[1])}
    negs = None
    if neg_m is not None:
        from ..llm.generate import read_shards

        negs = read_shards(run, NEG_FOLDER)
        negs = negs.filter(pc.not_equal(negs["status"], "failed"))
    if negs is not None and negs.num_rows:
        with timings("negatives"):
            neg_vecs = embed_texts(cfg, negs["hard_negative_item"].to_pylist())
        with timings("ground"):
            train = data["train"]
            tcsr = csr(train["user_idx"].to_numpy().astype(np.int64), train["item_idx"].to_numpy().astype(np.int64),
                       int(data["users"].num_rows))
            g = ground(neg_vecs, negs["user_idx"].to_numpy().astype(np.int64), item_vecs, tcsr,
                       cfg.negatives.ground_top, cfg.negatives.false_negative_ceiling)
        table = pa.table({"id": negs["id"], "user_idx": negs["user_idx"], "item_idx": negs["item_idx"],
                          "k": negs["k"], "vector": vector_column(neg_vecs), "grounded": _list_column(g["grounded"]),
                          "grounded_sim": _list_column(g["grounded_sim"]), "max_pos_sim": g["max_pos_sim"],
                          "false_negative": g["false_negative"]})
        counts.update({"negatives": table.num_rows, "false_negatives_flagged": int(g["false_negative"].sum()),
                       "mean_grounded_sim": round(float(g["grounded_sim"][:, 0].mean()), 4)})
    else:
        table = pa.table({"id": pa.array([], pa.string())})
        counts["negatives"] = 0
    run.write_parquet(f"{FOLDER}/negatives.parquet", table)
    manifest.write(run, FOLDER, stage="embed", fp=fp, config_part=part, inputs=inputs, outputs=OUTPUTS,
                   counts=counts, timings=dict(timings), extra={"items_fingerprint": items_fp})
    log.info("embed: %s", json.dumps(counts))
    return counts
