"""Negative samplers behind one interface, vectorised over the whole batch.

`sample(users, pos, emb)` takes numpy arrays of a batch's (user, positive) pairs and, for samplers that look
at the model, its current embeddings; it returns `Negatives`: item ids (B, n) and/or synthesised embeddings
(B, n, d) with the layer-0 part used by L2. Item ids never include the user's training positives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch

from ..config.cf import SamplerConfig
from ..errors import ConfigValueError
from .data import CFData, PositiveSet
from .models import CFModel, Embeddings


@dataclass
class Negatives:
    items: torch.Tensor | None = None  # (B, n) item ids
    emb: torch.Tensor | None = None  # (B, n, D) final-space embeddings, when synthesised
    ego: torch.Tensor | None = None  # (B, n, d) layer-0 part of synthesised negatives, for L2


def draw_excluding(users: np.ndarray, n: int, positives: PositiveSet, n_items: int, rng: np.random.Generator,
                   draw: Callable[[int], np.ndarray] | None = None, max_rounds: int = 50) -> np.ndarray:
    """(len(users), n) items drawn by `draw` (default uniform), redrawn while they are training positives."""
    draw = draw or (lambda k: rng.integers(0, n_items, size=k))
    out = draw(len(users) * n).reshape(len(users), n)
    flat_users = users if n == 1 else np.repeat(users, n)
    bad = np.flatnonzero(positives.contains(flat_users, out.ravel()))
    for _ in range(max_rounds):
        if not len(bad):
            return out
        fresh = draw(len(bad))
        out.ravel()[bad] = fresh
        bad = bad[positives.contains(flat_users[bad], fresh)]
    # Users with almost every item as a positive: pick from their complement exactly (rare, few rows).
    for k in bad:
        u = flat_users[k]
        cand = np.flatnonzero(~positives.contains(np.full(n_items, u), np.arange(n_items)))
        out.ravel()[k] = rng.choice(cand)
    return out


class Sampler:
    needs_model = False  # scores candidates with the current model
    needs_layers = False  # needs per-layer embeddings with gradients

    def __init__(self, cfg: SamplerConfig, data: CFData, rng: np.random.Generator):
        self.cfg, self.data, self.rng = cfg, data, rng
        self.n = cfg.n_negatives

    def sample(self, users: np.ndarray, pos: np.ndarray, emb: Embeddings | None = None,
               model: CFModel | None = None) -> Negatives:  # pragma: no cover - abstract
        raise NotImplementedError

    def _uniform(self, users: np.ndarray, n: int) -> np.ndarray:
        return draw_excluding(users, n, self.data.positives, self.data.n_items, self.rng)


class UniformSampler(Sampler):
    def sample(self, users, pos, emb=None, model=None) -> Negatives:
        return Negatives(items=torch.from_numpy(self._uniform(users, self.n)))


class PopularitySampler(Sampler):
    """P(item) proportional to (train count + 1) ^ exponent (add-one keeps unseen items possible)."""

    def __init__(self, cfg, data, rng):
        super().__init__(cfg, data, rng)
        w = np.power(data.item_counts.astype(np.float64) + 1.0, cfg.popularity_exponent)
        self.cdf = np.cumsum(w / w.sum())
        self.cdf[-1] = 1.0

    def _draw(self, k: int) -> np.ndarray:
        return np.searchsorted(self.cdf, self.rng.random(k), side="right").clip(0, self.data.n_items - 1)

    def sample(self, users, pos, emb=None, model=None) -> Negatives:
        out = draw_excluding(users, self.n, self.data.positives, self.data.n_items, self.rng, draw=self._draw)
        return Negatives(items=torch.from_numpy(out))


def hardest(user_vec: torch.Tensor, cand_vec: torch.Tensor) -> torch.Tensor:
    """Index (B, n) of the highest-scored candidate: user_vec (B, d), cand_vec (B, n, M, d)."""
    return torch.einsum("bd,bnmd->bnm", user_vec, cand_vec).argmax(-1)


def hop_pick(user_l: torch.Tensor, pos_l: torch.Tensor, cand_l: torch.Tensor, alpha: torch.Tensor
             ) -> torch.Tensor:
    """MixGCF's choice, without gradients. user_l, pos_l: (B, L, d) per-layer embeddings; cand_l: (B, n, M, L, d);
    alpha: (B, n, 1, L, 1) in [0, 1]. The score of a mixed candidate alpha*p + (1-alpha)*c is linear, so it is
    computed from <u, p> and <u, c> without building the mixed tensor. Returns the best candidate per layer,
    (B, n, L)."""
    with torch.no_grad():
        a = alpha[..., 0]  # (B, n, 1, L)
        s_pos = (user_l * pos_l).sum(-1)[:, None, None, :]  # (B, 1, 1, L)
        s_cand = torch.einsum("bld,bnmld->bnml", user_l, cand_l)
        return (a * s_pos + (1 - a) * s_cand).argmax(2)


def mix_hops(user_l: torch.Tensor, pos_l: torch.Tensor, cand_l: torch.Tensor, alpha: torch.Tensor
             ) -> torch.Tensor:
    """MixGCF's synthesis: positive mixing (alpha * pos + (1 - alpha) * cand, per layer) and hop mixing (per
    layer, the mixed candidate the user's layer embedding scores highest). Returns (B, n, L, d)."""
    pick = hop_pick(user_l, pos_l, cand_l, alpha)
    idx = pick[:, :, None, :, None].expand(-1, -1, 1, -1, cand_l.shape[-1])
    chosen = cand_l.gather(2, idx).squeeze(2)  # (B, n, L, d)
    a = alpha[:, :, 0]
    return a * pos_l[:, None] + (1 - a) * chosen


