import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hnl_ray.data.errors import DataError
from hnl_ray.data.filters import FilterLog, dedup_mask, k_core
from hnl_ray.data.splits import (TEST, TRAIN, VALID, carve_valid, leave_one_out, random_split, ratio_counts,
                                 temporal_split)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a loaded CI machine
@given(st.lists(st.tuples(st.integers(0, 15), st.integers(0, 15)), min_size=1, max_size=300),
       st.integers(1, 5), st.integers(1, 5))
def test_k_core_reaches_a_fixed_point(pairs, uk, ik):
    u = np.array([p[0] for p in pairs])
    i = np.array([p[1] for p in pairs])
    mask, rounds = k_core(u, i, uk, ik)
    kept_u, kept_i = u[mask], i[mask]
    if mask.any():
        assert np.bincount(kept_u)[np.unique(kept_u)].min() >= uk
        assert np.bincount(kept_i)[np.unique(kept_i)].min() >= ik
    again, _ = k_core(kept_u, kept_i, uk, ik)
    assert again.all()  # a fixed point: another pass removes nothing
    assert rounds >= (1 if uk > 1 or ik > 1 else 0)


def test_k_core_needs_several_rounds():
    # item 2 has 2 interactions, but removing user 2 (1 interaction) then leaves item 2 with 1 -> cascade
    u = np.array([0, 0, 1, 1, 2, 3, 3])
    i = np.array([0, 1, 0, 1, 2, 2, 0])
    mask, rounds = k_core(u, i, 2, 2)
    assert mask.tolist() == [True, True, True, True, False, False, False]
    assert rounds == 4  # three rounds remove something, the fourth confirms the fixed point


def test_dedup_keeps_first_or_last():
    u = np.array([0, 0, 0, 1])
    i = np.array([5, 5, 6, 5])
    ts = np.array([30, 10, 20, 5])
    assert dedup_mask(u, i, ts, "first").tolist() == [False, True, True, True]
    assert dedup_mask(u, i, ts, "last").tolist() == [True, False, True, True]


def test_filter_that_empties_data_is_named():
    log = FilterLog()
    with pytest.raises(DataError, match=r"filter rating \(filters.min_rating: >= 6\) removed every interaction "
                                        r"\(before: 10, after: 0\)"):
        log.record("rating", "filters.min_rating", 10, 0, ">= 6")


@pytest.mark.parametrize("n, expected", [
    (1, (1, 0, 0)), (2, (1, 0, 1)), (3, (1, 1, 1)), (5, (3, 1, 1)), (10, (8, 1, 1)), (25, (21, 2, 2)),
])
def test_ratio_counts_follow_recbole(n, expected):
    tr, v, t = ratio_counts(np.array([n]), (0.8, 0.1, 0.1))
    assert (int(tr[0]), int(v[0]), int(t[0])) == expected


def test_random_split_is_per_user_and_seeded():
    u = np.repeat(np.arange(50), 10)
    a = random_split(u, (0.8, 0.1, 0.1), np.random.default_rng(1))
    b = random_split(u, (0.8, 0.1, 0.1), np.random.default_rng(1))
    assert (a == b).all()
    for user in range(50):
        lab = a[u == user]
        assert (lab == TRAIN).sum() == 8 and (lab == VALID).sum() == 1 and (lab == TEST).sum() == 1
    c = random_split(u, (0.8, 0.1, 0.1), np.random.default_rng(2))
    assert (a != c).any()


def test_temporal_split_puts_latest_last():
    u = np.array([0] * 10 + [1] * 5)
    ts = np.concatenate([np.arange(10)[::-1], np.arange(5)])
    lab = temporal_split(u, ts, (0.8, 0.1, 0.1))
    assert lab[0] == TEST and lab[1] == VALID  # user 0's timestamps run backwards
    assert lab[10:].tolist() == [TRAIN, TRAIN, TRAIN, VALID, TEST]


def test_leave_one_out():
    u = np.array([0, 0, 0, 0, 1, 1, 2])
    ts = np.array([4, 1, 3, 2, 1, 2, 1])
    lab = leave_one_out(u, ts)
    assert lab.tolist() == [TEST, TRAIN, VALID, TRAIN, TRAIN, TEST, TRAIN]


def test_carve_valid_never_makes_items_cold():
    rng = np.random.default_rng(0)
    u = np.repeat(np.arange(30), 10)
    i = rng.integers(0, 40, len(u))
    i[:1] = 99  # an item with a single train interaction
    label = np.zeros(len(u), dtype=np.int8)
    out, back = carve_valid(u, i, label, 0.5, rng)
    assert (out == VALID).any()
    in_train = set(i[out == TRAIN].tolist())
    assert set(i[out == VALID].tolist()) <= in_train
    assert back >= 0
