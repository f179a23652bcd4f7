"""Every reader on fixture files in the real formats (tests/data/), including gzip, the Amazon 2014 meta quirk,
malformed lines, missing fields, truncated gzip and unreadable paths."""

import gzip
import json
import os
import shutil

import pytest

from hnl_ray.config import load_config
from hnl_ray.data.errors import DataError, LineErrors
from hnl_ray.data.readers import ReadContext, read_source


def read(data_dir, sets, on_error="raise"):
    cfg = load_config(sets=[f"data.on_error={on_error}", *sets])
    errors = LineErrors(cfg.data.on_error)
    src = read_source(cfg.data, ReadContext(errors=errors), cfg.seed)
    return src, errors


def rows(table):
    return table.to_pylist()


def test_amazon_2014_gzip_and_python_literal_meta(data_dir):
    d = data_dir / "amazon2014"
    src, _ = read(data_dir, ["data.format=amazon", "data.version=2014",
                             f"data.reviews={d / 'reviews_Toys_and_Games_5.json.gz'}",
                             f"data.meta={d / 'meta_Toys_and_Games.json.gz'}"])
    inter = rows(src.interactions)
    assert len(inter) == 9
    first = inter[0]
    assert first["user_id"] == "A1VXOAVRGKGEAK" and first["item_id"] == "0439893577"
    assert first["timestamp"] == 1390953600 and first["rating"] == 5.0
    assert first["review"].startswith("Great toy My son loves it & plays daily")  # html unescaped, tags dropped
    items = {r["item_id"]: r for r in rows(src.items)}
    # only reviewed items are kept; the never-reviewed one is skipped
    assert set(items) == {"0439893577", "B000IBPD76", "B005E7BDXW"}
    board = items["0439893577"]
    assert board["title"] == "Melissa & Doug Magnetic Board"
    assert board["brand"] == "Melissa & Doug"
    assert board["categories"] == ["Toys & Games", "Learning & Education", "Arts & Crafts"]
    assert '"magnetic"' in board["description"]
    assert items["B005E7BDXW"]["brand"] is None


def test_amazon_2018_malformed_line_names_file_and_line(data_dir):
    path = data_dir / "amazon2018" / "Toys_and_Games.json"
    with pytest.raises(DataError) as err:
        read(data_dir, ["data.format=amazon", f"data.reviews={path}"])
    assert f"{path}:4:" in str(err.value) and "not valid JSON" in str(err.value)


def test_amazon_2018_skip_counts_malformed_and_missing_fields(data_dir):
    d = data_dir / "amazon2018"
    src, errors = read(data_dir, ["data.format=amazon", f"data.reviews={d / 'Toys_and_Games.json'}",
                                  f"data.meta={d / 'meta_Toys_and_Games.json'}"], on_error="skip")
    assert src.interactions.num_rows == 4
    assert errors.total == 2  # line 4 truncated JSON, line 5 without reviewerID
    assert any(":5: missing required field(s): reviewerID" in e for e in errors.examples)
    items = {r["item_id"]: r for r in rows(src.items)}
    assert items["0000031852"]["description"] == "Stretchy waist Adult ballet tutu, yellow."
    assert items["0000031852"]["categories"] == ["Toys & Games", "Dress Up & Pretend Play", "Tutus"]
    assert items["0000031895"]["title"] is None  # empty title is missing, not ""


def test_amazon_missing_required_field_raises(data_dir, tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"reviewerID": "A", "overall": 5.0}) + "\n")
    with pytest.raises(DataError, match=r"r.json:1: malformed line: missing required field\(s\): asin"):
        read(data_dir, ["data.format=amazon", f"data.reviews={p}"])


def test_amazon_2023_parent_asin_and_milliseconds(data_dir):
    d = data_dir / "amazon2023"
    src, _ = read(data_dir, ["data.format=amazon", "data.version=2023",
                             f"data.reviews={d / 'Electronics.jsonl.gz'}",
                             f"data.meta={d / 'meta_Electronics.jsonl.gz'}"])
    inter = rows(src.interactions)
    assert [r["item_id"] for r in inter] == ["B00YQ6X8EP", "B00YQ6X8EP", "B07PNNCSP9"]  # merged on parent
    assert inter[0]["timestamp"] == 1588687728
    items = {r["item_id"]: r for r in rows(src.items)}
    assert items["B00YQ6X8EP"]["brand"] == "Anker"
    assert items["B00YQ6X8EP"]["categories"][0] == "All Electronics"
    assert items["B07PNNCSP9"]["brand"] == "Tribit"  # from details when store is null


def test_truncated_gzip_is_reported(data_dir, tmp_path):
    raw = (data_dir / "amazon2014" / "reviews_Toys_and_Games_5.json.gz").read_bytes()
    p = tmp_path / "cut.json.gz"
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="gzip stream is truncated"):
        read(data_dir, ["data.format=amazon", f"data.reviews={p}"])


