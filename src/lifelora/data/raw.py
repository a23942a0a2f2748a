"""The canonical raw dataset every source loader produces, and the checks it must pass."""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from lifelora.errors import LifeloraError

INTERACTION_SCHEMA = {"user": pl.Utf8, "item": pl.Utf8, "rating": pl.Float64, "timestamp": pl.Int64}
USER_FEATURES = ("gender", "age", "occupation", "zip")


@dataclass
class RawDataset:
    """Interactions plus item and user tables in catalogue order.

    Catalogue order (e.g. ascending MovieID) is the tie-break of the chronological sort, so it must
    be the same whichever file layout the data came from. `source` is the file the interactions
    came from, so that errors found later (duplicate rows, no samples) name that file.

    Optional: a `period` column of the interactions (given time periods, e.g. PESO's released blocks)
    and `codes`, the items' given semantic-ID codes (item, codes: list of int).
    """

    name: str
    interactions: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame
    source: str
    codes: pl.DataFrame | None = None

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
    """Rows sharing (user, item, timestamp) are an error, or with `drop` all but the first are removed.

    The error counts the rows that repeat an earlier one: what `drop` would remove."""
    key = pl.struct("user", "item", "timestamp")
    repeats = frame.select(~key.is_first_distinct()).to_series()
    if not repeats.any():
        return frame
    if drop:
        return frame.filter(~repeats)
    extra = int(repeats.sum())
    row = frame.filter(repeats).row(0, named=True)
    raise LifeloraError(
        f"{source}: {extra} row{'s' if extra > 1 else ''} repeat{'' if extra > 1 else 's'} an earlier "
        "row with the same user, item and timestamp, e.g. "
        f"user {row['user']!r} item {row['item']!r} at {row['timestamp']}; "
        "remove them or prepare with drop_duplicates=true"
    )


@dataclass(frozen=True)
class RatingScale:
    """The ratings a dataset can hold: `low` to `high`, on multiples of `step` above `low` if given.

    Part of a dataset's definition (ML-1M: whole stars 1-5): a value off the scale is corrupt data,
    not a strong opinion, and would be labelled as if it were one.
    """

    low: float
    high: float
    step: float | None = None
    name: str = "the rating scale"

    @classmethod
    def parse(cls, text: str) -> RatingScale:
        """`MIN,MAX[,STEP]` as given to `--rating-scale`."""
        parts = [p.strip() for p in text.split(",")]
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) not in (2, 3) or not all(math.isfinite(n) for n in numbers):
            raise LifeloraError(f"--rating-scale: {text!r} is not MIN,MAX[,STEP] (e.g. 1,5 or 0.5,5,0.5)")
        low, high, *step = numbers
        if low >= high or (step and step[0] <= 0):
            raise LifeloraError(f"--rating-scale: {text!r} needs MIN < MAX and STEP > 0")
        return cls(low, high, step[0] if step else None, "the rating scale given by --rating-scale")

    def off_scale(self, ratings: pl.Series) -> pl.Series:
        """True where a rating is not on the scale (NaN and infinities never are)."""
        inside = ratings.is_finite() & ratings.is_between(self.low, self.high)
        if self.step:
            steps = (ratings - self.low) / self.step
            inside &= (steps - steps.round()).abs() < 1e-6
        return ~inside.fill_null(False)

    def __str__(self) -> str:
        shown = f"{self.low:g} to {self.high:g}"
        return f"{shown} in steps of {self.step:g}" if self.step else shown


def catalogue_from_keys(keys: pl.Series, name: str) -> pl.DataFrame:
    """A catalogue for keys with no feature file: numeric keys in numeric order, others lexically."""
    unique = keys.unique()
    numeric = unique.cast(pl.Int64, strict=False)
    order = numeric.arg_sort() if numeric.null_count() == 0 else unique.arg_sort()
    return pl.DataFrame({name: unique.gather(order)})
