"""Sweep bookkeeping without running Tune: ASHA's horizon, restore only of the same sweep, optuna as an extra."""

import os

import pytest

from hnl_ray.config import load_config
from hnl_ray.artifacts import Artifacts
from hnl_ray.tune import SweepSpaceError, _optuna, asha_max_t, base_train, same_sweep, sweep_definition

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(REPO, "configs/tune/demo-alpha.yaml")


def test_asha_horizon_is_the_base_runs_epochs():
    cfg = load_config(SWEEP, ["train.optim.epochs=40", "train.runs={short: {optim: {epochs: 7}}}",
                              "tune.base_run=short"])
    assert asha_max_t(cfg, base_train(cfg)) == 7
    cfg = load_config(SWEEP, ["train.optim.epochs=40", "tune.space={optim.epochs: {grid: [5, 12]}}"])
    assert asha_max_t(cfg, base_train(cfg)) == 12


def test_a_sweep_is_restored_only_when_unchanged(tmp_path):
    art = Artifacts(str(tmp_path))
    cfg = load_config(SWEEP)
    definition = sweep_definition(cfg, base_train(cfg))
    with pytest.raises(SweepSpaceError, match="no sweep.json"):
        same_sweep(art, "x", definition)
    art.write_tune_file("x", "sweep.json", definition)
    same_sweep(art, "x", definition)  # unchanged: restores
    edited = load_config(SWEEP, ["tune.space={sampler.semantic.alpha: {grid: [0.3]}}"])
    with pytest.raises(SweepSpaceError, match=r"changed: space\). Give the edited sweep a new tune.name"):
        same_sweep(art, "x", sweep_definition(edited, base_train(edited)))


def test_optuna_is_an_extra():
    try:
        import optuna  # noqa: F401
    except ImportError:
        with pytest.raises(SweepSpaceError, match=r"pip install 'hnl-ray\[tune\]'"):
            _optuna("valid_ndcg@10", 0)
    else:
        assert _optuna("valid_ndcg@10", 0) is not None