def test_unreadable_paths(data_dir, tmp_path):
    with pytest.raises(DataError, match="not found"):
        read(data_dir, ["data.format=amazon", f"data.reviews={tmp_path / 'nope.json'}"])
    with pytest.raises(DataError, match="does not exist or is not a folder"):
        read(data_dir, ["data.format=movielens", f"data.path={tmp_path / 'nope'}"])
    if os.geteuid() != 0:  # root can read anything
        p = tmp_path / "locked.json"
        p.write_text("{}\n")
        p.chmod(0)
        with pytest.raises(DataError, match="not readable"):
            read(data_dir, ["data.format=amazon", f"data.reviews={p}"])


def test_yelp_reviews_and_business(data_dir):
    d = data_dir / "yelp"
    src, _ = read(data_dir, ["data.format=yelp", f"data.reviews={d / 'yelp_academic_dataset_review.json'}",
                             f"data.business={d / 'yelp_academic_dataset_business.json'}"])
    inter = rows(src.interactions)
    assert len(inter) == 4 and inter[0]["rating"] == 3.0
    assert inter[0]["timestamp"] == 1531001351  # 2018-07-07 22:09:11 UTC
    items = {r["item_id"]: r for r in rows(src.items)}
    assert set(items) == {"XQfwVwDr-v0ZS3_CbbE5Xw", "7ATYjTIgM3jUlt4UM3IypQ", "YjUWPpI6HXG530lwP-fb2A"}
    spin = items["7ATYjTIgM3jUlt4UM3IypQ"]
    assert spin["title"] == "Body Cycle Spinning Studio" and spin["city"] == "Philadelphia"
    assert spin["categories"][:2] == ["Active Life", "Cycling Classes"]
    assert items["YjUWPpI6HXG530lwP-fb2A"]["categories"] is None


@pytest.mark.parametrize("folder, n, first_item_title, cats", [
    ("ml-100k", 6, "Kolya (1996)", ["Comedy"]),
    ("ml-1m", 5, "One Flew Over the Cuckoo's Nest (1975)", ["Drama"]),
    ("ml-latest-small", 5, "Toy Story (1995)", ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]),
])
def test_movielens_variants(data_dir, folder, n, first_item_title, cats):
    src, _ = read(data_dir, ["data.format=movielens", f"data.path={data_dir / folder}"])
    assert src.interactions.num_rows == n
    assert src.interactions["timestamp"].null_count == 0
    first = rows(src.items)[0]
    assert first["title"] == first_item_title and first["categories"] == cats


def test_movielens_1m_latin1_and_users(data_dir):
    src, _ = read(data_dir, ["data.format=movielens", f"data.path={data_dir / 'ml-1m'}"])
    titles = [r["title"] for r in rows(src.items)]
    assert "Café (1995)" in titles
    users = {r["user_id"]: json.loads(r["extra"]) for r in rows(src.users)}
    assert users["2"]["gender"] == "M"


def test_movielens_csv_bad_value_names_line(data_dir, tmp_path):
    shutil.copytree(data_dir / "ml-latest-small", tmp_path / "ml")
    with open(tmp_path / "ml" / "ratings.csv", "a") as f:
        f.write("3,1,4.0,964982703,extra\n3,1,four,964982703\n")
    with pytest.raises(DataError, match=r"ratings.csv:7: malformed line"):
        read(data_dir, ["data.format=movielens", f"data.path={tmp_path / 'ml'}"])
    src, errors = read(data_dir, ["data.format=movielens", f"data.path={tmp_path / 'ml'}"], on_error="skip")
    assert errors.total == 2 and src.interactions.num_rows == 5
    assert any("ratings.csv:7: expected 4 columns" in e for e in errors.examples)
    assert any("ratings.csv:8: column 'rating'" in e for e in errors.examples)


def test_lightgcn_adjacency_with_id_lists(data_dir):
    src, _ = read(data_dir, ["data.format=lightgcn", f"data.path={data_dir / 'lightgcn'}"])
    inter = rows(src.interactions)
    assert len(inter) == 13 + 4
    assert inter[0] == {"user_id": "nkN_do3fJ9xekchVC-v68A", "item_id": "na4Th5DrNauOv-c43QQFvA", "rating": None,
                        "timestamp": None, "review": None, "split": "train"}
    assert sum(r["split"] == "test" for r in inter) == 4
    assert src.split_files["test"].endswith("test.txt")


def test_lightgcn_malformed_line(data_dir, tmp_path):
    shutil.copytree(data_dir / "lightgcn", tmp_path / "lg")
    with open(tmp_path / "lg" / "train.txt", "a") as f:
        f.write("4 1 x 2\n")
    with pytest.raises(DataError, match=r"train.txt:5: malformed line: expected whitespace-separated integer"):
        read(data_dir, ["data.format=lightgcn", f"data.path={tmp_path / 'lg'}"])


