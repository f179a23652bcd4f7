import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cfhelpers import random_data
from hnl_ray.cf.data import PositiveSet
from hnl_ray.cf.models import build_model
from hnl_ray.cf.samplers import MixingSampler, build_sampler, draw_excluding, hardest, mix_hops
from hnl_ray.config.cf import ModelConfig, SamplerConfig

DATA = random_data(n_users=30, n_items=25, per_user=12)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["uniform", "popularity", "dns", "mixgcf"]), st.integers(1, 4), st.integers(0, 10_000))
def test_samplers_never_return_a_training_positive(name, n_neg, seed):
    rng = np.random.default_rng(seed)
    sampler = build_sampler(SamplerConfig(name=name, n_negatives=n_neg, candidates=4), DATA, rng)
    model = build_model(ModelConfig(name="lightgcn", dim=8, layers=2), DATA.n_users, DATA.n_items, *DATA.train)
    users, pos = DATA.train
    emb = model(layers=True)
    negs = sampler.sample(users, pos, emb, model)
    if name == "mixgcf":
        assert negs.items is None and negs.emb.shape == (len(users), n_neg, 8)
        return
    items = negs.items.numpy()
    assert items.shape == (len(users), n_neg)
    assert not DATA.positives.contains(np.repeat(users, n_neg), items.ravel()).any()
    assert items.min() >= 0 and items.max() < DATA.n_items


def test_positive_set_bits_and_keys_agree():
    u, i = DATA.train
    a = PositiveSet(u, i, DATA.n_users, DATA.n_items)
    b = PositiveSet(u, i, DATA.n_users, DATA.n_items, max_bytes=0)  # forces the sorted-keys path
    qu = np.repeat(np.arange(DATA.n_users), DATA.n_items)
    qi = np.tile(np.arange(DATA.n_items), DATA.n_users)
    assert (a.contains(qu, qi) == b.contains(qu, qi)).all()
    assert a.contains(u, i).all()


def test_draw_excluding_handles_nearly_full_users():
    # user 0 has every item but one: the exact-complement fallback must find it
    n_items = 50
    u = np.zeros(n_items - 1, dtype=np.int64)
    i = np.arange(1, n_items)
    ps = PositiveSet(u, i, 1, n_items)
    out = draw_excluding(np.zeros(20, dtype=np.int64), 3, ps, n_items, np.random.default_rng(0), max_rounds=1)
    assert (out == 0).all()


def test_dns_picks_the_highest_scored_candidate():
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cand = torch.tensor([[[[0.1, 0.0], [0.9, 0.0], [0.5, 5.0]]], [[[0.0, -1.0], [0.0, 0.2], [3.0, 0.1]]]])
    assert hardest(user, cand).tolist() == [[1], [1]]


def test_dns_sampler_returns_argmax_of_model_scores():
    sampler = build_sampler(SamplerConfig(name="dns", n_negatives=2, candidates=6), DATA, np.random.default_rng(0))
    drawn = {}

    def spy(users, n):  # record the candidates the sampler scores
        drawn["c"] = type(sampler)._uniform(sampler, users, n)
        return drawn["c"]

    sampler._uniform = spy
    model = build_model(ModelConfig(name="mf", dim=4), DATA.n_users, DATA.n_items, *DATA.train)
    emb = model(layers=True)
    users = np.arange(DATA.n_users)
    items = sampler.sample(users, users * 0, emb, model).items.numpy()
    cand = drawn["c"].reshape(len(users), 2, 6)
    scores = (emb.users @ emb.items.T).detach().numpy()
    for u in users:
        for slot in range(2):
            c = cand[u, slot]
            assert items[u, slot] == c[np.argmax(scores[u, c])]


