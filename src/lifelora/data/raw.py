"""The canonical raw dataset every source loader produces, and the checks it must pass."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from lifelora.errors import LifeloraError

INTERACTION_SCHEMA = {"user": pl.Utf8, "item": pl.Utf8, "rating": pl.Float64, "timestamp": pl.Int64}
USER_FEATURES = ("gender", "age", "occupation", "zip")


@dataclass
class RawDataset:
    """Interactions plus item and user tables in catalogue order.

    Catalogue order (e.g. ascending MovieID) is the tie-break of the chronological sort, so it must
    be the same whichever file layout the data came from.
    """

    name: str
    interactions: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame
    source: str

    def validate(self) -> RawDataset:
        _check_interactions(self.interactions, self.source)
        _check_catalogue(self.items, "item", self.interactions, self.source)
        _check_catalogue(self.users, "user", self.interactions, self.source)
        return self


def _check_interactions(frame: pl.DataFrame, source: str) -> None:
    missing = [c for c in INTERACTION_SCHEMA if c not in frame.columns]
    if missing:
        raise LifeloraError(f"{source}: interactions lack column(s) {', '.join(missing)}")
    if frame.height == 0:
        raise LifeloraError(f"{source}: no interactions (empty file?)")


def _check_catalogue(table: pl.DataFrame, key: str, interactions: pl.DataFrame, source: str) -> None:
    if key not in table.columns:
        raise LifeloraError(f"{source}: {key} table lacks the column {key!r}")
    if table[key].is_duplicated().any():
        value = table.filter(table[key].is_duplicated())[key][0]
        raise LifeloraError(f"{source}: {key} {value!r} is listed twice in the {key} table")
    unknown = interactions.select(key).unique().join(table.select(key), on=key, how="anti")
    if unknown.height:
        raise LifeloraError(
            f"{source}: {unknown.height} {key}(s) in the interactions have no row in the {key} table, "
            f"e.g. {unknown[key][0]!r}"
        )


def without_duplicates(frame: pl.DataFrame, source: str, drop: bool) -> pl.DataFrame:
    """Rows sharing (user, item, timestamp) are an error, or with `drop` all but the first are removed."""
    dupes = frame.select("user", "item", "timestamp").is_duplicated()
    if not dupes.any():
        return frame
    if drop:
        return frame.unique(subset=["user", "item", "timestamp"], keep="first", maintain_order=True)
    row = frame.filter(dupes).row(0, named=True)
    raise LifeloraError(
        f"{source}: {int(dupes.sum())} duplicate rows (same user, item and timestamp), e.g. "
        f"user {row['user']!r} item {row['item']!r} at {row['timestamp']}; "
        "remove them or prepare with drop_duplicates=true"
    )


def catalogue_from_keys(keys: pl.Series, name: str) -> pl.DataFrame:
    """A catalogue for keys with no feature file: numeric keys in numeric order, others lexically."""
    unique = keys.unique()
    numeric = unique.cast(pl.Int64, strict=False)
    order = numeric.arg_sort() if numeric.null_count() == 0 else unique.arg_sort()
    return pl.DataFrame({name: unique.gather(order)})