def test_p5_sequences_and_item_text(data_dir):
    src, _ = read(data_dir, ["data.format=p5", f"data.path={data_dir / 'p5'}"])
    inter = rows(src.interactions)
    assert len(inter) == 15
    assert [r["timestamp"] for r in inter[:5]] == [0, 1, 2, 3, 4]  # positions stand in for time
    assert src.timestamps == "ordinal"
    titles = {r["item_id"]: r["title"] for r in rows(src.items)}
    assert titles["B005E7BDXW"] == "lego city police station"


def test_recbole_general_inter_and_item(data_dir):
    src, _ = read(data_dir, ["data.format=recbole", f"data.path={data_dir / 'recbole-general'}", "data.name=ml"])
    assert src.interactions.num_rows == 4 and src.interactions["split"].null_count == 4
    items = {r["item_id"]: r for r in rows(src.items)}
    assert items["302"]["title"] == "L.A. Confidential"
    assert items["302"]["categories"] == ["Crime", "Film-Noir", "Mystery", "Thriller"]
    assert json.loads(items["242"]["extra"]) == {"release_year": "1996"}


def test_recbole_sequential_loo_rebuilds_sequences(data_dir):
    src, _ = read(data_dir, ["data.format=recbole", f"data.path={data_dir / 'recbole-seq'}", "data.name=Sci"])
    inter = rows(src.interactions)
    by_user = {}
    for r in inter:
        by_user.setdefault(r["user_id"], []).append((r["timestamp"], r["item_id"], r["split"]))
    u0 = sorted(by_user["A1AXCV2WYDA4PD"])
    assert [s for _, _, s in u0] == ["train", "train", "train", "valid", "test"]
    assert [i for _, i, _ in u0] == ["B0000223UV", "B00002NC3K", "B00O47ILVA", "B006ATU73A", "B00CJ5EO2E"]
    u1 = sorted(by_user["AMQX7Z5RPQGKP"])
    assert len(u1) == 6 and [s for _, _, s in u1][-2:] == ["valid", "test"]
    assert [i for _, i, _ in u1].count("B00CJ5EO2E") == 2  # a repeat purchase survives
    titles = {r["item_id"]: r["title"] for r in rows(src.items)}
    assert titles["B0000223UV"].startswith("Gorilla Original Gorilla Glue")


def test_recbole_unknown_index_is_reported(data_dir, tmp_path):
    shutil.copytree(data_dir / "recbole-seq", tmp_path / "rs")
    with open(tmp_path / "rs" / "Sci.test.inter", "a") as f:
        f.write("0\t0 1 2 3\t99\n")
    with pytest.raises(DataError, match=r"Sci.test.inter:4: malformed line: item index '99' is not in "
                                        r"Sci.item2index"):
        read(data_dir, ["data.format=recbole", f"data.path={tmp_path / 'rs'}", "data.name=Sci"])


def test_generic_table_with_column_mapping(data_dir):
    d = data_dir / "table"
    src, _ = read(data_dir, ["data.format=table", f"data.interactions={d / 'ratings.csv'}",
                             f"data.items={d / 'items.csv'}", "data.delimiter=;",
                             "data.columns={user_id: uid, item_id: iid, rating: stars, timestamp: when, "
                             "review: comment}",
                             "data.item_columns={item_id: iid, title: name, categories: tags}",
                             "data.timestamp_unit=iso"])
    inter = rows(src.interactions)
    assert inter[0]["user_id"] == "u1" and inter[0]["rating"] == 5.0 and inter[0]["review"] == "great"
    assert inter[0]["timestamp"] == 1488362400
    items = {r["item_id"]: r for r in rows(src.items)}
    assert items["i1"]["title"] == "Blue Kettle" and items["i1"]["categories"] == ["kitchen", "tea"]


def test_generic_parquet_and_missing_column(data_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "x.parquet"
    pq.write_table(pa.table({"u": [1, 2], "i": ["a", "b"], "r": [5, 3], "ts": [1_500_000_010, 1_500_000_020]}), p)
    src, _ = read(data_dir, ["data.format=table", f"data.interactions={p}",
                             "data.columns={user_id: u, item_id: i, rating: r, timestamp: ts}"])
    assert rows(src.interactions)[1]["user_id"] == "2" and rows(src.interactions)[1]["rating"] == 3.0
    with pytest.raises(DataError, match=r"column 'rating_col' not found"):
        read(data_dir, ["data.format=table", f"data.interactions={p}",
                        "data.columns={user_id: u, item_id: i, rating: rating_col}"])


def test_gzip_detected_by_content_not_name(data_dir, tmp_path):
    raw = gzip.decompress((data_dir / "amazon2023" / "Electronics.jsonl.gz").read_bytes())
    p = tmp_path / "plain.jsonl.gz"  # misleading name: plain text
    p.write_bytes(raw)
    src, _ = read(data_dir, ["data.format=amazon", "data.version=2023", f"data.reviews={p}"])
    assert src.interactions.num_rows == 3
