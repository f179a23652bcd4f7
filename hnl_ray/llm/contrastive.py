"""Contrastive losses of HNLMRec's fine-tuning, on cosine similarities of query and item embeddings.

* `pairwise` (the reference code's form): mean over i and j != i of -log sigmoid((cos(q_i, p_i) - cos(q_i, p_j))/tau),
  every other item in the (global) batch serving as a negative.
* `infonce`: cross-entropy of the softmax over cos(q_i, p_j)/tau with target j = i.
Extra negatives (random items) append columns that are never targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def similarity(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """(Bq, Bp) cosine similarities."""
    return F.normalize(q, dim=-1) @ F.normalize(p, dim=-1).T


def pairwise_loss(q: torch.Tensor, p: torch.Tensor, tau: float) -> torch.Tensor:
    s = similarity(q, p) / tau  # positives on the diagonal of the first Bq columns
    b = q.shape[0]
    pos = s[torch.arange(b), torch.arange(b)]
    diff = pos[:, None] - s
    off = torch.ones_like(s, dtype=torch.bool)
    off[torch.arange(b), torch.arange(b)] = False
    return -F.logsigmoid(diff[off]).mean()


def infonce_loss(q: torch.Tensor, p: torch.Tensor, tau: float) -> torch.Tensor:
    s = similarity(q, p) / tau
    return F.cross_entropy(s, torch.arange(q.shape[0], device=q.device))


def contrastive_loss(name: str, q: torch.Tensor, p: torch.Tensor, tau: float) -> torch.Tensor:
    return pairwise_loss(q, p, tau) if name == "pairwise" else infonce_loss(q, p, tau)


def in_batch_accuracy(q: torch.Tensor, p: torch.Tensor) -> float:
    """Share of queries whose own positive is the most similar item of the batch."""
    s = similarity(q, p)
    return float((s.argmax(1) == torch.arange(q.shape[0], device=q.device)).float().mean())
