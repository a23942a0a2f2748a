"""Time periods over prepared data, vocabularies fitted on a time window, and the data look-ups."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from synthetic import synthetic_prepared, synthetic_raw

from lifelora.data.periods import (
    PeriodSpec,
    global_rank,
    interaction_periods,
    period_bounds,
    period_statistics,
    sample_periods,
)
from lifelora.data.prepare import Preset, prepare, save_prepared
from lifelora.data.prepared import PreparedData
from lifelora.data.raw import RawDataset
from lifelora.errors import LifeloraError
from lifelora.lens import DINLens, LensConfig
from lifelora.lens.din.features import FieldEncoder

# (user, item, rating, timestamp), listed out of time order. In the global order (timestamp, user, item):
# rank  0: (1, 1) t=100   1: (2, 1) t=100   2: (1, 2) t=200   3: (2, 3) t=300   4: (1, 3) t=400
#       5: (1, 4) t=500   6: (3, 2) t=500   7: (2, 4) t=600   8: (4, 5) t=700   9: (3, 1) t=800
# The default fractions end period 0 after 6 interactions: inside the tie at t=500 (users 1 and 3).
ROWS = [
    (3, 1, 2, 800), (1, 4, 5, 500), (2, 1, 4, 100), (1, 1, 5, 100), (4, 5, 5, 700),
    (2, 4, 1, 600), (3, 2, 4, 500), (1, 3, 4, 400), (2, 3, 2, 300), (1, 2, 3, 200),
]  # fmt: skip


def hand_raw(rows: list[tuple] = ROWS) -> RawDataset:
    users = sorted({u for u, *_ in rows})
    items = sorted({i for _, i, *_ in rows})
    return RawDataset(
        "periods",
        pl.DataFrame(
            [(str(u), str(i), float(r), t) for u, i, r, t in rows],
            schema={"user": pl.Utf8, "item": pl.Utf8, "rating": pl.Float64, "timestamp": pl.Int64},
            orient="row",
        ),
        pl.DataFrame(
            {
                "item": [str(i) for i in items],
                "title": [f"Movie {i}" for i in items],
                "year": [1980 + 10 * i for i in items],
                "genres": [["Drama" if i % 2 else "Comedy"] for i in items],
            },
            schema={"item": pl.Utf8, "title": pl.Utf8, "year": pl.Int32, "genres": pl.List(pl.Utf8)},
        ),
        pl.DataFrame({"user": [str(u) for u in users], "gender": ["F" if u % 2 else "M" for u in users]}),
        source="periods.csv",
    ).validate()


def prepared(directory, raw: RawDataset, min_history: int) -> PreparedData:
    return PreparedData.load(save_prepared(prepare(raw, Preset(min_history=min_history)), directory))


@pytest.fixture
def hand(tmp_path) -> PreparedData:
    return prepared(tmp_path / "hand", hand_raw(), min_history=1)


@pytest.fixture
def hand_all(tmp_path) -> PreparedData:
    """Every interaction is a sample (min_history=0)."""
    return prepared(tmp_path / "hand-all", hand_raw(), min_history=0)


def in_global_order(data: PreparedData, values: np.ndarray) -> list:
    return values[np.argsort(global_rank(data))].tolist()


# --- cutting --------------------------------------------------------------------------------------


def test_default_fractions_cut_exactly_inside_a_timestamp_tie(hand_all):
    spec = PeriodSpec()
    assert spec.fractions == [0.6, 0.1, 0.1, 0.1, 0.1] and spec.n_periods == 5
    periods = interaction_periods(hand_all, spec)
    assert in_global_order(hand_all, periods) == [0, 0, 0, 0, 0, 0, 1, 2, 3, 4]
    samples = sample_periods(hand_all, spec)
    assert samples.dtype == np.int32
    # samples are in global order: the two samples at t=500 fall on both sides of the cut
    assert samples.tolist() == [0, 0, 0, 0, 0, 0, 1, 2, 3, 4]
    tie = np.flatnonzero(hand_all.samples["timestamp"].to_numpy() == 500)
    assert hand_all.samples["user_idx"].to_numpy()[tie].tolist() == [0, 2]
    assert samples[tie].tolist() == [0, 1]
    bounds = period_bounds(hand_all, spec)
    assert bounds.rows() == [
        (0, 100, 500, 6), (1, 500, 500, 1), (2, 600, 600, 1), (3, 700, 700, 1), (4, 800, 800, 1),
    ]  # fmt: skip


def test_fractions_use_the_decimals_as_written(hand_all):
    # in floats 0.7 + 0.1 = 0.7999999999999999, whose floor × 10 would give 7
    periods = interaction_periods(hand_all, PeriodSpec(fractions=[0.7, 0.1, 0.2]))
    assert np.bincount(periods).tolist() == [7, 1, 2]


def test_fractions_on_many_ties_cut_on_interaction_counts(tmp_path):
    raw = synthetic_raw()
    raw.interactions = raw.interactions.with_columns(pl.col("timestamp") // 500 * 500)
    data = prepared(tmp_path / "ties", raw, min_history=5)
    n = data.sequences.height
    assert n == 1800 and data.sequences["timestamp"].n_unique() < 40
    spec = PeriodSpec(fractions=[0.5, 0.25, 0.125, 0.125])
    periods = interaction_periods(data, spec)
    assert np.bincount(periods).tolist() == [900, 450, 225, 225]
    assert in_global_order(data, periods) == sorted(periods.tolist())
    samples = sample_periods(data, spec, periods)
    assert samples.tolist() == sample_periods(data, spec).tolist()
    assert (np.diff(samples) >= 0).all()  # samples are in global order
    bounds = period_bounds(data, spec)
    for period, first, last, _ in bounds.iter_rows():
        stamps = data.samples["timestamp"].to_numpy()[samples == period]
        assert first <= stamps.min() and stamps.max() <= last
    assert (bounds["last_timestamp"][:-1] <= bounds["first_timestamp"][1:]).all()


def test_boundaries_cut_by_calendar(hand_all):
    spec = PeriodSpec(boundaries=[300, "1970-01-01T00:10:00Z"])
    assert spec.boundaries == [300, 600] and spec.n_periods == 3
    assert PeriodSpec(boundaries=["1970-01-01 00:05", "1970-01-01T01:10:00+01:00"]).boundaries == [300, 600]
    periods = interaction_periods(hand_all, spec)
    assert np.bincount(periods).tolist() == [3, 4, 3]
    expected = np.searchsorted([300, 600], hand_all.samples["timestamp"].to_numpy(), side="right")
    assert sample_periods(hand_all, spec).tolist() == expected.tolist()
    assert period_bounds(hand_all, spec).rows() == [(0, 100, 200, 3), (1, 300, 500, 4), (2, 600, 800, 3)]


def test_statistics_table_by_hand(hand):
    table = period_statistics(hand, PeriodSpec())
    assert table.columns == [
        "period", "first_timestamp", "last_timestamp", "users", "new_users", "returning_users",
        "items", "new_items", "interactions", "samples",
    ]  # fmt: skip
    # samples (min_history=1): t=200, 300, 400, 500 (user 1) in period 0; t=600 in 2; t=800 in 4
    assert table.drop("first_timestamp", "last_timestamp").rows() == [
        (0, 2, 2, 0, 4, 4, 6, 4),  # users 1, 2; items 1-4
        (1, 1, 1, 0, 1, 0, 1, 0),  # user 3 (new) rates item 2 (known)
        (2, 1, 0, 1, 1, 0, 1, 1),  # user 2 returns
        (3, 1, 1, 0, 1, 1, 1, 0),  # user 4 and item 5, both new
        (4, 1, 0, 1, 1, 0, 1, 1),  # user 3 returns to item 1
    ]


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"fractions": [0.6, 0.5]}, "fractions: must sum to 1"),
        ({"fractions": [1.2, -0.2]}, "fractions: must all be positive"),
        ({"fractions": [0.5, 0.0, 0.5]}, "fractions: must all be positive"),
        ({"boundaries": [600, 300]}, "boundaries: must be strictly increasing"),
        ({"boundaries": [300, "1970-01-01T00:05:00"]}, "boundaries: must be strictly increasing"),
        ({"boundaries": ["soon"]}, "boundaries: 'soon' is neither an ISO date nor unix seconds"),
        (
            {"fractions": [1.0], "boundaries": [300]},
            "periods: give one of fractions, boundaries or given, not fractions and boundaries",
        ),
        ({"fraction": [1.0]}, "fraction: Extra inputs are not permitted"),
    ],
)
def test_bad_specs_fail_with_one_line_naming_the_field(fields, message):
    with pytest.raises(LifeloraError, match=r"^[^\n]*$") as caught:
        PeriodSpec.parse(fields)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"fractions": [0.05, 0.95]}, "fractions: period 0 has no interactions"),
        ({"boundaries": ["1970-01-01"]}, "boundaries: period 0 (before 1970-01-01T00:00:00Z) has no"),
        ({"boundaries": [310, 350]}, "boundaries: period 1 (from 1970-01-01T00:05:10Z to before 1970"),
        ({"boundaries": [900]}, "boundaries: period 1 (from 1970-01-01T00:15:00Z on) has no"),
    ],
)
def test_a_period_without_interactions_is_an_error(hand, fields, message):
    with pytest.raises(LifeloraError) as caught:
        interaction_periods(hand, PeriodSpec.parse(fields))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


# --- PreparedData: splits and periods -------------------------------------------------------------


def test_split_accepts_any_split_value_in_the_data(hand):
    assert hand.split_names == ("train", "valid", "test")
    assert hand.split("valid").height == 0  # 6 samples: 4 train, int(0.6) valid: still a split name
    renamed = pl.when(pl.col("timestamp") < 500).then(pl.lit("d1")).otherwise(pl.lit("d2"))
    custom = replace(hand, samples=hand.samples.with_columns(split=renamed))
    assert custom.split_names == ("d1", "d2")
    assert custom.split("d2")["timestamp"].to_list() == [500, 600, 800]
    with pytest.raises(LifeloraError, match=r"unknown split 'test'; choose one of d1, d2"):
        custom.split("test")
    with pytest.raises(LifeloraError, match=r"unknown split 'train2'; choose one of train, valid, test"):
        hand.split("train2")


def test_period_samples_take_their_histories_from_earlier_periods(hand):
    periods = sample_periods(hand, PeriodSpec())
    timestamps = hand.samples["timestamp"].to_numpy()
    assert timestamps.tolist() == [200, 300, 400, 500, 600, 800]
    assert periods.tolist() == [0, 0, 0, 0, 2, 4]  # every sample in one period; none labels period 1 or 3
    assert timestamps[periods <= 2].tolist() == [200, 300, 400, 500, 600]
    late = hand.samples[np.flatnonzero(periods == 4)]  # a period's samples, as the CTR stream takes them
    history = hand.recent_history(late, 3)  # user 3's item 2 at t=500, from period 1
    assert history.items.tolist() == [[0, 0, 1]] and history.mask.tolist() == [[False, False, True]]


# --- vocabularies on a time window ----------------------------------------------------------------


def train_end_vocabularies(data: PreparedData) -> dict[str, list[str]]:
    """The vocabularies as FieldEncoder.fit built them before `until` existed, written out again."""
    train = data.split("train")
    cutoff = int(train["timestamp"].max())
    items = data.items.filter(
        pl.col("item_idx").is_in(data.sequences.filter(pl.col("timestamp") <= cutoff)["item_idx"].implode())
    )
    users = data.users.filter(pl.col("user_idx").is_in(train["user_idx"].implode()))
    vocab = {
        f"user.{f}": sorted(users[f].cast(pl.Utf8).drop_nulls().unique().to_list())
        for f in ["user", *data.meta["stats"]["user_features"]]
    }
    vocab["item.item"] = sorted(items["item"].to_list())
    vocab["item.genre"] = sorted(items["genres"].list.first().drop_nulls().unique().to_list())
    vocab["item.decade"] = sorted((items["year"] // 10 * 10).cast(pl.Utf8).drop_nulls().unique().to_list())
    return vocab


def test_fit_without_until_keeps_the_training_split_vocabularies(tmp_path):
    data = synthetic_prepared(tmp_path / "late", late_users=4)
    encoder = FieldEncoder.fit(data)
    assert encoder.vocabularies == train_end_vocabularies(data)
    assert encoder.to_dict() == FieldEncoder.fit(data, until=None).to_dict()
    assert encoder.ratings == sorted(float(r) for r in data.sequences["rating"].unique().to_list())


def test_fit_until_gives_code_0_to_what_came_later(hand):
    encoder = FieldEncoder.fit(hand, until=400)
    assert encoder.vocabularies["user.user"] == ["1", "2"]
    assert encoder.vocabularies["item.item"] == ["1", "2", "3"]
    users, items = encoder.user_table(hand), encoder.item_table(hand)
    assert (users[:, 0] == 0).tolist() == [False, False, True, True]  # users 3, 4 first seen at 500, 700
    assert (items[:, 0] == 0).tolist() == [False, False, False, True, True]  # items 4, 5
    assert encoder.ratings == [1.0, 2.0, 3.0, 4.0, 5.0]
    # up to and including t: both interactions at t=500 count
    at_500 = FieldEncoder.fit(hand, until=500)
    assert at_500.vocabularies["user.user"] == ["1", "2", "3"]
    assert at_500.vocabularies["item.item"] == ["1", "2", "3", "4"]
    assert hand.users_seen_until(500).tolist() == [0, 1, 2]
    assert hand.items_seen_until(99).tolist() == []


def test_lens_create_until(hand):
    config = LensConfig(
        dataset="periods",
        model={"embed_dim": 4, "history_length": 3, "attention_units": [4], "mlp_units": [8]},
    )
    lens = DINLens.create(config, hand, until=400)
    assert lens.encoder.to_dict() == FieldEncoder.fit(hand, until=400).to_dict()
    assert lens.encoder.field_sizes()["user.user"] == 3
    assert DINLens.create(config, hand).encoder.to_dict() == FieldEncoder.fit(hand).to_dict()


# --- look-ups -------------------------------------------------------------------------------------


def test_user_and_item_lookups(hand):
    assert hand.user_index("3") == 2
    with pytest.raises(LifeloraError, match=r"^user '99' is not in periods$"):
        hand.user_index("99")
    assert hand.item_indices(["5", "1", "5"], "--items").tolist() == [0, 4]  # each once, catalogue order
    with pytest.raises(LifeloraError, match=r"^--items: '17' is not an item of periods$"):
        hand.item_indices(["1", "42", "17"], "--items")
    assert hand.item_indices([], "--items").tolist() == []


def test_unseen_items(hand):
    assert hand.unseen_items(hand.user_index("1")).tolist() == [4]  # item 5
    assert hand.unseen_items(hand.user_index("4")).tolist() == [0, 1, 2, 3]
    with pytest.raises(LifeloraError, match=r"user index 4 is out of range \(4 users\)"):
        hand.unseen_items(4)
