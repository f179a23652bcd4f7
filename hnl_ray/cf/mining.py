"""Mining hard negatives with a trained CF teacher (HNLMRec's supervision), vectorised.

For each training pair (u, i): draw M uniform candidates among the items u never interacted with, score them
with the teacher (u . j), and keep the highest-scored one, j*, unless its text embedding is nearly identical to
one of u's training positives (a likely false negative), in which case the next best is checked, up to
`guard_top` candidates; a pair whose best candidates all fail the guard is dropped (and counted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data import PositiveSet
from .evaluate import ragged_rows
from .samplers import draw_excluding


@dataclass
class Mined:
    keep: np.ndarray  # (n,) bool: the pair got a negative
    neg: np.ndarray  # (n,) int64, -1 where dropped
    neg_score: np.ndarray  # (n,) float32 teacher score of j*
    pos_score: np.ndarray  # (n,) float32 teacher score of i
    neg_rank: np.ndarray  # (n,) int8: 0 = the top-scored candidate, k = the guard skipped k better ones
    guard_skipped: int  # candidates the guard rejected


def guard_similarity(cand: np.ndarray, users: np.ndarray, train_csr, text: torch.Tensor) -> np.ndarray:
    """For each row b, the highest cosine between the text of item cand[b] and the texts of users[b]'s training
    positives (text rows are L2-normalised)."""
    rows, cols = ragged_rows(*train_csr, users)
    if len(rows) == 0:
        return np.full(len(cand), -1.0, np.float32)
    r_t = torch.from_numpy(rows)
    sims = (text[torch.from_numpy(cand[rows])] * text[torch.from_numpy(cols)]).sum(1)
    out = torch.full((len(cand),), -1.0).scatter_reduce(0, r_t, sims, reduce="amax", include_self=True)
    return out.numpy()


def mine_hard_negatives(users: np.ndarray, pos: np.ndarray, user_emb: torch.Tensor, item_emb: torch.Tensor,
                        positives: PositiveSet, train_csr, item_text: torch.Tensor | None, candidates: int,
                        guard_threshold: float, guard_top: int, rng: np.random.Generator,
                        chunk: int = 4096) -> Mined:
    n = len(users)
    keep = np.zeros(n, bool)
    neg = np.full(n, -1, np.int64)
    neg_score = np.zeros(n, np.float32)
    pos_score = np.zeros(n, np.float32)
    neg_rank = np.full(n, -1, np.int8)
    skipped = 0
    n_items = item_emb.shape[0]
    for s in range(0, n, chunk):
        u, p = users[s: s + chunk], pos[s: s + chunk]
        cand = draw_excluding(u, candidates, positives, n_items, rng)  # (B, M)
        with torch.no_grad():
            uv = user_emb[torch.from_numpy(u)]
            scores = torch.einsum("bd,bmd->bm", uv, item_emb[torch.from_numpy(cand)])
            pos_score[s: s + len(u)] = (uv * item_emb[torch.from_numpy(p)]).sum(1).numpy()
        # Candidates are drawn with replacement: a repeated item must not fill the guard's top slots twice.
        srt = np.sort(cand, axis=1)
        dup_sorted = np.zeros_like(cand, dtype=bool)
        dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
        first = np.argsort(cand, axis=1, kind="stable")
        dup = np.zeros_like(dup_sorted)
        np.put_along_axis(dup, first, dup_sorted, axis=1)
        scores = scores.masked_fill(torch.from_numpy(dup), -torch.inf)
        order = torch.argsort(scores, dim=1, descending=True).numpy()[:, :guard_top]
        chosen = np.full(len(u), -1, np.int64)
        for g in range(order.shape[1]):
            open_rows = np.flatnonzero(chosen < 0)
            if not len(open_rows):
                break
            c = cand[open_rows, order[open_rows, g]]
            ok = np.ones(len(open_rows), bool)
            if item_text is not None:
                ok = guard_similarity(c, u[open_rows], train_csr, item_text) < guard_threshold
            skipped += int((~ok).sum())
            chosen[open_rows[ok]] = order[open_rows[ok], g]
            neg_rank[s + open_rows[ok]] = g
        got = chosen >= 0
        rows = np.flatnonzero(got)
        keep[s + rows] = True
        neg[s + rows] = cand[rows, chosen[rows]]
        neg_score[s + rows] = scores.numpy()[rows, chosen[rows]]
    return Mined(keep, neg, neg_score, pos_score, neg_rank, skipped)
