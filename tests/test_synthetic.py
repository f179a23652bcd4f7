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
