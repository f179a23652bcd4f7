"""Full-ranking evaluation: every item is scored for every user, training items are masked (and validation items
when testing), top-K is taken on the device in user batches, and per-user metrics are kept."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..arrays import unique
from ..errors import ConfigValueError
from .data import CFData, PositiveSet, csr
from .metrics import all_metrics


def ragged_rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For CSR (indptr, indices), the (position in `rows`, column) pairs of the given rows, vectorised."""
    starts, ends = indptr[rows], indptr[rows + 1]
    lens = ends - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    row_pos = np.repeat(np.arange(len(rows)), lens)
    offsets = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
    return row_pos, indices[np.repeat(starts, lens) + offsets]


@dataclass
class EvalResult:
    split: str
    metrics: dict[str, float]
    users: np.ndarray  # evaluated users
    per_user: dict[str, np.ndarray]
    skipped_users: int  # users without items in this split
    masked_truth: int  # ground-truth items dropped because they are already training items of the user
    seconds: float = 0.0
    truth: np.ndarray | None = None  # (n, 3): user, item, rank in the top-K (-1 when outside), every truth pair
    extra: dict = field(default_factory=dict)


class Evaluator:
    def __init__(self, data: CFData, split: str, ks: list[int], batch_users: int = 4096,
                 device: torch.device | str = "cpu"):
        if max(ks) > data.n_items:
            raise ConfigValueError(f"train.eval.ks: K={max(ks)} is larger than the number of items ({data.n_items})")
        self.split, self.ks, self.batch_users, self.device = split, sorted(ks), batch_users, torch.device(device)
        self.n_items = data.n_items
        gu, gi = getattr(data, split)
        mu, mi = [data.train[0]], [data.train[1]]
        if split == "test":  # validation items are known at test time: mask them too
            mu.append(data.valid[0])
            mi.append(data.valid[1])
        mask_u, mask_i = np.concatenate(mu), np.concatenate(mi)
        self.mask = csr(mask_u, mask_i, data.n_users)
        # A ground-truth item the user already has in the mask cannot be recommended: drop it, and count it.
        masked = PositiveSet(mask_u, mask_i, data.n_users, data.n_items).contains(gu, gi)
        self.masked_truth = int(masked.sum())
        gu, gi = gu[~masked], gi[~masked]
        keys = unique(gu * data.n_items + gi)
        self.truth_keys = torch.from_numpy(keys)
        self.users = unique(keys // data.n_items)
        self.n_relevant = np.bincount(keys // data.n_items, minlength=data.n_users)
        self.skipped_users = int(data.n_users - len(self.users))

    @torch.no_grad()
    def evaluate(self, user_emb: torch.Tensor, item_emb: torch.Tensor) -> EvalResult:
        t0 = time.perf_counter()
        kmax = max(self.ks)
        items_t = item_emb.to(self.device).T.contiguous()
        per_user: dict[str, list[torch.Tensor]] = {}
        ranked: list[np.ndarray] = []
        # One reused score buffer: a fresh (batch x items) allocation per batch costs more in page faults than
        # the matrix product itself on CPU.
        buf = torch.empty(min(self.batch_users, len(self.users)), self.n_items, device=self.device,
                          dtype=items_t.dtype)
        for s in range(0, len(self.users), self.batch_users):
            batch = self.users[s: s + self.batch_users]
            scores = torch.mm(user_emb[torch.from_numpy(batch)].to(self.device), items_t, out=buf[: len(batch)])
            rows, cols = ragged_rows(*self.mask, batch)
            scores[torch.from_numpy(rows).to(self.device), torch.from_numpy(cols).to(self.device)] = -torch.inf
            top = torch.topk(scores, kmax, dim=1).indices.cpu()
            keys = torch.from_numpy(batch)[:, None] * self.n_items + top
            pos = torch.searchsorted(self.truth_keys, keys).clamp(max=len(self.truth_keys) - 1)
            hits = self.truth_keys[pos] == keys
            r, k = np.nonzero(hits.numpy())
            ranked.append(np.stack([keys.numpy()[r, k], k], 1))
            for name, val in all_metrics(hits, torch.from_numpy(self.n_relevant[batch]), self.ks).items():
                per_user.setdefault(name, []).append(val)
        arrays = {k: torch.cat(v).numpy() for k, v in per_user.items()}
        means = {k: float(v.mean()) if len(v) else 0.0 for k, v in arrays.items()}
        # Rank of every ground-truth pair (for analyses by item popularity): -1 when outside the top K.
        keys = self.truth_keys.numpy()
        rank = np.full(len(keys), -1, np.int64)
        if ranked:
            hit = np.concatenate(ranked)
            rank[np.searchsorted(keys, hit[:, 0])] = hit[:, 1]
        truth = np.stack([keys // self.n_items, keys % self.n_items, rank], 1)
        return EvalResult(self.split, means, self.users, arrays, self.skipped_users, self.masked_truth,
                          time.perf_counter() - t0, truth)
