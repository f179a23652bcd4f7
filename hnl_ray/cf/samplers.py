"""Negative samplers behind one interface, vectorised over the whole batch.

`sample(users, pos, emb)` takes numpy arrays of a batch's (user, positive) pairs and, for samplers that look
at the model, its current embeddings; it returns `Negatives`: item ids (B, n) and/or synthesised embeddings
(B, n, d) with the layer-0 part used by L2. Item ids never include the user's training positives.
Classic samplers: uniform, popularity, DNS, MixGCF, AHNS; HNLMRec v2's `hnlmrec` takes semantic candidates.
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
from .neighbours import max_text_similarity


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


def ahns_target(s_pos: torch.Tensor, alpha: float, beta: float, p: float) -> torch.Tensor:
    """AHNS's target hardness beta * (s(u, i) + alpha) ^ (p + 1) (Lai et al. 2024): the better the positive is
    scored, the easier the negative (p + 1 < 0)."""
    return beta * torch.pow(s_pos + alpha, p + 1)


def ahns_pick(s_pos: torch.Tensor, s_cand: torch.Tensor, alpha: float, beta: float, p: float,
              eligible: torch.Tensor | None = None) -> torch.Tensor:
    """Index (B, ...) of the candidate whose score is nearest the target: argmin |s(u, j) - target(s(u, i))|.
    s_pos: (B,), s_cand: (B, ..., M). A non-finite target (a non-integer p + 1 on a negative base) falls back to
    the highest-scored candidate."""
    target = ahns_target(s_pos, alpha, beta, p).view(-1, *([1] * (s_cand.dim() - 1)))
    gap = (s_cand - target).abs()
    gap = torch.where(torch.isfinite(target), gap, -s_cand)
    if eligible is not None:
        gap = gap.masked_fill(~eligible, torch.inf)
    return gap.argmin(-1)


class AHNSSampler(Sampler):
    """Adaptive hardness negative sampling (Lai et al., AAAI 2024): among M uniform candidates, the one whose
    live score is nearest beta * (s(u, i) + alpha) ^ (p + 1) (train.sampler.ahns)."""

    needs_model = True

    def sample(self, users, pos, emb=None, model=None) -> Negatives:
        assert emb is not None
        m, a = self.cfg.candidates, self.cfg.ahns
        cand = torch.from_numpy(self._uniform(users, self.n * m)).view(len(users), self.n, m)
        with torch.no_grad():
            uv = emb.users.detach()[torch.from_numpy(users)]
            s_pos = (uv * emb.items.detach()[torch.from_numpy(pos)]).sum(-1)
            s_cand = torch.einsum("bd,bnmd->bnm", uv, emb.items.detach()[cand])
            best = ahns_pick(s_pos, s_cand, a.alpha, a.beta, a.p).cpu()
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
        if getattr(self.provider, "wants_emb", False):  # the teacher control mixes live CF embeddings
            given, has = self.provider(users, pos, emb)
        else:
            given, has = self.provider(users, pos)  # (B, D), (B,) bool
        w = (self.alpha * has.to(sampled.dtype))[:, None, None]
        mixed = w * given[:, None, :] + (1 - w) * sampled
        ego = negs.ego if negs.ego is not None else model.ego()[1][negs.items] if model is not None else None
        return Negatives(items=negs.items, emb=mixed, ego=ego)


class HNLMRecSampler(Sampler):
    """HNLMRec v2: candidates = the pair's N semantic neighbours (`PairCandidates`, from the configured source)
    plus M uniform draws per negative; the live model picks among the eligible ones (`rule: dns`: the highest
    score; `ahns`: nearest AHNS's target). The negatives are real items, so their embeddings get gradients and
    stay hard as training moves.

    False-negative guard (train.sampler.hnlmrec.guard): a candidate is not eligible when its live score is
    >= rho * s(u, i), or when its text is at least `text_threshold` cosine from one of the user's training
    positives; `guard.scope: neighbours` (default) screens only the semantic pool, so the uniform draws stay
    exactly DNS's candidates. A negative slot without an eligible candidate takes its first uniform draw.
    `stats()` returns and resets the shares rejected since the last call (the trainer logs it per epoch)."""

    needs_model = True

    def __init__(self, cfg, data, rng):
        super().__init__(cfg, data, rng)
        self.hc = cfg.hnlmrec
        self.cands = None
        self.text: torch.Tensor | None = None
        self._nb_sim: np.ndarray | None = None
        self._counts = dict.fromkeys(("candidates", "rejected_score", "rejected_text", "rejected", "picked",
                                      "picked_neighbour", "fallback"), 0)

    def attach(self, cands, text: torch.Tensor | None) -> HNLMRecSampler:
        """The pair neighbours (`PairCandidates`) and the items' unit text vectors (for the text guard)."""
        if self.hc.neighbours and cands is None:
            raise ValueError("train.sampler.hnlmrec.neighbours > 0 needs pair neighbours (source "
                             f"{self.hc.source!r})")
        self.cands, self.text = cands, text
        self._nb_sim = None  # text rule of every stored neighbour, computed at first use
        return self

    def _neighbour_text_sim(self) -> np.ndarray:
        """Per entry of the pair neighbours: the highest text cosine to the pair's user's training positives. Both
        are fixed for the whole run, so this is computed once (in chunks), not per batch."""
        if self._nb_sim is None:
            users, items, chunk = self.cands.users(), self.cands.items, 1 << 15
            self._nb_sim = np.concatenate(
                [max_text_similarity(items[s: s + chunk], users[s: s + chunk], self.data.train_csr, self.text)
                 for s in range(0, len(items), chunk)] or [np.zeros(0, np.float32)])
        return self._nb_sim

    def candidates(self, users: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """(B, N + n * M): the pair's neighbours (-1 padded), then n blocks of M uniform draws."""
        nb = (self.cands.lookup(users, pos, self.hc.neighbours) if self.hc.neighbours
              else np.zeros((len(users), 0), np.int64))
        uni = self._uniform(users, self.n * self.hc.uniform) if self.hc.uniform else np.zeros((len(users), 0),
                                                                                              np.int64)
        return np.concatenate([nb, uni.reshape(len(users), -1)], 1)

    def eligible(self, users: np.ndarray, pos: np.ndarray, cand: np.ndarray, s_pos: torch.Tensor,
                 s_cand: torch.Tensor) -> torch.Tensor:
        """(B, C) bool: a real candidate, not a training positive, and not rejected by the guard."""
        real = cand >= 0
        flat_u = np.repeat(users, cand.shape[1])
        real &= ~self.data.positives.contains(flat_u, np.maximum(cand, 0).ravel()).reshape(cand.shape)
        ok = torch.from_numpy(real)
        g = self.hc.guard
        self._counts["candidates"] += int(real.sum())
        if g.enabled:
            bad_score = (s_cand >= g.rho * s_pos[:, None]).cpu() & ok
            bad = bad_score.clone()
            if g.text_threshold is not None and self.text is not None:
                n_nb = self.hc.neighbours
                sim = np.full(cand.shape, -1.0, np.float32)
                if n_nb:
                    at = self.cands.slots(users, pos, n_nb)
                    sim[:, :n_nb] = np.where(at >= 0, self._neighbour_text_sim()[np.maximum(at, 0)], -1.0)
                if g.scope == "all" and cand.shape[1] > n_nb:  # the uniform draws change every batch
                    rest = np.maximum(cand[:, n_nb:], 0)
                    sim[:, n_nb:] = max_text_similarity(rest.ravel(), np.repeat(users, rest.shape[1]),
                                                        self.data.train_csr, self.text).reshape(rest.shape)
                bad_text = torch.from_numpy(sim >= g.text_threshold) & ok
                self._counts["rejected_text"] += int(bad_text.sum())
                bad |= bad_text
            if g.scope == "neighbours":  # the uniform draws stay exactly DNS's pool
                bad_score[:, self.hc.neighbours:] = False
                bad[:, self.hc.neighbours:] = False
            self._counts["rejected_score"] += int(bad_score.sum())
            self._counts["rejected"] += int(bad.sum())
            ok &= ~bad
        return ok

    def sample(self, users, pos, emb=None, model=None) -> Negatives:
        assert emb is not None
        if self.hc.neighbours and self.cands is None:
            raise RuntimeError("the hnlmrec sampler has no pair neighbours: build it through the train stage")
        cand = self.candidates(users, pos)
        b, c = cand.shape
        with torch.no_grad():
            uv = emb.users.detach()[torch.from_numpy(users)]
            s_pos = (uv * emb.items.detach()[torch.from_numpy(pos)]).sum(-1)
            s_cand = torch.einsum("bd,bcd->bc", uv, emb.items.detach()[torch.from_numpy(np.maximum(cand, 0))])
        ok = self.eligible(users, pos, cand, s_pos.cpu(), s_cand.cpu()).to(s_cand.device)
        picks = []
        taken = torch.zeros_like(ok)
        for k in range(self.n):  # n picks among the eligible candidates, distinct items while there are some
            free = ok & ~taken
            if self.hc.rule == "ahns":
                a = self.cfg.ahns
                idx = ahns_pick(s_pos, s_cand, a.alpha, a.beta, a.p, free)
            else:
                idx = s_cand.masked_fill(~free, -torch.inf).argmax(-1)
            got = free.gather(1, idx[:, None]).squeeze(1)
            fallback = torch.full_like(idx, self.hc.neighbours + k * self.hc.uniform)
            if self.hc.uniform == 0:  # no uniform draw to fall back on: a fresh one
                extra = torch.from_numpy(self._uniform(users, 1)[:, 0])
                item = torch.where(got.cpu(), torch.from_numpy(cand).gather(1, idx.cpu()[:, None]).squeeze(1), extra)
            else:
                idx = torch.where(got, idx, fallback)
                item = torch.from_numpy(cand).gather(1, idx.cpu()[:, None]).squeeze(1)
            self._counts["picked"] += b
            self._counts["fallback"] += int((~got).sum())
            self._counts["picked_neighbour"] += int((got & (idx < self.hc.neighbours)).sum())
            picks.append(item)
            taken |= torch.from_numpy(cand).eq(item[:, None]).to(taken.device)  # an item is picked once per pair
        return Negatives(items=torch.stack(picks, 1))

    def stats(self) -> dict[str, float]:
        c = self._counts
        out = {"guard_rejected_share": c["rejected"] / max(c["candidates"], 1),
               "guard_rejected_score_share": c["rejected_score"] / max(c["candidates"], 1),
               "guard_rejected_text_share": c["rejected_text"] / max(c["candidates"], 1),
               "neighbour_pick_share": c["picked_neighbour"] / max(c["picked"], 1),
               "fallback_share": c["fallback"] / max(c["picked"], 1)}
        for k in c:
            c[k] = 0
        return out


SAMPLERS: dict[str, type[Sampler]] = {
    "uniform": UniformSampler,
    "popularity": PopularitySampler,
    "dns": DNSSampler,
    "mixgcf": MixGCFSampler,
    "ahns": AHNSSampler,
    "hnlmrec": HNLMRecSampler,
}


def check_feasible(cfg: SamplerConfig, data: CFData) -> None:
    """Fail early when a user cannot get the negatives asked for, or a candidate count exceeds the catalogue."""
    fewest = int(data.n_items - data.user_counts.max())
    if fewest < 1 or cfg.n_negatives > fewest:
        raise ConfigValueError(f"train.sampler.n_negatives: {cfg.n_negatives} asked, but the most active user has only "
                         f"{fewest} non-interacted items of {data.n_items}")
    sizes = {"candidates": cfg.candidates} if cfg.name in ("dns", "mixgcf", "ahns") else {}
    if cfg.name == "hnlmrec":
        sizes = {"hnlmrec.neighbours": cfg.hnlmrec.neighbours, "hnlmrec.uniform": cfg.hnlmrec.uniform}
    for key, v in sizes.items():
        if v > data.n_items:
            raise ValueError(f"train.sampler.{key}: {v} asked, but the catalogue has only {data.n_items} items")


def build_sampler(cfg: SamplerConfig, data: CFData, rng: np.random.Generator) -> Sampler:
    """The configured sampler; for `semantic` / `semantic-item`, its base sampler (the trainer wraps it)."""
    check_feasible(cfg, data)
    name = cfg.base if cfg.name in ("semantic", "semantic-item") else cfg.name
    return SAMPLERS[name](cfg, data, rng)
