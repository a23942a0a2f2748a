"""A small synthetic dataset with a learnable signal: each user likes one genre."""

from __future__ import annotations

import numpy as np
import polars as pl

from lifelora.data.prepare import Preset, prepare, save_prepared
from lifelora.data.prepared import PreparedData
from lifelora.data.raw import RawDataset

GENRES = ["Action", "Comedy", "Drama"]


def synthetic_raw(
    n_users: int = 60,
    n_items: int = 40,
    per_user: int = 30,
    seed: int = 0,
    name: str = "synthetic",
    late_users: int = 0,
) -> RawDataset:
    """Users like one genre (90% consistent ratings); the last `late_users` users arrive after
    everyone else, so they are first seen in the validation/test periods."""
    rng = np.random.default_rng(seed)
    item_genre = rng.integers(0, len(GENRES), n_items)
    user_genre = rng.integers(0, len(GENRES), n_users)
    rows = []
    for user in range(n_users):
        items = rng.choice(n_items, per_user, replace=False)
        times = np.sort(rng.choice(10_000, per_user, replace=False)) + user * 7
        if user >= n_users - late_users:
            times = 20_000 + np.arange(per_user)
        for item, ts in zip(items, times, strict=True):
            liked = item_genre[item] == user_genre[user]
            rating = 5.0 if liked else 2.0
            if rng.random() < 0.1:
                rating = 7.0 - rating
            rows.append((str(user + 1), str(item + 1), rating, int(ts)))
    interactions = pl.DataFrame(rows, schema=["user", "item", "rating", "timestamp"], orient="row")
    items = pl.DataFrame(
        {
            "item": [str(i + 1) for i in range(n_items)],
            "title": [f"Movie {i + 1}" for i in range(n_items)],
            "year": [1990 + i % 20 for i in range(n_items)],
            "genres": [[GENRES[g]] for g in item_genre],
        },
        schema={"item": pl.Utf8, "title": pl.Utf8, "year": pl.Int32, "genres": pl.List(pl.Utf8)},
    )
    users = pl.DataFrame(
        {
            "user": [str(u + 1) for u in range(n_users)],
            "gender": ["F" if u % 2 else "M" for u in range(n_users)],
            "age": ["25-34"] * n_users,
            "occupation": ["writer"] * n_users,
            "zip": ["00000"] * n_users,
        }
    )
    return RawDataset(name, interactions, items, users, source=name).validate()


def synthetic_prepared(directory, **raw_kwargs) -> PreparedData:
    save_prepared(prepare(synthetic_raw(**raw_kwargs), Preset()), directory)
    return PreparedData.load(directory)


def rule_prepared(
    directory, steps: tuple[int, ...] = (1,), n_users: int = 48, n_items: int = 30, per_period: int = 14
) -> PreparedData:
    """Every user walks the catalogue from a random start by a fixed rule per period: in period k, item i
    is followed by item i + steps[k] (mod n_items). Period k's interactions all come after period k-1's,
    so periods of equal fractions separate the rules."""
    base = synthetic_raw(n_users=n_users, n_items=n_items, per_user=1, name="pattern")
    rng = np.random.default_rng(0)
    rows = []
    for user in range(n_users):
        item = int(rng.integers(n_items))
        for period, step in enumerate(steps):
            for k in range(per_period):
                rows.append((str(user + 1), str(item + 1), 4.0, 10**6 * period + 1000 * user + k))
                item = (item + step) % n_items
    interactions = pl.DataFrame(rows, schema=["user", "item", "rating", "timestamp"], orient="row")
    raw = RawDataset("pattern", interactions, base.items, base.users, source="pattern").validate()
    save_prepared(prepare(raw, Preset(min_history=1)), directory)
    return PreparedData.load(directory)
