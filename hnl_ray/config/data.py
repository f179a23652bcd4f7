"""Config of the data layer: where the source files are, how they are filtered and split."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from .base import Section

OnError = Literal["raise", "skip"]


class _SourceCommon(Section):
    on_error: OnError = Field(
        "raise",
        description="What a malformed line does: `raise` stops with the file and line number; `skip` skips it "
        "and counts it in stats.json.",
    )
    keep_reviews: bool = Field(True, description="Keep review text (used by the profile prompts).")
    max_review_chars: int = Field(600, ge=0, description="Review text is cut to this many characters.")
    timestamp_min: dt.date = Field(dt.date(1990, 1, 1), description="Interactions dated before this (UTC) are "
                                   "bad lines (see `on_error`): a year 0001 or negative time is a broken record.")
    timestamp_max: dt.date | None = Field(None, description="Interactions dated after this are bad lines; null: "
                                                            "now + 1 day. Sources without real time (sequence "
                                                            "positions) are not checked.")

    @model_validator(mode="after")
    def _time_range(self) -> "_SourceCommon":
        if self.timestamp_max is not None and self.timestamp_max <= self.timestamp_min:
            raise ValueError(f"timestamp_max ({self.timestamp_max}) must be after timestamp_min "
                             f"({self.timestamp_min})")
        return self

    def time_range(self) -> tuple[int, int]:
        """[first, last] epoch seconds a real timestamp may take."""
        utc = dt.timezone.utc
        hi = (dt.datetime.combine(self.timestamp_max, dt.time(), utc) if self.timestamp_max
              else dt.datetime.now(utc) + dt.timedelta(days=1))
        return int(dt.datetime.combine(self.timestamp_min, dt.time(), utc).timestamp()), int(hi.timestamp())


class SyntheticSource(_SourceCommon):
    """The embedded text-attributed demo dataset (see hnl_ray/data/synthetic.py for what it plants)."""

    format: Literal["synthetic"] = "synthetic"
    n_users: int = Field(600, ge=10, description="Number of users generated.")
    n_items: int = Field(400, ge=20, description="Number of items generated.")
    mean_interactions: float = Field(24.0, gt=1, description="Mean interactions per user (log-normal).")
    min_interactions: int = Field(6, ge=1, description="Fewest interactions a user gets.")
    popularity_skew: float = Field(1.5, ge=0, description="Zipf exponent of the item popularity prior.")
    taste_temperature: float = Field(0.7, gt=0, description="Lower = users follow their tastes more strictly.")
    lookalike_share: float = Field(
        0.5, ge=0, le=1, description="Share of items created as look-alikes of another item that differ only "
        "in the facet users care about most."
    )
    noise: float = Field(0.08, ge=0, le=1, description="Share of interactions drawn by popularity alone.")
    seed: int | None = Field(None, description="Generator seed; defaults to the run's `seed`.")


class AmazonSource(_SourceCommon):
    """Amazon reviews 2014 / 2018 (reviewerID, asin, overall, unixReviewTime) or 2023 (user_id, parent_asin,
    rating, timestamp in ms). JSON lines, gzipped or not. The 2014 meta files are Python literals, not JSON:
    both are accepted."""

    format: Literal["amazon"] = "amazon"
    version: Literal["2014", "2018", "2023"] = Field("2018", description="Release of the Amazon dump.")
    reviews: str = Field(..., description="Reviews file (`reviews_*.json.gz`, `*.jsonl`, ...).")
    meta: str | None = Field(None, description="Metadata file (`meta_*.json.gz`, `meta_*.jsonl`).")

    @field_validator("version", mode="before")
    @classmethod
    def _year_as_text(cls, v: object) -> object:
        return str(v) if isinstance(v, int) else v  # `version: 2018` in YAML is an int


class YelpSource(_SourceCommon):
    """Yelp academic dataset: review.json plus business.json (name, city, categories)."""

    format: Literal["yelp"] = "yelp"
    reviews: str = Field(..., description="`yelp_academic_dataset_review.json`.")
    business: str | None = Field(None, description="`yelp_academic_dataset_business.json`.")


class MovieLensSource(_SourceCommon):
    """MovieLens 100k (u.data, u.item), 1M (ratings.dat, movies.dat) or latest (ratings.csv, movies.csv)."""

    format: Literal["movielens"] = "movielens"
    path: str = Field(..., description="Folder holding the MovieLens files.")
    variant: Literal["auto", "100k", "1m", "latest"] = Field("auto", description="Which release; `auto` looks "
                                                                                  "at the files present.")


class LightGCNSource(_SourceCommon):
    """LightGCN/NGCF adjacency lists: `user item item ...` per line, with a given train/test split."""

    format: Literal["lightgcn"] = "lightgcn"
    path: str = Field(..., description="Folder with train.txt, test.txt and optionally user_list.txt, "
                                       "item_list.txt (org_id remap_id).")
    train: str = Field("train.txt", description="Train file name inside `path`.")
    test: str = Field("test.txt", description="Test file name inside `path`.")


class P5Source(_SourceCommon):
    """P5-style `user_sequence.txt` (user then items in time order) plus `item_text.txt` (item then text)."""

    format: Literal["p5"] = "p5"
    path: str = Field(..., description="Folder with the sequence and item text files.")
    sequences: str = Field("user_sequence.txt", description="Sequence file name inside `path`.")
    item_text: str | None = Field("item_text.txt", description="Item text file name inside `path` (optional).")


class RecBoleSource(_SourceCommon):
    """RecBole atomic files: `NAME.inter` or `NAME.{train,valid,test}.inter` (general `item_id` or sequential
    `item_id_list` + `item_id` form), `NAME.item` or UniSRec's `NAME.text`, and `NAME.user2index` /
    `NAME.item2index` when the inter files hold indices."""

    format: Literal["recbole"] = "recbole"
    path: str = Field(..., description="Folder with the atomic files.")
    name: str = Field(..., description="Dataset name: the files' common prefix.")


class TableColumns(Section):
    user_id: str = "user_id"
    item_id: str = "item_id"
    rating: str | None = None
    timestamp: str | None = None
    review: str | None = None


class ItemColumns(Section):
    item_id: str = "item_id"
    title: str | None = "title"
    description: str | None = None
    categories: str | None = None
    brand: str | None = None


class TableSource(_SourceCommon):
    """Any CSV / TSV / Parquet interaction table, with its columns named in `columns`."""

    format: Literal["table"] = "table"
    interactions: str = Field(..., description="CSV, TSV or Parquet file of interactions.")
    items: str | None = Field(None, description="Optional CSV/TSV/Parquet file of item attributes.")
    columns: TableColumns = Field(default_factory=TableColumns, description="Source column for each canonical "
                                                                             "interaction field.")
    item_columns: ItemColumns = Field(default_factory=ItemColumns, description="Source column for each "
                                                                               "canonical item field.")
    delimiter: str = Field(",", description="CSV delimiter (ignored for Parquet).")
    timestamp_unit: Literal["s", "ms", "iso"] = Field("s", description="Unit of the timestamp column.")
    categories_separator: str = Field("|", description="Separator inside the categories column.")


DataSource = Annotated[
    Union[SyntheticSource, AmazonSource, YelpSource, MovieLensSource, LightGCNSource, P5Source, RecBoleSource,
          TableSource],
    Field(discriminator="format"),
]


class KCore(Section):
    user: int = Field(0, ge=0, description="Keep users with at least this many interactions (0 = off).")
    item: int = Field(0, ge=0, description="Keep items with at least this many interactions (0 = off).")
    max_rounds: int = Field(100, ge=1, description="Safety cap on k-core rounds (it normally converges in a few).")


class FilterConfig(Section):
    """Applied in this order: rating, date window, de-duplication, k-core."""

    min_rating: float | None = Field(None, description="Keep interactions with rating >= this (null = keep all).")
    date_from: dt.date | None = Field(None, description="Keep interactions on or after this date (UTC).")
    date_to: dt.date | None = Field(None, description="Keep interactions before this date (UTC, exclusive).")
    dedup: Literal["none", "first", "last"] = Field(
        "first", description="Repeated (user, item) pairs: keep the earliest, the latest, or all (`none`)."
    )
    k_core: KCore = Field(default_factory=KCore, description="Iterative k-core, repeated to a fixed point.")

    @model_validator(mode="after")
    def _window(self) -> "FilterConfig":
        if self.date_from and self.date_to and self.date_from >= self.date_to:
            raise ValueError(f"date_from ({self.date_from}) must be before date_to ({self.date_to})")
        return self


class SplitConfig(Section):
    method: Literal["random", "temporal", "loo", "given"] = Field(
        "random",
        description="`random`: per-user random ratio; `temporal`: per-user by time; `loo`: leave-one-out (valid = "
        "second last, test = last); `given`: the source's own split, validation carved per user from train when "
        "the source has none.",
    )
    ratios: tuple[float, float, float] = Field((0.8, 0.1, 0.1), description="train/valid/test ratios per user.")
    valid_ratio: float = Field(0.1, ge=0, lt=1, description="`given` without a validation file: share of each "
                                                            "user's train interactions moved to validation.")
    cold_start: Literal["error", "drop", "keep"] = Field(
        "error", description="`given` split: a valid/test interaction whose user or item never appears in train "
                             "is an error, is dropped, or is kept; dropped and kept ones are counted in stats.json."
    )

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(r < 0 for r in v) or abs(sum(v) - 1.0) > 1e-6 or v[0] <= 0:
            raise ValueError("ratios must be non-negative, train > 0, and sum to 1")
        return v
