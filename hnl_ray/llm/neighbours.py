"""The catalogue in the fine-tuned model's space: for each pair's query vector, its N nearest catalogue items by
cosine (the user's training positives excluded), and the vectors of HNLMRec's LLM-side controls.

Pure numpy/torch, chunked over pairs so that a (chunk x catalogue) score block is the largest thing in memory.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigValueError


class NeighbourError(ConfigValueError):
    pass


def nearest_items(pair_vecs: np.ndarray, pair_users: np.ndarray, item_vecs: np.ndarray,
                  user_items: tuple[np.ndarray, np.ndarray], n: int, chunk: int = 4096,
                  key: str = "hardneg.neighbours") -> tuple[np.ndarray, np.ndarray]:
    """(ids (P, n) int32, cosines (P, n) float32) of the n catalogue items nearest each pair vector, best first,
    never one of the pair's user's training positives (`user_items`: CSR indptr, indices over users). Where a
    user has fewer than n other items, the tail is -1 (cosine -inf)."""
    n_items = len(item_vecs)
    if n > n_items:
        raise NeighbourError(f"{key}: {n} nearest items asked for, but the catalogue has {n_items} items")
    indptr, indices = user_items
    items = F.normalize(torch.from_numpy(np.asarray(item_vecs, np.float32)), dim=1)
    ids = np.full((len(pair_vecs), n), -1, np.int32)
    cos = np.full((len(pair_vecs), n), -np.inf, np.float32)
    for lo in range(0, len(pair_vecs), chunk):
        hi = min(lo + chunk, len(pair_vecs))
        q = F.normalize(torch.from_numpy(np.asarray(pair_vecs[lo:hi], np.float32)), dim=1)
        s = q @ items.T
        users = pair_users[lo:hi].astype(np.int64)
        counts = indptr[users + 1] - indptr[users]
        rows = np.repeat(np.arange(hi - lo), counts)
        cols = np.concatenate([indices[indptr[u]:indptr[u + 1]] for u in users]) if len(users) else []
        s[torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(np.asarray(cols, np.int64))] = float("-inf")
        top = torch.topk(s, n, dim=1)
        ok = torch.isfinite(top.values)
        ids[lo:hi] = torch.where(ok, top.indices, -1).numpy()
        cos[lo:hi] = top.values.numpy()
    return ids, cos


def random_unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """The `random` control: one random direction per pair (isotropic Gaussian, normalised)."""
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def shuffled_rows(vecs: np.ndarray, users: np.ndarray, seed: int) -> np.ndarray:
    """The `shuffled` control: the fine-tuned vectors permuted across pairs, so that a pair keeps a vector of the
    same model and distribution but (almost always) another user's. A row whose shuffled vector still comes
    from its own user is swapped with a random other row once (where there are two users or more)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(vecs))
    if len(np.unique(users)) > 1:
        same = np.flatnonzero(users[perm] == users)
        for r in same:
            other = rng.integers(len(vecs))
            if users[perm[other]] != users[r] and users[perm[r]] != users[other]:
                perm[r], perm[other] = perm[other], perm[r]
    return vecs[perm]
