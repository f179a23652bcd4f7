"""Inputs of the `hnlmrec` sampler (HNLMRec v2), loaded from a run's artifacts and handed to the CF core as
arrays: each pair's N neighbour items (`PairCandidates`, from `train.sampler.hnlmrec.source`) and the items' text
vectors (for the guard's text rule).

Artifacts read (what the LLM stages write for it):
* hardneg/part-*.parquet: `user_idx`, `item_idx`, `vector` (the fine-tuned model's pair vector) and, optionally,
  `neighbours` (fixed-size list of int32: the N nearest catalogue items, training positives excluded, nearest
  first); without it, neighbours are searched here in hardneg/items.parquet.
* hardneg/items.parquet: `item_idx`, `vector`: the catalogue in the fine-tuned model's space.
* hardneg-base/: the same two for the model before fine-tuning (the `base` control).
* embeddings/items.parquet (the embed stage): the untuned sentence encoder's item vectors (`text`, the guard).
* teacher/pairs.parquet: one row per (pair, target) (`teacher`); embeddings/negatives.parquet (`negatives`).
"""

from __future__ import annotations

import numpy as np
import torch

from .. import artifacts as A
from ..arrays import vectors
from ..artifacts import Artifacts
from ..cf.data import CFData
from ..cf.neighbours import PairCandidates, pair_neighbours
from ..cf.semantic import SemanticParts
from ..config.cf import TrainConfig
from ..errors import HnlRayError


class CandidateInputError(HnlRayError, ValueError):
    pass


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True).clip(min=1e-12)


def _by_item(t, data: CFData) -> np.ndarray:
    v = vectors(t["vector"])
    out = np.zeros((data.n_items, v.shape[1]), np.float32)
    out[t["item_idx"].to_numpy()] = v
    return _unit(out)


def item_text_vectors(art: Artifacts, data: CFData, key: str) -> np.ndarray:
    """The embed stage's unit item vectors (n_items, d); `key` is the config key that asked for them."""
    t = art.item_vector_table()
    if t is None:
        raise CandidateInputError(f"{key}: needs the item text vectors {art.items_uri(A.EMBEDDINGS)}: "
                                  "run `hnl-ray embed` first")
    if t.num_rows != data.n_items:
        raise CandidateInputError(f"{art.items_uri(A.EMBEDDINGS)} has {t.num_rows} items, the prepared "
                                  f"data {data.n_items}: re-run `hnl-ray embed`")
    return _by_item(t, data)


def catalogue(art: Artifacts, folder: str, data: CFData, key: str, source: str) -> np.ndarray:
    """The catalogue in the model's space (hardneg/ or hardneg-base/ items.parquet), unit rows."""
    t = art.hardneg_items(folder)
    if t is None:
        raise CandidateInputError(f"{key}: {source!r} needs the catalogue in the model's space "
                                  f"{art.items_uri(folder)}, which is missing: run `hnl-ray hardneg` "
                                  f"first, or choose another {key}")
    return _by_item(t, data)


def _check_ids(users, items, data: CFData, where: str) -> None:
    bad = (users < 0) | (users >= data.n_users) | (items < 0) | (items >= data.n_items)
    if bad.any():
        raise CandidateInputError(f"{where}: {int(bad.sum())} pairs name users or items missing from the prepared "
                                  "data: it was made from another dataset or split; re-run the stage")


