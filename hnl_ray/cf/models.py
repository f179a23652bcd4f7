"""CF models behind one interface: `forward()` returns final user and item embeddings and, for graph models,
the per-layer embeddings (MixGCF mixes them); `ego()` gives the layer-0 embeddings that L2 regularises."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config.cf import ModelConfig
from .graph import mean_propagate, normalized_adjacency, propagate, to_torch_csr


@dataclass
class Embeddings:
    users: torch.Tensor  # (n_users, d) final
    items: torch.Tensor  # (n_items, d) final
    user_layers: list[torch.Tensor] | None = None  # per layer, layer 0 = ego (when asked for)
    item_layers: list[torch.Tensor] | None = None
    table: torch.Tensor | None = None  # (n_users + n_items, d): users then items, when the model has one

    def gather(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows for users and items in as few index operations as possible (each one's backward fills a
        table-sized gradient)."""
        if self.table is None:
            return self.users[users], self.items[items]
        rows = self.table[torch.cat([users, items + self.users.shape[0]])]
        return rows[: len(users)], rows[len(users):]



class CFModel(nn.Module):
    final_is_ego = False  # True when forward() returns the ego embeddings themselves (MF)

    def __init__(self, n_users: int, n_items: int, cfg: ModelConfig):
        super().__init__()
        self.n_users, self.n_items, self.cfg = n_users, n_items, cfg
        self.user_emb = nn.Embedding(n_users, cfg.dim)
        self.item_emb = nn.Embedding(n_items, cfg.dim)
        for emb in (self.user_emb, self.item_emb):
            if cfg.init == "xavier":
                nn.init.xavier_uniform_(emb.weight)
            else:
                nn.init.normal_(emb.weight, std=cfg.init_std)

    def ego(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_emb.weight, self.item_emb.weight

    def pool(self, layers: torch.Tensor) -> torch.Tensor:
        """Final embedding from per-layer ones stacked on dim -2 (..., L+1, d); the same rule as forward()."""
        return layers.mean(-2)

    def forward(self, layers: bool = False) -> Embeddings:  # pragma: no cover - abstract
        """Final embeddings; with `layers`, also per-layer ones that carry gradients (MixGCF needs them)."""
        raise NotImplementedError


class MF(CFModel):
    """BPR-MF: the embeddings are the representation."""

    final_is_ego = True

    def forward(self, layers: bool = False) -> Embeddings:
        u, i = self.ego()
        return Embeddings(u, i, [u], [i])


class _GraphModel(CFModel):
    def __init__(self, n_users: int, n_items: int, cfg: ModelConfig, train_users, train_items,
                 self_loops: bool = False):
        super().__init__(n_users, n_items, cfg)
        adj = normalized_adjacency(train_users, train_items, n_users, n_items, self_loops=self_loops)
        self.register_buffer("adj", to_torch_csr(adj), persistent=False)


class LightGCN(_GraphModel):
    """He et al. 2020: E^{k+1} = A E^k, final = mean(E^0..E^K)."""

    def forward(self, layers: bool = False) -> Embeddings:
        x = torch.cat(self.ego(), 0)
        nu = self.n_users
        if not layers:
            final = mean_propagate(self.adj, x, self.cfg.layers, self.cfg.backward)
            return Embeddings(final[:nu], final[nu:], table=final)
        outs = [x]
        for _ in range(self.cfg.layers):
            x = propagate(self.adj, x, self.cfg.backward)
            outs.append(x)
        final = torch.stack(outs, 0).mean(0)
        return Embeddings(final[:nu], final[nu:], [t[:nu] for t in outs], [t[nu:] for t in outs], table=final)


class NGCF(_GraphModel):
    """Wang et al. 2019: E^{k+1} = LeakyReLU((A+I) E W1 + (A E * E) W2), messages dropped out, layers
    L2-normalised and concatenated."""

    def __init__(self, n_users, n_items, cfg, train_users, train_items):
        super().__init__(n_users, n_items, cfg, train_users, train_items)
        self.w1 = nn.ModuleList(nn.Linear(cfg.dim, cfg.dim) for _ in range(cfg.layers))
        self.w2 = nn.ModuleList(nn.Linear(cfg.dim, cfg.dim) for _ in range(cfg.layers))
        for lin in [*self.w1, *self.w2]:
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def pool(self, layers: torch.Tensor) -> torch.Tensor:
        return layers.flatten(-2)

    def forward(self, layers: bool = False) -> Embeddings:
        x = torch.cat(self.ego(), 0)
        outs = [x]
        for w1, w2 in zip(self.w1, self.w2):
            side = propagate(self.adj, x, self.cfg.backward)
            x = nn.functional.leaky_relu(w1(side + x) + w2(side * x), 0.2)
            x = self.drop(x)
            outs.append(nn.functional.normalize(x, dim=1))
        final = torch.cat(outs, 1)
        users = [t[: self.n_users] for t in outs]
        items = [t[self.n_users:] for t in outs]
        return Embeddings(final[: self.n_users], final[self.n_users:], users, items, table=final)


def output_dim(cfg: ModelConfig) -> int:
    """Size of the final embeddings (NGCF concatenates its layers)."""
    return cfg.dim * (cfg.layers + 1) if cfg.name == "ngcf" else cfg.dim


def build_model(cfg: ModelConfig, n_users: int, n_items: int, train_users, train_items) -> CFModel:
    if cfg.name == "mf":
        return MF(n_users, n_items, cfg)
    if cfg.name == "lightgcn":
        return LightGCN(n_users, n_items, cfg, train_users, train_items)
    return NGCF(n_users, n_items, cfg, train_users, train_items)
