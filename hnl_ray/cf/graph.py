"""The user-item graph: symmetric-normalised adjacency and a propagation op with a cheap backward.

`torch.sparse.mm` on a CSR matrix differentiates slowly on CPU (it also prepares a gradient for the sparse
operand). The adjacency is constant and symmetric, so d(A X)/dX applied to G is simply A G: one more spmm.
LightGCN's whole propagation, mean(X, AX, ..., A^K X), is one function whose backward is Horner's rule,
(G + A(G + A(... G))) / (K + 1): K products and no per-layer temporaries kept for autograd.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..arrays import unique
import scipy.sparse as sp
import torch


def normalized_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
                         self_loops: bool = False) -> sp.csr_matrix:
    """D^-1/2 A D^-1/2 over the (users + items) bipartite graph; duplicate pairs count once."""
    n = n_users + n_items
    keys = unique(users.astype(np.int64) * n_items + items.astype(np.int64))
    u, i = keys // n_items, keys % n_items + n_users
    rows = np.concatenate([u, i])
    cols = np.concatenate([i, u])
    a = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))
    if self_loops:
        a = a + sp.identity(n, dtype=np.float32, format="csr")
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = np.zeros_like(deg)
    nz = deg > 0
    inv[nz] = deg[nz] ** -0.5
    d = sp.diags(inv.astype(np.float32))
    return (d @ a @ d).tocsr().astype(np.float32)


def to_torch_csr(m: sp.csr_matrix, device: torch.device | str = "cpu") -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data.astype(np.float32)), size=m.shape, device=device, check_invariants=False)


class _SymmetricSpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.adj = adj
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, torch.sparse.mm(ctx.adj, grad.contiguous())  # A is symmetric: A^T G = A G


BACKWARDS = ("custom", "autograd")  # train.model.backward: the ops above, or plain autograd through torch.sparse.mm


def _check(backward: str) -> None:
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {BACKWARDS}, got {backward!r}")


def propagate(adj: torch.Tensor, x: torch.Tensor, backward: str = "custom") -> torch.Tensor:
    """A @ x for a constant symmetric sparse A, differentiable in x only."""
    _check(backward)
    if not x.requires_grad or backward == "autograd":
        return torch.sparse.mm(adj, x)
    return _SymmetricSpMM.apply(adj, x)


class _MeanPropagation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:  # type: ignore[override]
        ctx.adj, ctx.k = adj, k
        acc = x.clone()
        for _ in range(k):
            x = torch.sparse.mm(adj, x)
            acc += x
        return acc.div_(k + 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        grad = grad.contiguous()
        h = grad
        for _ in range(ctx.k):
            h = torch.sparse.mm(ctx.adj, h).add_(grad)
        return None, h.div_(ctx.k + 1), None


def mean_propagate(adj: torch.Tensor, x: torch.Tensor, k: int, backward: str = "custom") -> torch.Tensor:
    """mean(x, A x, ..., A^k x) for a constant symmetric sparse A, differentiable in x."""
    _check(backward)
    if backward == "custom":
        return _MeanPropagation.apply(adj, x, k)
    outs = [x]
    for _ in range(k):
        outs.append(torch.sparse.mm(adj, outs[-1]))
    return torch.stack(outs, 0).mean(0)
