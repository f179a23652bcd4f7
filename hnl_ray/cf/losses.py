"""Pairwise losses and L2 on ego embeddings. Scores are dot products; every loss is a batch mean."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(s+ - s-), averaged over pairs and negatives. pos: (B,), neg: (B, n)."""
    return F.softplus(neg - pos[:, None]).mean()


def margin(pos: torch.Tensor, neg: torch.Tensor, m: float) -> torch.Tensor:
    """max(0, s- - s+ + m), averaged (the reference code's hinge, m = 0.3)."""
    return F.relu(neg - pos[:, None] + m).mean()


def l2(*tensors: torch.Tensor, batch_size: int) -> torch.Tensor:
    """0.5 * sum of squared entries / batch size (LightGCN's convention), on the batch's ego embeddings."""
    return 0.5 * sum(t.pow(2).sum() for t in tensors) / batch_size


def pairwise(name: str, pos: torch.Tensor, neg: torch.Tensor, m: float = 0.3) -> torch.Tensor:
    return bpr(pos, neg) if name == "bpr" else margin(pos, neg, m)
