"""Time periods over a prepared dataset, for continual learning (PESO carries an adapter through them).

This sits next to the fixed 8:1:1 split. All interactions (the sequences, not only the samples) are
taken in the global order prepare() sorts them by, (timestamp, user_idx, item_idx), and cut into
consecutive periods: by fractions of their count, so a cut is exact even inside a run of equal
timestamps, or at calendar boundaries. A sample belongs to the period of the interaction it labels;
its history may reach back into earlier periods.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timezone
from fractions import Fraction
from itertools import pairwise

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lifelora.data.prepared import PreparedData
from lifelora.errors import LifeloraError

DEFAULT_FRACTIONS = (0.6, 0.1, 0.1, 0.1, 0.1)
STATISTICS_COLUMNS = (
    "period", "first_timestamp", "last_timestamp", "users", "new_users", "returning_users",
    "items", "new_items", "interactions", "samples",
)  # fmt: skip


def _utc_seconds(moment: datetime) -> int:
    """Unix seconds; a time without a zone is taken as UTC, like the prepared timestamps."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def _seconds(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, datetime):
        return _utc_seconds(value)
    if isinstance(value, date):  # YAML reads an unquoted 2000-12-01 as a date
        return _utc_seconds(datetime(value.year, value.month, value.day))
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:  # Python 3.10's fromisoformat knows no "Z"
            return _utc_seconds(datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text))
        except ValueError:
            pass
    raise ValueError(f"{value!r} is neither an ISO date nor unix seconds")


def iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class PeriodSpec(BaseModel):
    """How to cut periods: `fractions` of all interactions, calendar `boundaries`, or the data's own
    (`given`: a prepared `period` column, e.g. PESO's released blocks); at most one.

    None: the default fractions, the PESO protocol (D1 = the first 60%, then four equal parts).
    """

    model_config = ConfigDict(extra="forbid")

    fractions: list[float] | None = Field(
        None,
        min_length=1,
        description="shares of all interactions in global order; period k ends after "
        "floor(n × (f0 + … + fk)) of them (default [0.6, 0.1, 0.1, 0.1, 0.1])",
    )
    boundaries: list[int] | None = Field(
        None,
        min_length=1,
        description="ISO dates/times (UTC unless a zone is given) or unix seconds, increasing; "
        "each one is the first second of a new period, so k boundaries make k + 1 periods",
    )

    given: int | None = Field(
        None,
        ge=1,
        description="the prepared data's own periods (a `period` column: PESO's released blocks, or "
        "`--columns ...,period=COLUMN`): how many there are",
    )

    @field_validator("fractions")
    @classmethod
    def _positive_summing_to_one(cls, value: list[float] | None) -> list[float] | None:
        if value is not None:
            if any(not f > 0 for f in value):
                raise ValueError(f"must all be positive, got {value}")
            if abs(math.fsum(value) - 1.0) > 1e-6:
                raise ValueError(f"must sum to 1, got {value} (sum {math.fsum(value):.6g})")
        return value

    @field_validator("boundaries", mode="before")
    @classmethod
    def _as_seconds(cls, value: object) -> object:
        return [_seconds(v) for v in value] if isinstance(value, (list, tuple)) else value

    @field_validator("boundaries")
    @classmethod
    def _increasing(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            for before, after in pairwise(value):
                if after <= before:
                    raise ValueError(f"must be strictly increasing, but {iso(after)} follows {iso(before)}")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> PeriodSpec:
        chosen = [k for k in ("fractions", "boundaries", "given") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ValueError(f"give one of fractions, boundaries or given, not {' and '.join(chosen)}")
        if not chosen:
            self.fractions = list(DEFAULT_FRACTIONS)
        return self

    @property
    def n_periods(self) -> int:
        if self.given is not None:
            return self.given
        return len(self.fractions) if self.boundaries is None else len(self.boundaries) + 1

    @classmethod
    def parse(cls, fields: dict) -> PeriodSpec:
        """Validate `fields`, failing with a one-line LifeloraError that names the field."""
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"][:1]) or "periods"
            message = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"]
            raise LifeloraError(f"{where}: {message}") from None


def global_rank(data: PreparedData) -> np.ndarray:
    """Each sequences row's position in the global (timestamp, user_idx, item_idx) order.

    Duplicates of (user, item, timestamp) never survive prepare(), so this order has no ties.
    """
    timestamps = data.sequences["timestamp"].to_numpy()
    order = np.lexsort((data.sequences["item_idx"].to_numpy(), data.sequence_users(), timestamps))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def fraction_ends(fractions: list[float], n: int) -> np.ndarray:
    """Where periods 0 … P-2 end in the global order, computed on the decimals as written (0.7 × 10 = 7)."""
    total, ends = Fraction(0), []
    for share in fractions[:-1]:
        total += Fraction(repr(share))
        ends.append(min(math.floor(total * n), n))
    return np.asarray(ends, dtype=np.int64)


def interaction_periods(data: PreparedData, spec: PeriodSpec) -> np.ndarray:
    """The 0-based period of every row of `data.sequences` (int32); every period must get one."""
    if spec.given is not None:
        return given_periods(data, spec.given)
    timestamps = data.sequences["timestamp"].to_numpy()
    if spec.boundaries is not None:
        periods = np.searchsorted(np.asarray(spec.boundaries, dtype=np.int64), timestamps, side="right")
    else:
        periods = np.searchsorted(fraction_ends(spec.fractions, len(timestamps)), global_rank(data), "right")
    counts = np.bincount(periods, minlength=spec.n_periods)
    if (counts == 0).any():
        empty = int(np.flatnonzero(counts == 0)[0])
        if spec.boundaries is None:
            raise LifeloraError(
                f"fractions: period {empty} has no interactions ({len(timestamps)} in all are too few "
                f"for {spec.fractions})"
            )
        raise LifeloraError(
            f"boundaries: period {empty} ({_span(spec.boundaries, empty)}) has no interactions; "
            f"the data run from {iso(int(timestamps.min()))} to {iso(int(timestamps.max()))}"
        )
    return periods.astype(np.int32)


def given_periods(data: PreparedData, expected: int) -> np.ndarray:
    """The prepared data's own periods, which must number `expected` (`periods.given`)."""
    if "period" not in data.sequences.columns:
        raise LifeloraError(
            f"periods.given: {data.name} has no given periods (prepare it from PESO's release, or from a "
            "table with --columns ...,period=COLUMN)"
        )
    periods = data.sequences["period"].to_numpy().astype(np.int32)
    found = int(periods.max()) + 1
    if found != expected:
        raise LifeloraError(f"periods.given: {expected} periods expected, {data.name} has {found}")
    return periods


def training_targets(data: PreparedData, spec: PeriodSpec) -> pl.DataFrame:
    """Per period: all but each user's last two interactions in it (the protocol's training targets,
    counted as PESO's release counts them: a user's very first interaction too)."""
    periods = interaction_periods(data, spec)
    counts = np.zeros((spec.n_periods, data.users.height), dtype=np.int64)
    np.add.at(counts, (periods, data.sequence_users()), 1)
    targets = np.maximum(counts - 2, 0).sum(axis=1)
    return pl.DataFrame({"period": np.arange(spec.n_periods, dtype=np.int32), "training_targets": targets})


def _span(boundaries: list[int], period: int) -> str:
    if period == 0:
        return f"before {iso(boundaries[0])}"
    if period == len(boundaries):
        return f"from {iso(boundaries[-1])} on"
    return f"from {iso(boundaries[period - 1])} to before {iso(boundaries[period])}"


def sample_periods(
    data: PreparedData, spec: PeriodSpec | None, periods: np.ndarray | None = None
) -> np.ndarray:
    """The period of every sample: that of the interaction it labels (its row in the sequences), from
    the interactions' `periods` when given, else cut by `spec`."""
    periods = interaction_periods(data, spec) if periods is None else periods
    offset = data.users["seq_offset"].to_numpy()[data.samples["user_idx"].to_numpy()]
    return periods[offset + data.samples["hist_len"].to_numpy()]


def period_bounds(data: PreparedData, spec: PeriodSpec, periods: np.ndarray | None = None) -> pl.DataFrame:
    """Per period: its first and last interaction timestamps and its interaction count.

    A fraction cut inside a run of equal timestamps gives two periods the same boundary timestamp.
    """
    periods = interaction_periods(data, spec) if periods is None else periods
    frame = pl.DataFrame({"period": periods, "timestamp": data.sequences["timestamp"]})
    return (
        frame.group_by("period")
        .agg(
            first_timestamp=pl.col("timestamp").min(),
            last_timestamp=pl.col("timestamp").max(),
            interactions=pl.len().cast(pl.Int64),
        )
        .sort("period")
    )


def period_statistics(data: PreparedData, spec: PeriodSpec) -> pl.DataFrame:
    """The per-period table of the PESO paper: users (new = first interaction in this period,
    returning = seen in an earlier one), items (new likewise), interactions and samples."""
    periods = interaction_periods(data, spec)
    frame = pl.DataFrame(
        {"period": periods, "user": data.sequence_users(), "item": data.sequences["item_idx"]}
    )
    active = frame.group_by("period").agg(
        users=pl.col("user").n_unique().cast(pl.Int64), items=pl.col("item").n_unique().cast(pl.Int64)
    )

    def first_seen(key: str, name: str) -> pl.DataFrame:
        firsts = frame.group_by(key).agg(pl.col("period").min())
        return firsts.group_by("period").agg(pl.len().cast(pl.Int64).alias(name))

    counts = np.bincount(sample_periods(data, spec, periods), minlength=spec.n_periods)
    samples = pl.DataFrame({"period": np.arange(spec.n_periods, dtype=np.int32), "samples": counts})
    return (
        period_bounds(data, spec, periods)
        .join(active, on="period")
        .join(first_seen("user", "new_users"), on="period", how="left")
        .join(first_seen("item", "new_items"), on="period", how="left")
        .with_columns(pl.col("new_users", "new_items").fill_null(0))
        .join(samples.cast({"samples": pl.Int64}), on="period")
        .with_columns(returning_users=pl.col("users") - pl.col("new_users"))
        .select(STATISTICS_COLUMNS)
        .sort("period")
    )
