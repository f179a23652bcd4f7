"""The positive-control benchmark's oracle: its lists hold exactly what they claim (pure logic, no training)."""

import numpy as np
import pytest

from benchmarks.positive_control import oracle_lists
from hnl_ray.cf.data import PositiveSet
from hnl_ray.config.data import SyntheticSource
from hnl_ray.data.synthetic import latent


def _setup():
    lat = latent(SyntheticSource(n_users=60, n_items=300), seed=2)
    rng = np.random.default_rng(0)
    users = rng.integers(0, 60, 400)
    pos = rng.integers(0, 300, 400)
    train = PositiveSet(users, pos, 60, 300)
    return lat, users, pos, train


def test_lookalikes_are_close_but_wrong_for_the_user():
    lat, users, pos, train = _setup()
    lists = oracle_lists("lookalike", users, pos, lat, train, 8)
    assert (lists >= 0).sum() > 400  # most pairs get some
    twin_first = 0
    for u, i, row in zip(users, pos, lists):
        row = row[row >= 0]
        assert len(set(row.tolist())) == len(row) and i not in row
        assert (lat.cat[row] == lat.cat[i]).all() and (lat.age[row] == lat.age[i]).all()
        assert ((lat.theme[row] != lat.fav[u]) & (lat.theme[row] != lat.second[u])).all()
        assert not train.contains(np.full(len(row), u), row).any()
        twin = lat.twin_of[i] if lat.twin_of[i] >= 0 else next(iter(np.flatnonzero(lat.twin_of == i)), -1)
        if twin >= 0 and twin in row:
            assert row[0] == twin
            twin_first += 1
    assert twin_first > 0


def test_siblings_are_the_favourite_theme():
    lat, users, pos, train = _setup()
    lists = oracle_lists("sibling", users, pos, lat, train, 8)
    for u, i, row in zip(users, pos, lists):
        row = row[row >= 0]
        assert (lat.theme[row] == lat.fav[u]).all() and (lat.cat[row] == lat.cat[i]).all()


def test_items_missing_from_the_prepared_data_are_skipped_before_the_first_n_are_taken():
    lat, users, pos, train = _setup()
    allowed = np.random.default_rng(1).random(300) < 0.5
    for kind in ("lookalike", "random"):
        full = oracle_lists(kind, users, pos, lat, train, 4)
        some = oracle_lists(kind, users, pos, lat, train, 4, allowed=allowed)
        assert allowed[some[some >= 0]].all()
        if kind == "lookalike":  # the allowed ones of a longer list fill the slots
            longer = oracle_lists(kind, users, pos, lat, train, 300)
            for row_some, row_long in zip(some, longer):
                keep = [j for j in row_long if j >= 0 and allowed[j]][:4]
                assert row_some[: len(keep)].tolist() == keep
        else:
            assert ((some >= 0).sum(1) == 4).all() and (full >= 0).sum() == (some >= 0).sum()


def test_guard_flags_know_tastes_and_the_guarded_sampler_never_draws_them(ray_session, tmp_path):
    """The guard rows' flags: k unseen items per user; the generator's true tastes cover more of the held-out
    items than random flags; a guarded trainer's candidate draws avoid the flags and the training positives."""
    from benchmarks.positive_control import BENCH, flagged_items, guarded
    from benchmarks.verdict.config import load_bench, row_train
    from hnl_ray.artifacts import Artifacts
    from hnl_ray.config import load_config
    from hnl_ray.stages import run_stage
    from hnl_ray.stages.train import build_run

    bench, base = load_bench(BENCH)
    cfg = load_config(base / bench.config, [*bench.sets, "data.n_users=150", "data.n_items=120"],
                      run_dir=str(tmp_path))
    run_stage("prepare", cfg)
    art = Artifacts(str(tmp_path))
    data = art.cf_data()
    lat = latent(cfg.data, cfg.seed)
    k = 10
    oracle, info = flagged_items("oracle", k, art, data, lat, cfg)
    _, rand = flagged_items("random", k, art, data, lat, cfg)
    assert info["test_items_flagged"] > rand["test_items_flagged"] + 0.1
    u_tr, i_tr = data.train
    assert oracle.contains(u_tr, i_tr).all()
    everything = np.repeat(np.arange(data.n_users), data.n_items), np.tile(np.arange(data.n_items), data.n_users)
    per_user = np.bincount(everything[0][oracle.contains(*everything)], minlength=data.n_users)
    assert (per_user == np.bincount(u_tr, minlength=data.n_users) + k).all()  # distinct train items here
    # K near the catalogue: every user keeps an unseen item to draw; K >= the catalogue is refused
    crowded, _ = flagged_items("random", data.n_items - 1, art, data, lat, cfg)
    left = data.n_items - np.bincount(everything[0][crowded.contains(*everything)], minlength=data.n_users)
    assert (left == 1).all()
    with pytest.raises(SystemExit, match="0 < K <"):
        flagged_items("random", data.n_items, art, data, lat, cfg)
    trainer = guarded(build_run(row_train(bench, bench.rows["dns"]), art, data, art.cf_run("g"), "g", 1,
                                progress=False), oracle)
    users = np.repeat(np.arange(data.n_users), 20)
    drawn = trainer.sampler._uniform(users, 8)
    assert not oracle.contains(np.repeat(users, 8), drawn.ravel()).any()
    assert trainer.data.positives is data.positives  # evaluation still masks only the training positives
