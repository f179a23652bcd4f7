import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfhelpers import random_data
from hnl_ray.cf.data import PositiveSet
from hnl_ray.cf.models import build_model
from hnl_ray.cf.samplers import MixingSampler, build_sampler, draw_excluding, hardest, mix_hops
from hnl_ray.config.cf import ModelConfig, SamplerConfig

DATA = random_data(n_users=30, n_items=25, per_user=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a loaded CI machine
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


# ------------------------------------------------------------------------------------------------ AHNS, hnlmrec


def test_ahns_picks_the_candidate_nearest_its_target_hardness():
    from hnl_ray.cf.samplers import ahns_pick, ahns_target

    # p = -2, alpha = 1, beta = 0.1: target = 0.1 / (s_pos + 1)
    s_pos = torch.tensor([1.0, 0.0, 3.0])  # targets 0.05, 0.1, 0.025
    s_cand = torch.tensor([[0.9, 0.06, -0.3, 0.2],   # nearest 0.05: 0.06 (index 1), not the hardest (0.9)
                           [0.5, 0.3, 0.11, 0.0],    # nearest 0.1: 0.11 (index 2)
                           [0.02, 0.5, 1.0, -0.1]])  # nearest 0.025: 0.02 (index 0)
    assert torch.allclose(ahns_target(s_pos, 1.0, 0.1, -2.0), torch.tensor([0.05, 0.1, 0.025]))
    assert ahns_pick(s_pos, s_cand, 1.0, 0.1, -2.0).tolist() == [1, 2, 0]
    eligible = torch.ones(3, 4, dtype=torch.bool)
    eligible[0, 1] = False  # the nearest is ineligible: the next nearest (0.2, index 3)
    assert ahns_pick(s_pos, s_cand, 1.0, 0.1, -2.0, eligible).tolist() == [3, 2, 0]


def test_ahns_sampler_returns_the_pick_among_its_candidates():
    rng = np.random.default_rng(0)
    sampler = build_sampler(SamplerConfig(name="ahns", candidates=6), DATA, rng)
    model = build_model(ModelConfig(name="mf", dim=4), DATA.n_users, DATA.n_items, *DATA.train)
    users, pos = DATA.train
    items = sampler.sample(users, pos, model(), model).items.numpy()
    assert items.shape == (len(users), 1) and not DATA.positives.contains(users, items[:, 0]).any()


def _hnlmrec(n_neg=1, **over):
    from hnl_ray.cf.neighbours import PairCandidates, pair_neighbours

    cfg = SamplerConfig.model_validate({"name": "hnlmrec", "n_negatives": n_neg,
                                        "hnlmrec": {"neighbours": 4, "uniform": 3, **over}})
    sampler = build_sampler(cfg, DATA, np.random.default_rng(1))
    text = torch.nn.functional.normalize(torch.randn(DATA.n_items, 8, generator=torch.Generator().manual_seed(3)),
                                         dim=1)
    u, i = DATA.train
    nb = pair_neighbours(text[i], u, text, DATA.train_csr, 4)
    return sampler.attach(PairCandidates.from_fixed(u, i, nb, DATA.n_items), text), nb, text


def test_pair_neighbours_are_the_nearest_non_positives():
    from hnl_ray.cf.neighbours import pair_neighbours

    _, nb, text = _hnlmrec()
    u, i = DATA.train
    assert not DATA.positives.contains(np.repeat(u, 4), nb.ravel()).any()
    sims = (text[i] @ text.T).numpy()
    for r in range(0, len(u), 31):
        allowed = [x for x in range(DATA.n_items) if not DATA.positives.contains(np.array([u[r]]), np.array([x]))[0]]
        assert nb[r].tolist() == sorted(allowed, key=lambda x: -sims[r, x])[:4]
    with pytest.raises(ValueError, match="catalogue has only"):
        pair_neighbours(text[i], u, text, DATA.train_csr, DATA.n_items + 1)


def test_hnlmrec_sampler_draws_from_its_candidates_and_its_negatives_get_gradients():
    sampler, nb, _ = _hnlmrec(n_neg=2, guard={"enabled": False})
    model = build_model(ModelConfig(name="lightgcn", dim=8, layers=2), DATA.n_users, DATA.n_items, *DATA.train)
    users, pos = DATA.train
    seen_cands = []
    real = sampler.candidates
    sampler.candidates = lambda u, p: seen_cands.append(real(u, p)) or seen_cands[-1]
    emb = model()
    items = sampler.sample(users, pos, emb, model).items
    cand = seen_cands[0]
    assert items.shape == (len(users), 2)
    assert all(set(items[r].tolist()) <= set(cand[r].tolist()) for r in range(len(users)))
    assert (items[:, 0] != items[:, 1]).float().mean() > 0.95  # distinct items while the pool has them
    assert not DATA.positives.contains(np.repeat(users, 2), items.reshape(-1).numpy()).any()
    # DNS rule: the first pick is the highest-scored candidate
    with torch.no_grad():
        s = torch.einsum("bd,bcd->bc", emb.users[torch.from_numpy(users)], emb.items[torch.from_numpy(cand)])
    assert (torch.from_numpy(cand).gather(1, s.argmax(1, keepdim=True))[:, 0] == items[:, 0]).all()
    assert sampler.stats()["neighbour_pick_share"] > 0
    # real items: the loss on them reaches those items' embeddings
    neg = emb.items[items]
    loss = torch.nn.functional.softplus(torch.einsum("bd,bnd->bn", emb.users[torch.from_numpy(users)], neg)).sum()
    loss.backward()
    grad = model.item_emb.weight.grad
    assert grad is not None and grad[sorted(set(items.reshape(-1).tolist()))].abs().sum(1).gt(0).all()


def test_hnlmrec_guard_rejects_live_false_negatives_and_near_copies_of_positives():
    users, pos = DATA.train
    u0 = torch.from_numpy(users == 0)
    p0 = DATA.train_csr[1][DATA.train_csr[0][0]: DATA.train_csr[0][1]]
    model = build_model(ModelConfig(name="mf", dim=4), DATA.n_users, DATA.n_items, *DATA.train)
    star = int(np.setdiff1d(np.arange(DATA.n_items), p0)[0])
    with torch.no_grad():
        model.item_emb.weight[:] = 0.0
        model.user_emb.weight[:] = 1.0
        model.item_emb.weight[torch.from_numpy(p0)] = 1.0  # user 0's positives score 4
        model.item_emb.weight[star] = 5.0  # scores above them: a likely false negative for user 0
    sampler, _, text = _hnlmrec(uniform=DATA.n_items, guard={"text_threshold": None, "scope": "all"})
    items = sampler.sample(users, pos, model(), model).items
    assert not (items[u0] == star).any()
    st_ = sampler.stats()
    assert st_["guard_rejected_score_share"] > 0 and st_["guard_rejected_text_share"] == 0
    off, _, _ = _hnlmrec(uniform=DATA.n_items, guard={"enabled": False})
    assert (off.sample(users, pos, model(), model).items[u0] == star).float().mean() > 0.5  # unguarded: DNS takes it
    # scope `neighbours` (the default) leaves the uniform draws to DNS: star is again taken from them
    nb_only, _, _ = _hnlmrec(uniform=DATA.n_items, guard={"text_threshold": None})
    assert (nb_only.sample(users, pos, model(), model).items[u0] == star).float().mean() > 0.5
    assert nb_only.stats()["guard_rejected_score_share"] < st_["guard_rejected_score_share"]
    # text rule: an item whose text copies one of user 0's positives is never drawn for user 0
    sampler, _, text = _hnlmrec(uniform=DATA.n_items, guard={"rho": 1e9, "text_threshold": 0.99,
                                                                      "scope": "all"})
    sampler.text[star] = sampler.text[p0[0]]
    items = sampler.sample(users, pos, model(), model).items
    assert not (items[u0] == star).any()
    assert sampler.stats()["guard_rejected_text_share"] > 0


def test_candidate_counts_larger_than_the_catalogue_are_refused():
    for cfg, key in ((SamplerConfig(name="dns", candidates=DATA.n_items + 1), "train.sampler.candidates"),
                     (SamplerConfig.model_validate({"name": "hnlmrec", "hnlmrec": {"neighbours": DATA.n_items + 1}}),
                      "train.sampler.hnlmrec.neighbours"),
                     (SamplerConfig.model_validate({"name": "hnlmrec", "hnlmrec": {"uniform": DATA.n_items + 1}}),
                      "train.sampler.hnlmrec.uniform")):
        with pytest.raises(ValueError, match=key):
            build_sampler(cfg, DATA, np.random.default_rng(0))
