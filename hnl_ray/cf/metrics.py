"""Top-K metrics from a hit matrix: pure functions, checked against hand-computed examples in the tests.

`hits` is (users, K) with 1 where the item at that rank is relevant; `n_relevant` is each user's number of
relevant items. All metrics are per user; averages are taken over users with at least one relevant item.
"""

from __future__ import annotations

import torch


def recall(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    return hits[:, :k].sum(1) / n_relevant.clamp(min=1)


def precision(hits: torch.Tensor, k: int) -> torch.Tensor:
    return hits[:, :k].sum(1) / k


def hit_rate(hits: torch.Tensor, k: int) -> torch.Tensor:
    return (hits[:, :k].sum(1) > 0).to(hits.dtype)


def ndcg(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Binary-relevance NDCG@k: DCG = sum hits_r / log2(r + 1) over ranks r = 1..k; IDCG puts min(n_rel, k)
    relevant items first."""
    disc = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=hits.dtype, device=hits.device))
    dcg = (hits[:, :k] * disc).sum(1)
    ideal_n = n_relevant.clamp(max=k).long()
    idcg = torch.cumsum(disc, 0)[(ideal_n - 1).clamp(min=0)]
    return torch.where(ideal_n > 0, dcg / idcg, torch.zeros_like(dcg))


def all_metrics(hits: torch.Tensor, n_relevant: torch.Tensor, ks: list[int]) -> dict[str, torch.Tensor]:
    hits = hits.float()
    n_relevant = n_relevant.float()
    out = {}
    for k in ks:
        out[f"recall@{k}"] = recall(hits, n_relevant, k)
        out[f"ndcg@{k}"] = ndcg(hits, n_relevant, k)
        out[f"precision@{k}"] = precision(hits, k)
        out[f"hit@{k}"] = hit_rate(hits, k)
    return out