def load_candidates(tcfg: TrainConfig, art: Artifacts, data: CFData, seed: int) -> tuple[PairCandidates, dict]:
    """The pair neighbours of `train.sampler.hnlmrec.source` and the fingerprints of what they came from."""
    from .embed import items_fingerprint

    hc = tcfg.sampler.hnlmrec
    key, n, src = "train.sampler.hnlmrec.source", hc.neighbours, hc.source
    u_tr, i_tr = data.train
    if src == "text":
        text = item_text_vectors(art, data, key)
        nb = pair_neighbours(text[i_tr], u_tr, text, data.train_csr, n)
        return (PairCandidates.from_fixed(u_tr, i_tr, nb, data.n_items),
                {A.EMBEDDINGS: items_fingerprint(art.manifest(A.EMBEDDINGS))})
    if src == "teacher":
        t = art.teacher_pairs(columns=["user_idx", "item_idx", "neg_item_idx"])
        if t is None:
            raise CandidateInputError(f"{key}: 'teacher' needs {art.teacher_pairs_uri()}: run "
                                      "`hnl-ray teacher` first")
        u, i, j = (t[c].to_numpy().astype(np.int64) for c in ("user_idx", "item_idx", "neg_item_idx"))
        _check_ids(u, j, data, art.teacher_pairs_uri())
        return PairCandidates.from_long(u, i, j, data.n_items), {A.TEACHER: art.fingerprint(A.TEACHER)}
    if src == "negatives":
        from ..cf.semantic import grounded_lists
        from .train import method1_arrays

        keys, indptr, flat = grounded_lists(method1_arrays(art), data)
        return PairCandidates(keys, indptr, flat, data.n_items), {"negatives": art.fingerprint(A.EMBEDDINGS)}
    folder = A.HARDNEG_BASE if src == "base" else A.HARDNEG
    t = art.hardneg_vectors(folder=folder)
    if t is None:
        raise CandidateInputError(f"{key}: {src!r} needs {art.uri(folder)} (pair vectors), which is missing: run "
                                  f"`hnl-ray hardneg` first, or choose another {key}")
    u, i = t["user_idx"].to_numpy().astype(np.int64), t["item_idx"].to_numpy().astype(np.int64)
    _check_ids(u, i, data, art.uri(folder))
    inputs = {folder: art.fingerprint(folder)}
    if src in ("hardneg", "base") and "neighbours" in t.column_names and n:
        stored = t["neighbours"].type.list_size
        if n > stored:
            raise CandidateInputError(f"train.sampler.hnlmrec.neighbours: {n} asked, but {art.uri(folder)} stores "
                                      f"{stored} per pair (hardneg.neighbours)")
        nb = vectors(t["neighbours"]).astype(np.int64)[:, :n]
        return PairCandidates.from_fixed(u, i, nb, data.n_items), inputs
    cat = catalogue(art, folder, data, key, src)
    vec = _unit(vectors(t["vector"]))
    if src == "shuffled":  # the fine-tuned vectors, each given to another pair (almost always another user's)
        vec = vec[np.random.default_rng(seed).permutation(len(vec))]
    elif src == "random":  # a random unit vector per pair, searched in the same catalogue
        vec = _unit(np.random.default_rng(seed).standard_normal(vec.shape).astype(np.float32))
    nb = pair_neighbours(vec, u, cat, data.train_csr, n)
    return PairCandidates.from_fixed(u, i, nb, data.n_items), inputs


def hnlmrec_parts(tcfg: TrainConfig, art: Artifacts, data: CFData, seed: int) -> tuple[SemanticParts, dict]:
    """The `hnlmrec` sampler's parts (a factory attaching its neighbours and text vectors) and its inputs."""
    from .embed import items_fingerprint

    hc = tcfg.sampler.hnlmrec
    cands, inputs = load_candidates(tcfg, art, data, seed) if hc.neighbours else (None, {})
    text = None
    if hc.guard.enabled and hc.guard.text_threshold is not None:
        text = torch.from_numpy(item_text_vectors(art, data, "train.sampler.hnlmrec.guard.text_threshold"))
        inputs.setdefault(A.EMBEDDINGS, items_fingerprint(art.manifest(A.EMBEDDINGS)))

    def factory(sampler):
        return sampler.attach(cands, text)

    describe = {"source": hc.source, "pairs_with_neighbours": cands.n_pairs if cands else 0,
                "neighbours": hc.neighbours, "uniform": hc.uniform, "rule": hc.rule,
                "guard": hc.guard.model_dump(mode="json")}
    return SemanticParts(factory, [], [], [], describe), inputs
