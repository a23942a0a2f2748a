"""Any interactions table (CSV or Parquet) with a column mapping, for users' own data."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from lifelora.data.raw import INTERACTION_SCHEMA, RatingScale, RawDataset, catalogue_from_keys
from lifelora.data.sources.checks import check_interactions, delimited_lines
from lifelora.data.sources.readers import read_delimited, require_file, to_number
from lifelora.errors import LifeloraError

OPTIONAL_COLUMNS = ("period",)  # given time periods (0, 1, …), read only when mapped


def parse_column_map(text: str | None) -> dict[str, str]:
    """`user=uid,item=iid,rating=score,timestamp=ts[,period=block]` → {canonical: file column}; missing
    required keys map to themselves, `period` is read only when named."""
    mapping = {name: name for name in INTERACTION_SCHEMA}
    if not text:
        return mapping
    names = (*INTERACTION_SCHEMA, *OPTIONAL_COLUMNS)
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in names or not value.strip():
            raise LifeloraError(f"--columns: {part!r} is not NAME=COLUMN with NAME one of {', '.join(names)}")
        mapping[key] = value.strip()
    return mapping


def _timestamps(frame: pl.DataFrame, path: Path, column: str) -> pl.Series:
    """Epoch seconds if the first value is a number (then all must be), else ISO dates/times."""
    text = frame["timestamp"]
    if text.is_empty() or text.cast(pl.Float64, strict=False)[0] is not None:
        return to_number(frame, "timestamp", pl.Int64, path, True, label=column)
    parsed = text.str.to_datetime(strict=False, time_zone="UTC").dt.epoch("s")
    if parsed.null_count():
        index = int(parsed.is_null().arg_max())
        raise LifeloraError(f"{path}: line {index + 2}: {column} {text[index]!r} is not an ISO date")
    return parsed


def _separator(path: Path) -> str:
    """TAB for .tsv/.tab (also gzipped: mine.tsv.gz), else comma."""
    name = Path(path.stem) if path.suffix == ".gz" else path
    return "\t" if name.suffix in (".tsv", ".tab") else ","


def load_table(
    path: Path, name: str, columns: str | None, fmt: str, scale: RatingScale | None = None
) -> RawDataset:
    """`scale` (from `--rating-scale`) is checked when given: a user's own table has no known scale."""
    mapping = parse_column_map(columns)
    require_file(path)
    if fmt == "parquet":
        try:
            frame = pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise LifeloraError(f"{path}: not a readable Parquet file ({exc})") from None
        missing = [c for c in mapping.values() if c not in frame.columns]
        if missing:
            raise LifeloraError(
                f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(frame.columns)})"
            )
        frame = frame.select(mapping.values()).cast({c: pl.Utf8 for c in mapping.values()})
        header = True
    else:
        frame = read_delimited(path, _separator(path), list(mapping.values()), header=True, quoted=True)
        header = True
    frame.columns = list(mapping)
    for column in frame.columns:
        if frame[column].null_count():
            line = int(frame[column].is_null().arg_max()) + 2
            raise LifeloraError(f"{path}: line {line} has no value for {mapping[column]!r}")
    interactions = pl.DataFrame(
        {
            "user": frame["user"],
            "item": frame["item"],
            "rating": to_number(frame, "rating", pl.Float64, path, header, label=mapping["rating"]),
            "timestamp": _timestamps(frame, path, mapping["timestamp"]),
        }
    )
    if "period" in mapping:
        periods = to_number(frame, "period", pl.Int64, path, header, label=mapping["period"])
        interactions = interactions.with_columns(period=periods)
    check_interactions(interactions, path, delimited_lines(header), scale)
    catalogue = catalogue_from_keys(interactions["item"], "item")
    items = catalogue.with_columns(
        title=pl.col("item"),
        year=pl.lit(None, dtype=pl.Int32),
        genres=pl.lit([], dtype=pl.List(pl.Utf8)),
    )
    users = catalogue_from_keys(interactions["user"], "user")
    return RawDataset(name, interactions, items, users, source=str(path)).validate()
