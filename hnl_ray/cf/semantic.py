"""Semantic negatives in CF training: LLM embeddings aligned to CF space by an adapter trained jointly with the CF
model (the reference code never optimises its adapter), mixed into sampled negatives, plus a contrastive term;
and grounded catalog items as negatives.

* `semantic`: e~ = alpha * adapter(e_hard(u, i)) + (1 - alpha) * e_sampled, e_hard from HNLMRec (hardneg/) or from
  method 1 (embeddings/negatives.parquet); loss += lambda_cl * contrastive(e_u, e_i, adapter(e_hard)).
  The adapter (`adapter_objective: align`, the default) learns to map e_hard onto the CF embedding of the item it
  stands for (the teacher's j* for HNLMRec, a grounded item for method 1) and receives no gradient from the CF
  loss: trained on the CF loss (`joint`), it learns to make the mixed negatives *easy*, and the loss collapses.
* `semantic-item`: the negative is one of the catalog items grounded from the pair's method-1 negatives.

The core takes arrays (`SemanticArrays`): the `train` stage loads them from the run's artifacts. Lookups are
vectorised (sorted pair keys + binary search). A pair without an embedding uses the user's mean
embedding, or gets no mixing (`fallback`), never random noise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config.cf import SemanticConfig, TrainConfig
from ..errors import HnlRayError
from .data import CFData
from .samplers import Negatives, Sampler

log = logging.getLogger(__name__)


class SemanticInputError(HnlRayError, ValueError):
    pass


class PairIndex:
    """Vectors keyed by (user, item), looked up for whole batches; per-user means for the fallback."""

    def __init__(self, users: np.ndarray, items: np.ndarray, vecs: np.ndarray, n_users: int, n_items: int):
        keys = users.astype(np.int64) * n_items + items.astype(np.int64)
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.vecs = torch.from_numpy(np.ascontiguousarray(vecs[order]))
        self.n_items = n_items
        sums = np.zeros((n_users, vecs.shape[1]), np.float64)
        np.add.at(sums, users, vecs.astype(np.float64))
        counts = np.bincount(users, minlength=n_users)
        self.has_user = torch.from_numpy(counts > 0)
        self.user_mean = torch.from_numpy((sums / np.maximum(counts, 1)[:, None]).astype(np.float32))

    @property
    def dim(self) -> int:
        return int(self.vecs.shape[1])

    def lookup(self, users: np.ndarray, items: np.ndarray, fallback: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(vectors, covered): a pair's own vector, else the fallback's, else zeros with covered False."""
        out, has, _ = self.lookup_own(users, items, fallback)
        return out, has

    def lookup_own(self, users: np.ndarray, items: np.ndarray, fallback: str
                   ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """`lookup`, plus which pairs got their own vector (not a fallback)."""
        hit = find_pairs(self.keys, users, items, self.n_items)
        out = torch.zeros(len(users), self.dim)
        hit_t = torch.from_numpy(hit >= 0)
        out[hit_t] = self.vecs[torch.from_numpy(hit[hit >= 0])].float()
        has = hit_t.clone()
        if fallback == "user_mean":
            miss = ~hit_t
            u = torch.from_numpy(users)[miss]
            out[miss] = self.user_mean[u]
            has[miss] = self.has_user[u]
        return out, has, hit >= 0


def find_pairs(sorted_keys: np.ndarray, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Row of each (user, item) pair in `sorted_keys` (user * n_items + item, ascending), -1 where absent."""
    keys = users.astype(np.int64) * n_items + items.astype(np.int64)
    if len(sorted_keys) == 0:
        return np.full(len(keys), -1, np.int64)
    at = np.searchsorted(sorted_keys, keys).clip(max=len(sorted_keys) - 1)
    return np.where(sorted_keys[at] == keys, at, -1)


@dataclass
class AlignTargets:
    """The catalog item each pair's LLM vector stands for (sorted pair keys -> item id)."""

    keys: np.ndarray
    items: np.ndarray
    n_items: int

    @classmethod
    def build(cls, users: np.ndarray, items: np.ndarray, targets: np.ndarray, n_items: int) -> AlignTargets:
        keys = users.astype(np.int64) * n_items + items.astype(np.int64)
        keys, first = np.unique(keys, return_index=True)  # one target per pair: the first listed
        return cls(keys, targets[first].astype(np.int64), n_items)

    def lookup(self, users: np.ndarray, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        row = find_pairs(self.keys, users, items, self.n_items)
        ok = row >= 0
        return torch.from_numpy(np.where(ok, self.items[np.maximum(row, 0)], 0)), torch.from_numpy(ok)


class Adapter(nn.Module):
    """LLM dim -> hidden ... -> CF dim, ReLU between layers (none on the output: CF embeddings take any sign)."""

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int):
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        layers: list[nn.Module] = []
        for k in range(len(dims) - 1):
            layers.append(nn.Linear(dims[k], dims[k + 1]))
            if k < len(dims) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class SemanticProvider:
    """adapter(e_hard) for a batch, cached for the contrastive and alignment terms of the same step. With
    `detach`, the mixed negative carries no gradient back to the adapter (the `align` objective)."""

    index: PairIndex
    adapter: Adapter
    fallback: str
    device: torch.device
    detach: bool = False
    last: dict = field(default_factory=dict)

    def __call__(self, users: np.ndarray, pos: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        vecs, has, own = self.index.lookup_own(users, pos, self.fallback)  # own: not a fallback vector
        out = self.adapter(vecs.to(self.device))
        self.last = {"users": users, "pos": pos, "adapted": out, "has": has.to(self.device), "own": own}
        return (out.detach() if self.detach else out), has.to(self.device)


@dataclass
class TeacherTargetProvider:
    """The `teacher` control of the mixing path: the live CF embeddings of the pair's teacher targets (their
    mean), detached, mixed in where an LLM vector would be. No language model and no adapter."""

    targets: object  # PairCandidates: the pair's K teacher targets
    k: int
    device: torch.device
    wants_emb: bool = True
    detach: bool = True
    last: dict = field(default_factory=dict)

    def __call__(self, users: np.ndarray, pos: np.ndarray, emb) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.from_numpy(self.targets.lookup(users, pos, self.k)).to(self.device)  # (B, K), -1 padded
        ok = t >= 0
        vec = emb.items.detach()[t.clamp(min=0)] * ok[..., None]
        out = vec.sum(1) / ok.sum(1, keepdim=True).clamp(min=1)
        has = ok.any(1)
        self.last = {"users": users, "pos": pos, "adapted": out, "has": has, "own": has.cpu().numpy()}
        return out, has


def item_split(n_items: int, share: float, seed: int) -> np.ndarray:
    """(n_items,) bool: the items held out of the item InfoNCE (seeded), to measure the map on unseen items."""
    held = np.zeros(n_items, bool)
    k = int(round(share * n_items))
    if k:
        held[np.random.default_rng(seed).choice(n_items, k, replace=False)] = True
    return held


def item_infonce_term(adapter: Adapter, item_vecs: torch.Tensor, train_items: np.ndarray, weight: float,
                      tau: float, batch: int, rng: np.random.Generator):
    """weight * InfoNCE over the catalogue (RLMRec-Con style): for a batch of training items j,
    -log softmax_k(cos(adapter(t_j), sg(e_k)) / tau)[j] over every catalogue item k. The adapter learns the map
    from the model's item space to CF space on items, never on the pairs whose vectors it then maps."""

    def term(ctx) -> tuple[str, torch.Tensor]:
        j = rng.choice(train_items, size=min(batch, len(train_items)), replace=False)
        j_t = torch.from_numpy(j).to(ctx.user_vec.device)
        a = F.normalize(adapter(item_vecs[j_t]), dim=-1)
        e = F.normalize(ctx.emb.items.detach(), dim=-1)
        return "item_nce", weight * F.cross_entropy(a @ e.T / tau, j_t)

    return term


@torch.no_grad()
def item_recall(adapter: Adapter, item_vecs: torch.Tensor, cf_items: torch.Tensor, items: np.ndarray,
                k: int = 10) -> float:
    """Share of `items` whose own CF embedding is among the k nearest (cosine) of adapter(t_j) in the catalogue."""
    if not len(items):
        return float("nan")
    j_t = torch.from_numpy(items).to(cf_items.device)
    a = F.normalize(adapter(item_vecs[j_t]), dim=-1)
    top = (a @ F.normalize(cf_items, dim=-1).T).topk(min(k, cf_items.shape[0]), dim=1).indices
    return float((top == j_t[:, None]).any(1).float().mean())


def contrastive_term(provider: SemanticProvider, weight: float, tau: float):
    """lambda * mean over covered pairs of -log(e^{cos(u,i)/tau} / (e^{cos(u,i)/tau} + e^{cos(u,a)/tau})),
    a = adapter(e_hard): the user is pulled to the item and pushed from its aligned LLM hard negative."""

    def term(ctx) -> tuple[str, torch.Tensor]:
        last = provider.last
        if not last or last["users"] is not ctx.users or not bool(last["has"].any()):
            return "cl", torch.zeros((), device=ctx.user_vec.device)
        h = last["has"]
        a = last["adapted"].detach() if provider.detach else last["adapted"]
        u, i, a = ctx.user_vec[h], ctx.pos_vec[h], a[h]
        pos = F.cosine_similarity(u, i, dim=-1) / tau
        neg = F.cosine_similarity(u, a, dim=-1) / tau
        return "cl", weight * (torch.logaddexp(pos, neg) - pos).mean()

    return term


def alignment_term(provider: SemanticProvider, targets: AlignTargets, weight: float):
    """weight * mean over pairs with their own vector and a target of
    ||adapter(e_hard(u, i)) - sg(e_item[target(u, i)])||^2: the adapter learns the LLM -> CF map from the pairs
    whose hard negative is a known catalog item."""

    def term(ctx) -> tuple[str, torch.Tensor]:
        last = provider.last
        if not last or last["users"] is not ctx.users:
            return "align", torch.zeros((), device=ctx.user_vec.device)
        items, ok = targets.lookup(last["users"], last["pos"])
        ok &= torch.from_numpy(last["own"])  # a user's mean vector stands for no particular item
        if not bool(ok.any()):
            return "align", torch.zeros((), device=ctx.user_vec.device)
        ok = ok.to(last["adapted"].device)
        goal = ctx.emb.items[items.to(ok.device)[ok]].detach()
        return "align", weight * (last["adapted"][ok] - goal).pow(2).sum(-1).mean()

    return term


class GroundedItemSampler(Sampler):
    """`semantic-item`: replace the base sampler's negative with one of the catalog items grounded from the
    pair's method-1 hard negatives (chosen at random among them), for a `share` of the pairs that have some."""

    def __init__(self, base: Sampler, pair_keys: np.ndarray, indptr: np.ndarray, grounded: np.ndarray,
                 share: float):
        super().__init__(base.cfg, base.data, base.rng)
        self.base, self.keys, self.indptr, self.grounded, self.share = base, pair_keys, indptr, grounded, share
        self.needs_model, self.needs_layers = base.needs_model, base.needs_layers
        self.replaced = 0

    def sample(self, users, pos, emb=None, model=None) -> Negatives:
        negs = self.base.sample(users, pos, emb, model)
        items = negs.items.clone()
        at = find_pairs(self.keys, users, pos, self.data.n_items)
        hit = (at >= 0) & (self.rng.random(len(at)) < self.share)
        rows = np.flatnonzero(hit)
        if len(rows):
            start, end = self.indptr[at[rows]], self.indptr[at[rows] + 1]
            pick = start + (self.rng.random(len(rows)) * (end - start)).astype(np.int64)
            items[torch.from_numpy(rows), 0] = torch.from_numpy(self.grounded[pick])
            self.replaced += len(rows)
        return Negatives(items=items)


# ------------------------------------------------------------------------------------------------ loading


def _check_ids(users: np.ndarray, items: np.ndarray, data: CFData, where: str) -> None:
    bad = (users < 0) | (users >= data.n_users) | (items < 0) | (items >= data.n_items)
    if bad.any():
        raise SemanticInputError(f"{where}: {int(bad.sum())} pairs name users or items missing from the prepared "
                                 f"data (e.g. user {int(users[bad][0])}, item {int(items[bad][0])}); it was made "
                                 "from another dataset or split: re-run the stages that produce it")


@dataclass
class SemanticArrays:
    """What a semantic sampler is built from, as arrays (the `train` stage loads them from the run's artifacts).

    `users`, `items`: the pairs; `vectors`: their LLM vectors (HNLMRec's, or method 1's, one row per negative);
    `grounded`: (pairs, width) catalog items grounded from method-1 negatives (-1: none); `targets`: the teacher's
    (user, item, j*) triples for the `align` objective. `where` / `targets_where` name the artifacts in errors."""

    source: str  # "hardneg" or "method1" (what the vectors are), "teacher" (targets only)
    where: str
    users: np.ndarray
    items: np.ndarray
    vectors: np.ndarray | None = None
    grounded: np.ndarray | None = None
    targets: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    targets_where: str = ""
    catalogue: np.ndarray | None = None  # (n_items, d): the items in the vectors' space (`item` objective)
    catalogue_where: str = ""


def hardneg_index(a: SemanticArrays, data: CFData, control: str = "hardneg", seed: int = 0) -> PairIndex:
    """The pair vectors; the `shuffled` control permutes them across pairs, `random` replaces each with a random
    unit vector of the same size (same pairs, same path)."""
    _check_ids(a.users, a.items, data, a.where)
    # Fine-tuning trained these with a cosine loss: only the direction means anything, and raw hidden-state norms
    # (hundreds for SmolLM2) would dominate the adapter's first outputs.
    v = a.vectors.astype(np.float32)
    rng = np.random.default_rng(seed)
    if control == "shuffled":
        v = v[rng.permutation(len(v))]
    elif control == "random":
        v = rng.standard_normal(v.shape).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True).clip(min=1e-12)
    return PairIndex(a.users, a.items, v, data.n_users, data.n_items)


def method1_index(a: SemanticArrays, data: CFData) -> PairIndex:
    """Method-1 text embeddings, averaged over the K negatives of a pair (false negatives left out)."""
    _check_ids(a.users, a.items, data, a.where)
    u, i, v = a.users, a.items, a.vectors
    keys = u * data.n_items + i
    uniq, inv = np.unique(keys, return_inverse=True)
    sums = np.zeros((len(uniq), v.shape[1]), np.float64)
    np.add.at(sums, inv, v)
    mean = (sums / np.bincount(inv)[:, None]).astype(np.float32)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True).clip(min=1e-12)
    return PairIndex(uniq // data.n_items, uniq % data.n_items, mean, data.n_users, data.n_items)


def teacher_targets(a: SemanticArrays, data: CFData) -> AlignTargets:
    """The teacher's hard negative j* of each mined pair: what HNLMRec's vector for (u, i) was trained towards."""
    u, i, j = a.targets
    _check_ids(u, j, data, a.targets_where)
    return AlignTargets.build(u, i, j, data.n_items)


def grounded_targets(keys: np.ndarray, indptr: np.ndarray, grounded: np.ndarray, n_items: int) -> AlignTargets:
    """Method 1: the first grounded catalog item of each pair."""
    return AlignTargets(keys, grounded[indptr[:-1]], n_items)


def grounded_lists(a: SemanticArrays, data: CFData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted pair keys, indptr, grounded item ids) of the method-1 negatives' grounded items."""
    _check_ids(a.users, a.items, data, a.where)
    width = a.grounded.shape[1]
    keys = np.repeat(a.users * data.n_items + a.items, width)
    flat = a.grounded.reshape(-1)
    ok = flat >= 0
    keys, flat = keys[ok], flat[ok]
    order = np.argsort(keys, kind="stable")
    keys, flat = keys[order], flat[order].astype(np.int64)
    uniq, starts = np.unique(keys, return_index=True)
    indptr = np.r_[starts, len(keys)]
    return uniq, indptr, flat


@dataclass
class SemanticParts:
    sampler_factory: object
    extra_modules: list
    extra_losses: list
    epoch_hooks: list
    describe: dict
    after_fit: object = None  # (trainer) -> dict merged into `describe` once the chosen model is loaded

    def trainer_kwargs(self) -> dict:
        return dict(sampler_factory=self.sampler_factory, extra_modules=self.extra_modules,
                    extra_losses=self.extra_losses, epoch_hooks=self.epoch_hooks)


def build_semantic(tcfg: TrainConfig, arrays: SemanticArrays, data: CFData, model_dim: int, device: torch.device,
                   seed: int = 0) -> SemanticParts:
    from .samplers import MixingSampler

    sc: SemanticConfig = tcfg.sampler.semantic
    if tcfg.sampler.name == "semantic-item":
        keys, indptr, grounded = grounded_lists(arrays, data)

        def factory(base: Sampler) -> Sampler:
            return GroundedItemSampler(base, keys, indptr, grounded, sc.share)

        return SemanticParts(factory, [], [], [], {"grounded_pairs": int(len(keys))})
    if sc.source == "teacher":
        return _teacher_control(tcfg, arrays, data, device)
    index = (method1_index(arrays, data) if sc.source == "negatives"
             else hardneg_index(arrays, data, sc.source, seed))
    if sc.llm_dim is not None and sc.llm_dim != index.dim:
        raise SemanticInputError(f"{arrays.where} holds {index.dim}-dimensional embeddings, but "
                                 f"train.sampler.semantic.llm_dim is {sc.llm_dim}: fix llm_dim (or leave it null) "
                                 "or re-run the stage that made the artifact with the intended model")
    adapter = Adapter(index.dim, sc.adapter_hidden, model_dim).to(device)
    detach = sc.adapter_objective in ("align", "item")  # the CF loss never trains the adapter
    provider = SemanticProvider(index, adapter, sc.fallback, device, detach=detach)
    holder: dict = {}

    def factory(base: Sampler) -> Sampler:
        holder["mix"] = MixingSampler(base, provider, 0.0 if sc.alpha_schedule == "linear" else sc.alpha)
        return holder["mix"]

    def schedule(epoch: int) -> None:
        if sc.alpha_schedule == "linear":
            holder["mix"].set_alpha(sc.alpha * min(1.0, epoch / sc.alpha_warmup_epochs))

    losses = [contrastive_term(provider, sc.cl_weight, sc.cl_temperature)] if sc.cl_weight > 0 else []
    describe = {"source": sc.source, "pairs_with_embedding": int(len(index.keys)), "llm_dim": index.dim,
                "adapter_objective": sc.adapter_objective}
    after_fit = None
    if sc.adapter_objective == "item":
        cat, path = arrays.catalogue, arrays.catalogue_where
        if cat.shape[1] != index.dim:
            raise SemanticInputError(f"{path} holds {cat.shape[1]}-dimensional item vectors, the pair "
                                     f"vectors {index.dim}: they must come from the same model "
                                     "(train.sampler.semantic.adapter_objective: item)")
        cat_t = torch.from_numpy(cat).to(device)
        held = item_split(data.n_items, sc.item_holdout, seed)
        train_items, held_items = np.flatnonzero(~held), np.flatnonzero(held)
        losses.append(item_infonce_term(adapter, cat_t, train_items, sc.item_weight, sc.item_temperature,
                                        sc.item_batch, np.random.default_rng(seed + 1)))
        describe.update({"items_held_out": int(len(held_items)), "item_space": path})

        def after_fit(trainer) -> dict:
            emb = trainer.embeddings()
            return {"item_recall@10_held_out": round(item_recall(adapter, cat_t, emb.items, held_items), 4),
                    "item_recall@10_train_items": round(item_recall(adapter, cat_t, emb.items, train_items), 4)}
    if sc.adapter_objective == "align":
        if sc.source != "negatives":  # hardneg and its base/shuffled/random controls: the teacher's targets
            targets = teacher_targets(arrays, data)
        else:
            targets = grounded_targets(*grounded_lists(arrays, data), data.n_items)
        covered = find_pairs(targets.keys, index.keys // data.n_items, index.keys % data.n_items, data.n_items)
        describe["pairs_with_align_target"] = int((covered >= 0).sum())
        if describe["pairs_with_align_target"] == 0:
            raise SemanticInputError(f"none of the {len(index.keys)} pairs in {arrays.where} has an alignment "
                                     "target (teacher pair or grounded item): were they made from another run? "
                                     "Re-run the stages, or set train.sampler.semantic.adapter_objective: joint")
        losses.append(alignment_term(provider, targets, sc.align_weight))
    return SemanticParts(factory, [adapter], losses, [schedule], describe, after_fit)


def _teacher_control(tcfg: TrainConfig, arrays: SemanticArrays, data: CFData, device: torch.device
                     ) -> SemanticParts:
    """`source: teacher`: the teacher's targets mixed in directly (their live CF embeddings), no LM, no adapter."""
    from .neighbours import PairCandidates
    from .samplers import MixingSampler

    sc = tcfg.sampler.semantic
    u, i, j = arrays.targets
    _check_ids(u, j, data, arrays.targets_where)
    targets = PairCandidates.from_long(u, i, j, data.n_items)
    provider = TeacherTargetProvider(targets, max(targets.width, 1), device)

    def factory(base: Sampler) -> Sampler:
        return MixingSampler(base, provider, sc.alpha)

    losses = [contrastive_term(provider, sc.cl_weight, sc.cl_temperature)] if sc.cl_weight > 0 else []
    return SemanticParts(factory, [], losses, [], {"source": "teacher", "pairs_with_targets": targets.n_pairs})
