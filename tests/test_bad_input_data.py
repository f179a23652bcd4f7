"""Bad data and bad configs: copies of the fixtures in tests/data/ corrupted as a hostile user would, each giving a
clear `file:line` error (or a counted skip under `on_error: skip`), never a traceback; configs whose keys would
otherwise fail hours later, or write outside the run directory, refused when they load."""

import gzip
import shutil

import pytest
from typer.testing import CliRunner

from hnl_ray.config import ConfigError, load_config
from hnl_ray.data.errors import DataError, LineErrors
from hnl_ray.data.readers import ReadContext, read_source


def read(sets, on_error="raise"):
    cfg = load_config(sets=[f"data.on_error={on_error}", *sets])
    errors = LineErrors(cfg.data.on_error)
    ctx = ReadContext(errors=errors, time_range=cfg.data.time_range())
    src = read_source(cfg.data, ctx, cfg.seed)
    return src, errors


def copy(data_dir, tmp_path, name):
    return shutil.copytree(data_dir / name, tmp_path / name)


def edit_line(path, n, fn):
    lines = path.read_bytes().split(b"\n")
    lines[n - 1] = fn(lines[n - 1])
    path.write_bytes(b"\n".join(lines))


def ml(d):
    return ["data.format=movielens", f"data.path={d}"]


def table(p, *more):
    return ["data.format=table", f"data.interactions={p}", *more]


# ----------------------------------------------------------------------------- corrupted fixtures

def test_movielens_empty_field_is_named(data_dir, tmp_path):
    d = copy(data_dir, tmp_path, "ml-100k")
    edit_line(d / "u.data", 3, lambda b: b"\t".join([b.split(b"\t")[0], b"", *b.split(b"\t")[2:]]))
    with pytest.raises(DataError, match=r"u\.data:3: malformed line: empty item id"):
        read(ml(d))
    src, errors = read(ml(d), on_error="skip")
    assert errors.total == 1 and src.interactions.num_rows == 5


@pytest.mark.parametrize("folder,file,line", [("ml-100k", "u.data", 4), ("ml-latest-small", "ratings.csv", 4)])
def test_movielens_non_utf8_names_the_line(data_dir, tmp_path, folder, file, line):
    d = copy(data_dir, tmp_path, folder)
    edit_line(d / file, line, lambda b: b[:1] + b"\xff" + b[1:])
    with pytest.raises(DataError, match=rf"{file}:{line}: not valid utf-8"):
        read(ml(d))


def test_table_non_utf8_names_the_line(data_dir, tmp_path):
    d = copy(data_dir, tmp_path, "table")
    edit_line(d / "ratings.csv", 3, lambda b: b"\xff" + b)
    with pytest.raises(DataError, match=r"ratings\.csv:3: not valid utf-8"):
        read(table(d / "ratings.csv", "data.delimiter=';'", "data.columns={user_id: uid, item_id: iid}"))


def test_gzipped_movielens_under_its_plain_name_is_read(data_dir, tmp_path):
    d = copy(data_dir, tmp_path, "ml-100k")
    (d / "u.data").write_bytes(gzip.compress((data_dir / "ml-100k" / "u.data").read_bytes()))
    src, _ = read(ml(d))
    assert src.interactions.num_rows == 6


def test_truncated_gzip_named_csv_says_truncated(data_dir, tmp_path):
    d = copy(data_dir, tmp_path, "ml-latest-small")
    (d / "ratings.csv").write_bytes(gzip.compress((data_dir / "ml-latest-small" / "ratings.csv").read_bytes())[:-30])
    with pytest.raises(DataError, match=r"ratings\.csv: gzip data is truncated or corrupt"):
        read(ml(d))


@pytest.mark.parametrize("folder,file,sets", [
    ("yelp", "yelp_academic_dataset_review.json", lambda d: ["data.format=yelp",
                                                             f"data.reviews={d / 'yelp_academic_dataset_review.json'}"]),
    ("amazon2018", "Toys_and_Games.json", lambda d: ["data.format=amazon", f"data.reviews={d / 'Toys_and_Games.json'}"]),
])
def test_json_readers_non_utf8_right_line_and_skip_applies(data_dir, tmp_path, folder, file, sets):
    d = copy(data_dir, tmp_path, folder)
    edit_line(d / file, 3, lambda b: b[:20] + b"\xff" + b[20:])
    with pytest.raises(DataError, match=rf"{file}:3: malformed line: not valid utf-8"):
        read(sets(d))
    before, _ = read(sets(data_dir / folder), on_error="skip")
    src, errors = read(sets(d), on_error="skip")
    assert any(f"{file}:3: not valid utf-8" in e for e in errors.examples)
    assert src.interactions.num_rows == before.interactions.num_rows - 1


def test_empty_lightgcn_train_blames_train(data_dir, tmp_path):
    d = copy(data_dir, tmp_path, "lightgcn")
    (d / "train.txt").write_text("")
    with pytest.raises(DataError, match=r"train\.txt: no interactions in the train file"):
        read(["data.format=lightgcn", f"data.path={d}"])


# ----------------------------------------------------------------------------- record checks, every format