class DNSSampler(Sampler):
    """Dynamic negative sampling (Zhang et al. 2013): score M uniform candidates with the current model and keep
    the highest-scored one per negative slot."""

    needs_model = True

    def sample(self, users, pos, emb=None, model=None) -> Negatives:
        assert emb is not None
        m = self.cfg.candidates
        cand = torch.from_numpy(self._uniform(users, self.n * m)).view(len(users), self.n, m)
        with torch.no_grad():
            best = hardest(emb.users.detach()[torch.from_numpy(users)], emb.items.detach()[cand]).cpu()
        return Negatives(items=cand.gather(-1, best[..., None]).squeeze(-1))


class MixGCFSampler(Sampler):
    """MixGCF (Huang et al. 2021): positive mixing and hop mixing over M uniform candidates (see `mix_hops`),
    pooled as the model pools its layers. The negative is synthesised, so gradients reach the embeddings it was
    mixed from."""

    needs_model = True
    needs_layers = True

    def sample(self, users, pos, emb=None, model=None) -> Negatives:
        assert emb is not None and emb.user_layers is not None and model is not None
        m, b = self.cfg.candidates, len(users)
        cand = torch.from_numpy(self._uniform(users, self.n * m)).view(b, self.n, m)
        u_idx, p_idx = torch.from_numpy(users), torch.from_numpy(pos)
        user_l = torch.stack([t[u_idx] for t in emb.user_layers], 1)  # (B, L, d)
        pos_l = torch.stack([t[p_idx] for t in emb.item_layers], 1)  # (B, L, d)
        n_layers = user_l.shape[1]
        alpha = torch.rand(b, self.n, 1, n_layers, 1, generator=_torch_gen(self.rng)).to(user_l.device)
        with torch.no_grad():  # score all candidates without gradients, layer by layer ...
            m_all = self.n * m
            s_cand = torch.stack([torch.bmm(t.detach()[cand].view(b, m_all, -1), user_l[:, k, :, None].detach())
                                  .view(b, self.n, m) for k, t in enumerate(emb.item_layers)], -1)  # (B,n,M,L)
            a = alpha[..., 0]
            s_pos = (user_l * pos_l).sum(-1).detach()[:, None, None, :]
            pick = (a * s_pos + (1 - a) * s_cand).argmax(2).cpu()  # (B, n, L): hop_pick, layer-wise
        # ... then gather only the chosen candidate of each layer, with gradients.
        ids = cand.gather(2, pick)  # (B, n, L) item ids
        chosen = torch.stack([t[ids[..., k]] for k, t in enumerate(emb.item_layers)], 2)  # (B, n, L, d)
        a = alpha[:, :, 0]
        mixed = a * pos_l[:, None] + (1 - a) * chosen
        return Negatives(items=None, emb=model.pool(mixed), ego=mixed[:, :, 0])


def _torch_gen(rng: np.random.Generator) -> torch.Generator:
    """A torch generator seeded from the sampler's numpy stream, so a resumed run draws the same mixing."""
    g = torch.Generator()
    g.manual_seed(int(rng.integers(0, 2**62)))
    return g


class EmbeddingProvider(Protocol):
    """Supplies, for a batch, an embedding in CF space per pair and which pairs have one (semantic negatives)."""

    def __call__(self, users: np.ndarray, pos: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]: ...


class MixingSampler(Sampler):
    """Extension point for semantic negatives: mix a given embedding into the base sampler's negative,
    e~ = alpha * given + (1 - alpha) * sampled, for the pairs the provider covers; the others keep the sampled
    negative. `alpha` may change during training (`set_alpha`)."""

    def __init__(self, base: Sampler, provider: EmbeddingProvider, alpha: float):
        super().__init__(base.cfg, base.data, base.rng)
        self.base, self.provider, self.alpha = base, provider, alpha
        self.needs_model, self.needs_layers = True, base.needs_layers

    def set_alpha(self, alpha: float) -> None:
        self.alpha = alpha

    def sample(self, users, pos, emb=None, model=None) -> Negatives:
        assert emb is not None
        negs = self.base.sample(users, pos, emb, model)
        sampled = negs.emb if negs.emb is not None else emb.items[negs.items]  # (B, n, D)
        given, has = self.provider(users, pos)  # (B, D), (B,) bool
        w = (self.alpha * has.to(sampled.dtype))[:, None, None]
        mixed = w * given[:, None, :] + (1 - w) * sampled
        ego = negs.ego if negs.ego is not None else model.ego()[1][negs.items] if model is not None else None
        return Negatives(items=negs.items, emb=mixed, ego=ego)


SAMPLERS: dict[str, type[Sampler]] = {
    "uniform": UniformSampler,
    "popularity": PopularitySampler,
    "dns": DNSSampler,
    "mixgcf": MixGCFSampler,
}


def check_feasible(cfg: SamplerConfig, data: CFData) -> None:
    """Fail early when a user cannot get the negatives asked for."""
    fewest = int(data.n_items - data.user_counts.max())
    if fewest < 1 or cfg.n_negatives > fewest:
        raise ConfigValueError(f"train.sampler.n_negatives: {cfg.n_negatives} asked, but the most active user has only "
                         f"{fewest} non-interacted items of {data.n_items}")


def build_sampler(cfg: SamplerConfig, data: CFData, rng: np.random.Generator) -> Sampler:
    """The configured sampler; for `semantic` / `semantic-item`, its base sampler (the trainer wraps it)."""
    check_feasible(cfg, data)
    name = cfg.base if cfg.name in ("semantic", "semantic-item") else cfg.name
    return SAMPLERS[name](cfg, data, rng)
