"""Contrastive losses of HNLMRec's fine-tuning, on cosine similarities of query and item embeddings.

* `pairwise` (the reference code's form): mean over i and j != i of -log sigmoid((cos(q_i, p_i) - cos(q_i, p_j))/tau),
  every other item in the (global) batch serving as a negative.
* `infonce`: cross-entropy of the softmax over cos(q_i, p_j)/tau with target j = i.
Extra negatives (random items) append columns that are never targets.

With several positives per query (the teacher's K targets of a pair), `multi_positive_loss` takes a (Bq, Bp)
mask of each query's own positives: every positive is scored against the query's negatives only (the other
positives of the same query are neither pushed apart nor counted as negatives), and `ignore` drops columns
that are no negative either (another query's copy of one of this query's targets). Per query, the terms are
averaged over its positives (infonce) or its (positive, negative) pairs (pairwise), then over queries, so that
with one positive per query on the diagonal both forms equal the single-positive losses above.
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


def multi_positive_loss(name: str, q: torch.Tensor, p: torch.Tensor, pos: torch.Tensor, tau: float,
                        ignore: torch.Tensor | None = None) -> torch.Tensor:
    """`pairwise` or `infonce` over a (Bq, Bp) boolean mask of positives; every query needs one."""
    s = similarity(q, p) / tau
    neg = ~pos if ignore is None else ~(pos | ignore)
    n_pos = pos.sum(1)
    if bool((n_pos == 0).any()):
        raise ValueError("multi_positive_loss: a query without a positive")
    if name == "pairwise":
        # (Bq, Bp+, Bp-) margins, masked to (own positive, negative) pairs
        terms = -F.logsigmoid(s[:, :, None] - s[:, None, :])
        m = (pos[:, :, None] & neg[:, None, :]).to(s.dtype)
        per_query = (terms * m).sum((1, 2)) / m.sum((1, 2)).clamp(min=1)
    else:
        # log(e^{s+} + sum over negatives e^{s-}) for each positive, from one logsumexp over negatives
        neg_lse = torch.logsumexp(s.masked_fill(~neg, float("-inf")), 1, keepdim=True)
        denom = torch.logaddexp(s, neg_lse)
        per_query = ((denom - s) * pos.to(s.dtype)).sum(1) / n_pos.to(s.dtype)
    return per_query.mean()


def target_masks(targets: torch.Tensor, extra_items: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(pos, ignore) masks of a multi-positive batch laid out as query b's K target slots at passages
    b*K ... b*K + K - 1, then the extra negatives. `targets` (Bq, K) holds item ids, -1 in the padding slots
    of a pair with fewer than K targets (its passage is a copy: neither a positive nor anyone's negative);
    `extra_items` the extra negatives' ids (-1 unknown). A passage of the item one of b's targets names, in
    another query's slot, is ignored for b rather than pushed away (an in-batch false negative)."""
    bq, k = targets.shape
    cols = targets.reshape(-1)
    if extra_items is not None:
        cols = torch.cat([cols, extra_items.to(cols)])
    pos = torch.zeros(bq, len(cols), dtype=torch.bool, device=targets.device)
    rows = torch.arange(bq, device=targets.device).repeat_interleave(k)
    slots = torch.arange(bq * k, device=targets.device)
    own = targets.reshape(-1) >= 0
    pos[rows[own], slots[own]] = True
    same = (cols[None, :, None] == targets[:, None, :]).any(-1) & (cols >= 0)[None, :]
    pad = torch.zeros(len(cols), dtype=torch.bool, device=targets.device)
    pad[: bq * k] = ~own
    return pos, (same & ~pos) | pad[None, :]


def in_batch_accuracy(q: torch.Tensor, p: torch.Tensor, pos: torch.Tensor | None = None,
                      ignore: torch.Tensor | None = None) -> float:
    """Share of queries whose most similar passage of the batch is one of their own positives (the diagonal
    without a mask); ignored columns do not compete."""
    s = similarity(q, p)
    if pos is None:
        return float((s.argmax(1) == torch.arange(q.shape[0], device=q.device)).float().mean())
    if ignore is not None:
        s = s.masked_fill(ignore, float("-inf"))
    return float(pos[torch.arange(q.shape[0], device=q.device), s.argmax(1)].float().mean())