@pytest.mark.parametrize("ts,ok", [(-5, False), (43_000_000_000, False), (631_152_000, True), (1_500_000_000, True)])
def test_table_timestamp_range(tmp_path, ts, ok):
    p = tmp_path / "r.csv"
    p.write_text(f"user_id,item_id,ts\nu1,i1,1500000000\nu2,i2,{ts}\n")
    sets = table(p, "data.columns.timestamp=ts")
    if ok:
        assert read(sets)[0].interactions.num_rows == 2
        return
    with pytest.raises(DataError, match=r"r\.csv:3: malformed line: timestamp .* is outside 1990-01-01"):
        read(sets)
    src, errors = read(sets, on_error="skip")
    assert src.interactions.num_rows == 1 and errors.total == 1


def test_timestamp_bounds_are_configurable(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,ts\nu1,i1,1500000000\n")
    with pytest.raises(DataError, match="outside 2018-01-01"):
        read(table(p, "data.columns.timestamp=ts", "data.timestamp_min=2018-01-01"))
    with pytest.raises(ConfigError, match="timestamp_max"):
        load_config(sets=["data.timestamp_min=2020-01-01", "data.timestamp_max=2019-01-01"])


def test_iso_year_one_and_yelp_date_out_of_range(data_dir, tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,when\nu1,i1,2017-01-01\nu2,i2,0001-01-01\n")
    with pytest.raises(DataError, match=r"r\.csv:3: .*timestamp"):
        read(table(p, "data.columns.timestamp=when", "data.timestamp_unit=iso"))
    d = copy(data_dir, tmp_path, "yelp")
    f = d / "yelp_academic_dataset_review.json"
    edit_line(f, 2, lambda b: b.replace(b'"date":"', b'"date":"3270-01-01 00:00:00","x":"', 1)
              .replace(b'"date": "', b'"date": "3270-01-01 00:00:00", "x": "', 1))
    with pytest.raises(DataError, match=r"review\.json:2: .*timestamp"):
        read(["data.format=yelp", f"data.reviews={f}"])


@pytest.mark.parametrize("body", ["user_id,item_id\n,i1\nu2,i2\n", "user_id,item_id\n   ,i1\nu2,i2\n"])
def test_table_empty_or_blank_user_id(tmp_path, body):
    p = tmp_path / "r.csv"
    p.write_text(body)
    with pytest.raises(DataError, match=r"r\.csv:2: malformed line: empty user id"):
        read(table(p))
    src, errors = read(table(p), on_error="skip")
    assert src.interactions["user_id"].to_pylist() == ["u2"] and errors.total == 1


def test_recbole_blank_user_id(data_dir, tmp_path):
    d = copy(data_dir, tmp_path, "recbole-general")
    edit_line(d / "ml.inter", 2, lambda b: b" " + b[b.index(b"\t"):])
    with pytest.raises(DataError, match=r"ml\.inter:2: malformed line: empty user id"):
        read(["data.format=recbole", f"data.path={d}", "data.name=ml"])


def test_amazon_blank_reviewer_and_out_of_range_time(tmp_path):
    p = tmp_path / "r.json"
    p.write_text('{"reviewerID": " ", "asin": "a", "overall": 5, "unixReviewTime": 1400000000}\n'
                 '{"reviewerID": "u", "asin": "a", "overall": 5, "unixReviewTime": -1}\n'
                 '{"reviewerID": "u", "asin": "b", "overall": 5, "unixReviewTime": 1400000000}\n')
    src, errors = read(["data.format=amazon", f"data.reviews={p}"], on_error="skip")
    assert src.interactions.num_rows == 1
    assert [e.split(": ", 1)[0].rsplit(":", 1)[1] for e in errors.examples] == ["1", "2"]


# ----------------------------------------------------------------------------- configs

@pytest.mark.parametrize("sets,match", [
    (["train.eval.ks=[0, -3, 20]"], "ks must be distinct cut-offs >= 1"),
    (["tune.metric=foo@3"], "tune.metric: 'foo@3'"),
    (["tune.space={optim.lr: {grid: [0.01]}}", "tune.metric=ndcg@50"], "tune.metric ndcg@50 needs K=50"),
    (["teacher.train={sampler: {nam: dns}}"], "teacher.train.sampler.nam"),
    (["tune.space={model.dimm: {grid: [8]}}"], "tune.space.model.dimm: unknown parameter"),
    (["name=../x"], "name: '../x' is not a safe name"),
    (["tune.name=../../x"], "tune.name: '../../x' is not a safe name"),
    (["train.runs={..: {}}"], "run name '..' is not a safe name"),
    (["filters.date_from=2020-13-45"], "filters.date_from=2020-13-45.*month must be in 1..12"),
])
def test_config_refused_at_load(sets, match):
    with pytest.raises(ConfigError, match=match):
        load_config(sets=sets)


def test_duplicate_yaml_keys_and_empty_file_refused(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: a\nseed: 1\nname: b\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'name' \(first given at line 1\)"):
        load_config(p)
    p.write_text("train:\n  optim: {lr: 0.1, lr: 0.2}\n")
    with pytest.raises(ConfigError, match="duplicate key 'lr'"):
        load_config(p)
    p.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_config(p)


def test_cli_bad_date_is_a_config_error_not_a_traceback(tmp_path):
    from hnl_ray.cli import app

    res = CliRunner().invoke(app, ["prepare", "--run-dir", str(tmp_path), "--set", "filters.date_from=2020-13-45"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "config error" in res.output and "month must be in 1..12" in res.output
