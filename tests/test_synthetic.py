"""The demo generator plants the structure it documents."""

import numpy as np

from hnl_ray.config.data import SyntheticSource
from hnl_ray.data.stats import gini
from hnl_ray.data.synthetic import THEMES, generate


def test_deterministic_by_seed():
    a = generate(SyntheticSource(n_users=50, n_items=40), seed=3)
    b = generate(SyntheticSource(n_users=50, n_items=40), seed=3)
    c = generate(SyntheticSource(n_users=50, n_items=40), seed=4)
    assert a.interactions.equals(b.interactions) and a.items.equals(b.items)
    assert not a.interactions.equals(c.interactions)


def test_lookalikes_differ_only_in_theme():
    src = SyntheticSource(n_users=50, n_items=100, lookalike_share=0.5)
    items = generate(src, seed=1).items.to_pylist()
    n_twins = 25
    twins = items[-n_twins:]
    titles = {r["title"] for r in items[:-n_twins]}
    for t in twins:
        words = t["title"].split()
        # a base item with the same brand/variant/category but another theme word exists
        matches = [x for x in items[:-n_twins] if x["title"].split()[-2:] == words[-2:]
                   and x["brand"] == t["brand"] and x["categories"][1] == t["categories"][1]]
        assert matches, t["title"]
        assert t["title"] not in titles


def test_users_follow_a_favourite_theme_and_popularity_is_skewed():
    src = SyntheticSource(n_users=300, n_items=200, noise=0.0)
    data = generate(src, seed=0)
    inter = data.interactions.to_pylist()
    theme_of = {r["item_id"]: r["categories"][2].lower() for r in data.items.to_pylist()}
    per_user: dict = {}
    for r in inter:
        per_user.setdefault(r["user_id"], []).append(theme_of[r["item_id"]])
    top_share = np.mean([max(np.unique(v, return_counts=True)[1]) / len(v) for v in per_user.values()])
    assert top_share > 2.5 / len(THEMES)  # far above the 1/8 a theme-blind user would show
    counts = np.unique([r["item_id"] for r in inter], return_counts=True)[1]
    assert gini(counts) > 0.3  # a head and a long tail
    assert counts.max() > 5 * np.median(counts)


def test_draws_follow_sampling_without_replacement():
    """Each row's picks are a draw without replacement in proportion to its weights: with weights 0.7/0.2/0.1
    and two picks, {0, 1} comes out with probability 0.7 * 0.2/0.3 + 0.2 * 0.7/0.8 = 0.6417."""
    from hnl_ray.data.synthetic import _draw_distinct

    rng = np.random.default_rng(0)
    w = np.array([0.7, 0.2, 0.1])
    cum = np.cumsum(w)
    n = 20000
    rows, items = _draw_distinct(rng, lambda r: np.searchsorted(cum, rng.random(len(r)), side="right"),
                                 np.full(n, 2), 3, exclude=None, logits=lambda r: np.log(np.tile(w, (len(r), 1))))
    assert np.bincount(rows, minlength=n).tolist() == [2] * n
    picked = np.zeros((n, 3), dtype=bool)
    picked[rows, items] = True
    assert abs((picked[:, 0] & picked[:, 1]).mean() - 0.6417) < 0.015
    # excluded items are never picked; weights on too few items are completed exactly (here: by the Gumbel path)
    rows, items = _draw_distinct(rng, lambda r: np.zeros(len(r), dtype=int), np.full(50, 2), 3,
                                 exclude=(np.arange(50), np.full(50, 2)),
                                 logits=lambda r: np.log(np.tile([1.0, 1e-30, 1e-30], (len(r), 1))))
    assert sorted(set(items.tolist())) == [0, 1] and np.bincount(rows).tolist() == [2] * 50


def test_memory_grows_with_interactions_not_users_times_items():
    """2000 users x 60k items: a dense users x items float matrix alone would be 0.96 GB."""
    import tracemalloc

    tracemalloc.start()
    data = generate(SyntheticSource(n_users=2000, n_items=60_000, mean_interactions=10, keep_reviews=False), 1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert data.interactions.num_rows > 15_000 and data.items.num_rows == 60_000
    assert peak < 300 * 2**20, peak


def test_latent_is_the_stream_generate_drew_from():
    """`latent` replays the generator's hidden facts: the items' written facets and the users' favourite themes
    agree with the data `generate` wrote from the same seed."""
    from hnl_ray.data.synthetic import latent

    src = SyntheticSource(n_users=200, n_items=120, noise=0.0)
    data, lat = generate(src, seed=5), latent(src, seed=5)
    for r in data.items.to_pylist():
        i = int(r["item_id"][1:])
        assert r["categories"][2].lower() == THEMES[lat.theme[i]][0]
        assert (lat.twin_of[i] >= 0) == (i >= 120 - 30)
    themes = {r["item_id"]: r["categories"][2].lower() for r in data.items.to_pylist()}
    hits = [themes[r["item_id"]] == THEMES[lat.fav[int(r["user_id"][1:])]][0]
            for r in data.interactions.to_pylist()]
    assert np.mean(hits) > 0.25  # over twice the 1/8 a wrong `fav` would give
