"""Pair-conditioned hard-negative targets mined with a trained CF teacher (HNLMRec v2's supervision), vectorised.

For each training pair (u, i) the whole catalogue is scored with the teacher (s_T(u, j) = u . j, chunked over
pairs); the user's training positives are dropped, and so are likely false negatives: j with
s_T(u, j) >= rho * s_T(u, i) (NV-Retriever's "TopK-PercPos"; for a negatively scored positive, j scored at least
as high as the positive). The rest are ranked by s_T(u, j) + gamma * cos(t_i, t_j), the text similarity to the
positive (DENS-style; gamma 0 allowed), and the top K kept. Unlike the v1 miner (the best of M uniform draws,
whatever i), the targets depend on the positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .evaluate import ragged_rows


@dataclass
class Targets:
    items: np.ndarray  # (P, K) int64 target item ids, best first, -1 where fewer than K were eligible
    scores: np.ndarray  # (P, K) float32 teacher score s_T(u, j) of each target (nan where -1)
    pos_score: np.ndarray  # (P,) float32 teacher score s_T(u, i) of the positive
    rejected_by_rho: int  # (pair, item) combinations dropped by the rho bound (training positives not counted)


def score_bound(pos_score: torch.Tensor, rho: float) -> torch.Tensor:
    """The lowest score that makes a candidate a likely false negative: rho * s(u, i), and never above s(u, i)
    itself when rho <= 1 (a negative s(u, i) times rho < 1 would otherwise lie above it)."""
    bound = rho * pos_score
    return torch.where(pos_score < 0, torch.minimum(bound, pos_score), bound)


def mine_targets(users: np.ndarray, pos: np.ndarray, user_emb: torch.Tensor, item_emb: torch.Tensor, train_csr,
                 k: int, rho: float, gamma: float = 0.0, item_text: torch.Tensor | None = None,
                 chunk: int = 1024) -> Targets:
    n_items = item_emb.shape[0]
    if k > n_items:
        raise ValueError(f"teacher.targets: {k} asked, but the catalogue has only {n_items} items")
    if gamma and item_text is None:
        raise ValueError("teacher.gamma > 0 needs the items' text vectors")
    n = len(users)
    items = np.full((n, k), -1, np.int64)
    scores = np.full((n, k), np.nan, np.float32)
    pos_score = np.zeros(n, np.float32)
    rejected = 0
    it_t = item_emb.detach().float().T.contiguous()
    text_t = item_text.float().T.contiguous() if gamma else None
    for s in range(0, n, chunk):
        u, p = users[s: s + chunk], pos[s: s + chunk]
        b = len(u)
        with torch.no_grad():
            sc = user_emb.detach().float()[torch.from_numpy(u)] @ it_t  # (B, n_items)
            sp = sc.gather(1, torch.from_numpy(p)[:, None]).squeeze(1)
            rows, cols = ragged_rows(*train_csr, u)
            is_pos = torch.zeros_like(sc, dtype=torch.bool)
            is_pos[torch.from_numpy(rows), torch.from_numpy(cols)] = True
            too_close = (sc >= score_bound(sp, rho)[:, None]) & ~is_pos
            rejected += int(too_close.sum())
            rank = sc if text_t is None else sc + gamma * (item_text.float()[torch.from_numpy(p)] @ text_t)
            rank = rank.masked_fill(is_pos | too_close, -torch.inf)
            val, idx = torch.topk(rank, k, dim=1)
            ok = torch.isfinite(val)
            top_scores = sc.gather(1, idx)
        idx_np = idx.numpy().astype(np.int64)
        idx_np[~ok.numpy()] = -1
        items[s: s + b] = idx_np
        scores[s: s + b] = np.where(ok.numpy(), top_scores.numpy(), np.nan)
        pos_score[s: s + b] = sp.numpy()
    return Targets(items, scores, pos_score, rejected)
