"""The user-item graph: the normalised adjacency against its dense definition, and LightGCN's propagation backward
(the custom Horner-rule backward) against autograd through torch.sparse.mm and through a dense matmul."""

import numpy as np
import pytest
import torch

from hnl_ray.cf.graph import BACKWARDS, mean_propagate, normalized_adjacency, propagate, to_torch_csr
from hnl_ray.cf.models import LightGCN
from hnl_ray.config.cf import ModelConfig


def small_graph(n_users=7, n_items=9, seed=0):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users - 1, 30)  # the last user has no interaction (an isolated node)
    items = rng.integers(0, n_items, 30)
    users = np.r_[users, users[:3]]  # duplicate pairs count once
    items = np.r_[items, items[:3]]
    return users, items, n_users, n_items


def dense_adjacency(users, items, n_users, n_items, self_loops=False):
    n = n_users + n_items
    a = np.zeros((n, n))
    a[users, items + n_users] = 1
    a[items + n_users, users] = 1
    if self_loops:
        a += np.eye(n)
    deg = a.sum(1)
    inv = np.where(deg > 0, deg, 1) ** -0.5 * (deg > 0)
    return inv[:, None] * a * inv[None, :]


@pytest.mark.parametrize("self_loops", [False, True])
def test_normalized_adjacency_matches_dense_definition(self_loops):
    g = small_graph()
    adj = normalized_adjacency(*g, self_loops=self_loops)
    want = dense_adjacency(*g, self_loops=self_loops)
    np.testing.assert_allclose(adj.toarray(), want, rtol=1e-6, atol=1e-7)
    assert (adj != adj.T).nnz == 0  # symmetric: what the custom backward relies on
    isolated = g[2] - 1
    assert adj[isolated].nnz == (1 if self_loops else 0)  # no division by a zero degree
    # Each undirected edge once in each direction, whatever the duplicates.
    n_pairs = len(set(zip(g[0].tolist(), g[1].tolist())))
    assert adj.nnz == 2 * n_pairs + (g[2] + g[3] if self_loops else 0)


def _grads(fn, adj, x0, weight):
    x = x0.clone().requires_grad_(True)
    out = fn(adj, x)
    (out * weight).sum().backward()
    return out.detach(), x.grad


@pytest.mark.parametrize("backward", BACKWARDS)
@pytest.mark.parametrize("k", [0, 1, 3])
def test_mean_propagate_gradient_matches_sparse_mm_autograd(backward, k):
    g = small_graph()
    adj_np = normalized_adjacency(*g)
    adj = to_torch_csr(adj_np)
    dense = torch.from_numpy(adj_np.toarray()).double()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(adj.shape[0], 5, generator=gen)
    weight = torch.randn(adj.shape[0], 5, generator=gen)

    def reference(_, x):  # mean(x, Ax, ..., A^k x), autograd through a dense product in float64
        outs, h = [x], x
        for _ in range(k):
            h = dense @ h
            outs.append(h)
        return torch.stack(outs).mean(0)

    def sparse_autograd(a, x):
        outs, h = [x], x
        for _ in range(k):
            h = torch.sparse.mm(a, h)
            outs.append(h)
        return torch.stack(outs).mean(0)

    out, grad = _grads(lambda a, x: mean_propagate(a, x, k, backward=backward), adj, x0, weight)
    out_s, grad_s = _grads(sparse_autograd, adj, x0, weight)
    out_r, grad_r = _grads(reference, adj, x0.double(), weight.double())
    torch.testing.assert_close(out, out_s, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_s, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), grad_r, rtol=1e-5, atol=1e-6)
    if k > 0:  # the gradient is not the trivial identity/(k+1): the graph is really in it
        assert not torch.allclose(grad, weight / (k + 1))


@pytest.mark.parametrize("backward", BACKWARDS)
def test_propagate_gradient_is_a_times_g(backward):
    g = small_graph(seed=1)
    adj = to_torch_csr(normalized_adjacency(*g))
    x0 = torch.randn(adj.shape[0], 4)
    weight = torch.randn(adj.shape[0], 4)
    out, grad = _grads(lambda a, x: propagate(a, x, backward=backward), adj, x0, weight)
    torch.testing.assert_close(out, torch.sparse.mm(adj, x0))
    torch.testing.assert_close(grad, torch.sparse.mm(adj, weight), rtol=1e-5, atol=1e-6)


def test_gradcheck_custom_backward_in_float64():
    g = small_graph(n_users=4, n_items=5, seed=2)
    a = normalized_adjacency(*g)
    adj = torch.sparse_csr_tensor(torch.from_numpy(a.indptr.astype(np.int64)),
                                  torch.from_numpy(a.indices.astype(np.int64)),
                                  torch.from_numpy(a.data.astype(np.float64)), size=a.shape)
    x = torch.randn(a.shape[0], 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: mean_propagate(adj, t, 2, backward="custom"), (x,))


@pytest.mark.parametrize("backward", BACKWARDS)
def test_lightgcn_forward_with_and_without_layers_agree(backward):
    users, items, nu, ni = small_graph(seed=3)
    torch.manual_seed(0)
    cfg = ModelConfig.model_validate({"name": "lightgcn", "dim": 8, "layers": 2, "backward": backward})
    model = LightGCN(nu, ni, cfg, users, items)
    pooled = model(layers=False)
    full = model(layers=True)
    torch.testing.assert_close(pooled.table, full.table, rtol=1e-5, atol=1e-6)
    grads = []
    for emb in (pooled, full):
        model.zero_grad()
        (emb.users.sum() * 2 + emb.items.pow(2).sum()).backward()
        grads.append(model.user_emb.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)
