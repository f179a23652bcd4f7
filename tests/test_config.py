from pathlib import Path

import pytest

from hnl_ray.config import Config, ConfigError, load_config, parse_set
from hnl_ray.config.reference import END, START, reference

REPO = Path(__file__).parent.parent
BENCH = REPO / "configs" / "bench"
# configs/bench/*.yaml are benchmark tables (their own schema); configs/bench/pipeline/ holds run configs.
CONFIGS = sorted(p for p in (REPO / "configs").glob("**/*.yaml") if p.parent != BENCH)
BENCH_TABLES = sorted(BENCH.glob("*.yaml"))


def test_defaults_are_the_demo():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.data.format == "synthetic"
    assert cfg.resolved_run_dir() == "runs/demo"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_shipped_configs_validate(path):
    load_config(path)


@pytest.mark.parametrize("path", BENCH_TABLES, ids=lambda p: p.name)
def test_shipped_bench_tables_validate(path):
    from benchmarks.verdict.config import load_bench

    load_bench(path)


def test_paper_configs_carry_the_papers_preprocessing():
    toys = load_config(REPO / "configs/toys.yaml")
    assert toys.filters.min_rating == 4 and str(toys.filters.date_from) == "2015-01-01"
    assert toys.filters.k_core.user == 10 and toys.filters.k_core.item == 10
    cds = load_config(REPO / "configs/cds.yaml")  # extends toys.yaml
    assert (str(cds.filters.date_from), str(cds.filters.date_to)) == ("2014-01-01", "2016-01-01")
    assert cds.filters.min_rating == 4 and cds.filters.k_core.user == 10
    e23 = load_config(REPO / "configs/electronics23.yaml")
    assert e23.data.version == "2023" and e23.filters.min_rating == 3
    assert str(e23.filters.date_from) == "2010-01-01"
    yelp = load_config(REPO / "configs/yelp.yaml")
    assert yelp.data.format == "yelp" and str(yelp.filters.date_from) == "2015-01-01"


def test_layering_defaults_file_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: x\nseed: 1\nfilters:\n  k_core: {user: 3}\n")
    cfg = load_config(f, ["seed=7", "filters.k_core.item=4"], run_dir="/tmp/elsewhere")
    assert cfg.seed == 7  # --set beats the file
    assert cfg.filters.k_core.user == 3 and cfg.filters.k_core.item == 4  # deep merge
    assert cfg.filters.dedup == "first"  # default
    assert cfg.resolved_run_dir() == "/tmp/elsewhere"


def test_extends_and_format_switch(tmp_path):
    (tmp_path / "base.yaml").write_text("data: {format: synthetic, n_users: 50}\nseed: 3\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ndata: {format: p5, path: /x}\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.seed == 3 and cfg.data.format == "p5"  # the synthetic keys did not leak into the p5 block


@pytest.mark.parametrize("sets, expected", [
    (["filters.min_ratin=4"], "filters.min_ratin: unknown key; did you mean 'min_rating'?"),
    (["split.method=sideways"], "split.method: Input should be 'random', 'temporal', 'loo' or 'given'"),
    (["filters.k_core.user=-1"], "filters.k_core.user: Input should be greater than or equal to 0"),
    (["split.ratios=[0.5,0.5,0.5]"], "split.ratios: ratios must be non-negative"),
    (["data.format=nope"], "data.format: Input tag 'nope'"),
    (["data.format=amazon"], "data.reviews: Field required"),
    (["data.format=amazon", "data.reviews=r", "data.bogus=1"], "data.bogus: unknown key"),
    (["ray.num_cpus=many"], "ray.num_cpus: Input should be a valid integer"),
])
def test_bad_values_name_the_key(sets, expected):
    with pytest.raises(ConfigError) as err:
        load_config(sets=sets)
    assert expected in str(err.value)


def test_unknown_key_lists_allowed_keys(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("filters:\n  kcore: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    msg = str(err.value)
    assert str(f) in msg and "filters.kcore" in msg and "k_core" in msg and "min_rating" in msg


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_parse_set():
    assert parse_set("a.b=3") == (["a", "b"], 3)
    assert parse_set("a=[1, 2]") == (["a"], [1, 2])
    assert parse_set("a=null") == (["a"], None)
    with pytest.raises(ConfigError):
        parse_set("novalue")


def test_config_reference_is_current():
    text = (REPO / "docs" / "config.md").read_text()
    block = text.split(START, 1)[1].split(END, 1)[0]
    assert block.strip() == reference().strip(), \
        "docs/config.md is stale: run `make docs` (python -m hnl_ray.config.reference --write docs/config.md)"