def test_mixgcf_mixing_is_convex_and_picks_per_layer():
    b, n, m, L, d = 2, 1, 3, 2, 4
    g = torch.Generator().manual_seed(0)
    user_l = torch.randn(b, L, d, generator=g)
    pos_l = torch.randn(b, L, d, generator=g)
    cand_l = torch.randn(b, n, m, L, d, generator=g)
    alpha = torch.rand(b, n, 1, L, 1, generator=g)
    out = mix_hops(user_l, pos_l, cand_l, alpha)
    assert out.shape == (b, n, L, d)
    mixed = alpha * pos_l[:, None, None] + (1 - alpha) * cand_l
    for bi in range(b):
        for layer in range(L):
            scores = (user_l[bi, layer] * mixed[bi, 0, :, layer]).sum(-1)
            best = int(scores.argmax())
            assert torch.allclose(out[bi, 0, layer], mixed[bi, 0, best, layer])
            # recover alpha from the chosen candidate: out = a*p + (1-a)*c  ->  a = (out-c)/(p-c)
            c = cand_l[bi, 0, best, layer]
            a = ((out[bi, 0, layer] - c) / (pos_l[bi, layer] - c)).mean()
            assert 0 <= float(a) <= 1 and abs(float(a) - float(alpha[bi, 0, 0, layer, 0])) < 1e-4


def test_mixgcf_sampler_shapes_and_gradients_flow():
    rng = np.random.default_rng(1)
    sampler = build_sampler(SamplerConfig(name="mixgcf", n_negatives=2, candidates=5), DATA, rng)
    model = build_model(ModelConfig(name="lightgcn", dim=6, layers=3), DATA.n_users, DATA.n_items, *DATA.train)
    emb = model(layers=True)
    users, pos = DATA.train[0][:7], DATA.train[1][:7]
    negs = sampler.sample(users, pos, emb, model)
    assert negs.emb.shape == (7, 2, 6) and negs.ego.shape == (7, 2, 6)
    negs.emb.sum().backward()
    assert model.item_emb.weight.grad.abs().sum() > 0


def test_impossible_negative_count_fails_with_key():
    with pytest.raises(ValueError, match=r"train.sampler.n_negatives: 20 asked.*only 13 non-interacted"):
        build_sampler(SamplerConfig(n_negatives=20), DATA, np.random.default_rng(0))


def test_mixing_sampler_mixes_only_covered_pairs():
    base = build_sampler(SamplerConfig(name="uniform"), DATA, np.random.default_rng(0))
    model = build_model(ModelConfig(name="mf", dim=3), DATA.n_users, DATA.n_items, *DATA.train)
    given_vec = torch.full((4, 3), 7.0)
    covered = torch.tensor([True, False, True, False])
    mix = MixingSampler(base, lambda u, p: (given_vec, covered), alpha=1.0)
    emb = model(layers=True)
    negs = mix.sample(np.arange(4), np.arange(4), emb, model)
    assert torch.allclose(negs.emb[0, 0], given_vec[0]) and torch.allclose(negs.emb[2, 0], given_vec[2])
    assert torch.allclose(negs.emb[1, 0], emb.items[negs.items[1, 0]])
    mix.set_alpha(0.25)
    negs = mix.sample(np.arange(4), np.arange(4), emb, model)
    expect = 0.25 * given_vec[0] + 0.75 * emb.items[negs.items[0, 0]]
    assert torch.allclose(negs.emb[0, 0], expect)


def test_mixgcf_sampler_matches_the_reference_mixing():
    """The sampler's layer-wise scoring gives the same negative as mix_hops on the same candidates and alpha."""
    import hnl_ray.cf.samplers as S

    rng_seed = 5
    sampler = build_sampler(SamplerConfig(name="mixgcf", n_negatives=2, candidates=6), DATA,
                            np.random.default_rng(rng_seed))
    model = build_model(ModelConfig(name="lightgcn", dim=5, layers=2), DATA.n_users, DATA.n_items, *DATA.train)
    emb = model(layers=True)
    users, pos = DATA.train[0][:9], DATA.train[1][:9]
    negs = sampler.sample(users, pos, emb, model)
    # replay the same random draws
    replay = build_sampler(SamplerConfig(name="mixgcf", n_negatives=2, candidates=6), DATA,
                           np.random.default_rng(rng_seed))
    cand = torch.from_numpy(replay._uniform(users, 12)).view(9, 2, 6)
    alpha = torch.rand(9, 2, 1, 3, 1, generator=S._torch_gen(replay.rng))
    u_l = torch.stack([t[torch.from_numpy(users)] for t in emb.user_layers], 1)
    p_l = torch.stack([t[torch.from_numpy(pos)] for t in emb.item_layers], 1)
    c_l = torch.stack([t[cand] for t in emb.item_layers], 3)
    expect = model.pool(mix_hops(u_l, p_l, c_l, alpha))
    assert torch.allclose(negs.emb, expect, atol=1e-6)
