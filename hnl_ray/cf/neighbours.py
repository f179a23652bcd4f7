"""Per-pair candidate items for the `hnlmrec` sampler, as arrays (the CF core takes arrays; stages load them).

The shapes every producer writes and the sampler consumes:

* pair vectors: `users (P,)`, `items (P,)` (the training pair (u, i)), `vectors (P, d)` L2-normalised;
* catalogue vectors: `item_vecs (n_items, d)` L2-normalised, row = item_idx, in the same space;
* neighbours: `(P, N)` int item ids, the N catalogue items nearest each pair's vector with the user's training
  positives excluded, -1 where fewer exist (`pair_neighbours` computes them).

`PairCandidates` holds any such per-pair lists (fixed width, or ragged like method 1's grounded items) and looks
them up for whole batches with a binary search over sorted pair keys.
"""

from __future__ import annotations

import numpy as np
import torch

from .evaluate import ragged_rows


def pair_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    return users.astype(np.int64) * n_items + items.astype(np.int64)


def pair_neighbours(query: np.ndarray | torch.Tensor, users: np.ndarray, item_vecs: np.ndarray | torch.Tensor,
                    train_csr, n: int, chunk: int = 2048) -> np.ndarray:
    """(P, n) int64: for each row, the n catalogue items with the highest cosine to `query[row]`, the training
    positives of `users[row]` excluded (-1 where the user leaves fewer than n items). Vectors are unit rows."""
    q_all = torch.as_tensor(np.asarray(query, np.float32) if isinstance(query, np.ndarray) else query).float()
    it = torch.as_tensor(np.asarray(item_vecs, np.float32) if isinstance(item_vecs, np.ndarray)
                         else item_vecs).float()
    n_items = it.shape[0]
    if n > n_items:
        raise ValueError(f"{n} neighbours asked, but the catalogue has only {n_items} items")
    out = np.full((len(users), n), -1, np.int64)
    if n == 0:
        return out
    it_t = it.T.contiguous()
    for s in range(0, len(users), chunk):
        sims = q_all[s: s + chunk] @ it_t
        rows, cols = ragged_rows(*train_csr, users[s: s + chunk])
        sims[torch.from_numpy(rows), torch.from_numpy(cols)] = -torch.inf
        val, idx = torch.topk(sims, n, dim=1)
        idx = idx.numpy().astype(np.int64)
        idx[~torch.isfinite(val).numpy()] = -1
        out[s: s + chunk] = idx
    return out


def max_text_similarity(cand: np.ndarray, users: np.ndarray, train_csr, text: torch.Tensor) -> np.ndarray:
    """For each row b, the highest cosine between the text of item cand[b] and the texts of users[b]'s training
    positives (text rows are L2-normalised); -1 for a user without training positives."""
    rows, cols = ragged_rows(*train_csr, users)
    if len(rows) == 0:
        return np.full(len(cand), -1.0, np.float32)
    r_t = torch.from_numpy(rows)
    sims = (text[torch.from_numpy(cand[rows])] * text[torch.from_numpy(cols)]).sum(1)
    out = torch.full((len(cand),), -1.0).scatter_reduce(0, r_t, sims, reduce="amax", include_self=True)
    return out.numpy()


class PairCandidates:
    """Candidate item lists keyed by training pair (u, i): sorted keys, CSR offsets, item ids."""

    def __init__(self, keys: np.ndarray, indptr: np.ndarray, items: np.ndarray, n_items: int):
        self.keys, self.indptr, self.items, self.n_items = keys, indptr, items.astype(np.int64), n_items

    @classmethod
    def from_fixed(cls, users: np.ndarray, items: np.ndarray, cands: np.ndarray, n_items: int) -> PairCandidates:
        """(P, W) lists, -1 padded; a pair listed twice keeps its first row."""
        keys, first = np.unique(pair_keys(users, items, n_items), return_index=True)
        rows = cands[first]
        ok = rows >= 0
        indptr = np.r_[0, np.cumsum(ok.sum(1))]
        return cls(keys, indptr, rows[ok], n_items)

    @classmethod
    def from_long(cls, users: np.ndarray, items: np.ndarray, cand: np.ndarray, n_items: int) -> PairCandidates:
        """One row per (pair, candidate), in the order wanted within each pair."""
        keys = pair_keys(users, items, n_items)
        order = np.argsort(keys, kind="stable")
        keys, cand = keys[order], cand[order]
        ok = cand >= 0
        keys, cand = keys[ok], cand[ok]
        uniq, starts = np.unique(keys, return_index=True)
        return cls(uniq, np.r_[starts, len(keys)], cand, n_items)

    @property
    def n_pairs(self) -> int:
        return len(self.keys)

    @property
    def width(self) -> int:
        return int(np.diff(self.indptr).max()) if len(self.keys) else 0

    def slots(self, users: np.ndarray, pos: np.ndarray, n: int) -> np.ndarray:
        """(B, n) positions in `items` of each pair's first n candidates, -1 where the pair has fewer (or none)."""
        out = np.full((len(users), n), -1, np.int64)
        if n == 0 or not len(self.keys):
            return out
        q = pair_keys(users, pos, self.n_items)
        at = np.searchsorted(self.keys, q).clip(max=len(self.keys) - 1)
        hit = self.keys[at] == q
        start = np.where(hit, self.indptr[at], 0)
        length = np.where(hit, np.minimum(self.indptr[at + 1] - self.indptr[at], n), 0)
        col = np.arange(n)[None, :]
        ok = col < length[:, None]
        out[ok] = (start[:, None] + col)[ok]
        return out

    def lookup(self, users: np.ndarray, pos: np.ndarray, n: int) -> np.ndarray:
        """(B, n) the first n candidates of each pair, -1 where the pair has fewer (or none)."""
        at = self.slots(users, pos, n)
        return np.where(at >= 0, self.items[np.maximum(at, 0)] if len(self.items) else -1, -1)

    def users(self) -> np.ndarray:
        """The user of each entry of `items`."""
        return np.repeat(self.keys // self.n_items, np.diff(self.indptr))
