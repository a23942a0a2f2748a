"""Any interactions table (CSV or Parquet) with a column mapping, for users' own data."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from lifelora.data.raw import INTERACTION_SCHEMA, RawDataset, catalogue_from_keys
from lifelora.data.sources.readers import read_delimited, require_file, to_number
from lifelora.errors import LifeloraError


def parse_column_map(text: str | None) -> dict[str, str]:
    """`user=uid,item=iid,rating=score,timestamp=ts` → {canonical: file column}; missing keys map to themselves."""
    mapping = {name: name for name in INTERACTION_SCHEMA}
    if not text:
        return mapping
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in INTERACTION_SCHEMA or not value.strip():
            raise LifeloraError(
                f"--columns: {part!r} is not NAME=COLUMN with NAME one of {', '.join(INTERACTION_SCHEMA)}"
            )
        mapping[key] = value.strip()
    return mapping


def _timestamps(values: pl.Series, path: Path, column: str) -> pl.Series:
    """Epoch seconds if the first value is a number (then all must be), else ISO dates/times."""
    if values.dtype.is_numeric() or values.len() == 0:
        return values.cast(pl.Int64)
    text = values.str.strip_chars()
    as_number = text.cast(pl.Float64, strict=False)
    if as_number[0] is not None:
        parsed, kind = as_number.cast(pl.Int64), "a number"
    else:
        parsed, kind = text.str.to_datetime(strict=False, time_zone="UTC").dt.epoch("s"), "an ISO date"
    if parsed.null_count():
        index = int(parsed.is_null().arg_max())
        raise LifeloraError(f"{path}: line {index + 2}: {column} {values[index]!r} is not {kind}")
    return parsed


def load_table(path: Path, name: str, columns: str | None, fmt: str) -> RawDataset:
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
        separator = "\t" if path.suffix in (".tsv", ".tab") else ","
        frame = read_delimited(path, separator, list(mapping.values()), header=True, quoted=True)
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
            "rating": to_number(frame, "rating", pl.Float64, path, header),
            "timestamp": _timestamps(frame["timestamp"], path, mapping["timestamp"]),
        }
    )
    catalogue = catalogue_from_keys(interactions["item"], "item")
    items = catalogue.with_columns(
        title=pl.col("item"),
        year=pl.lit(None, dtype=pl.Int32),
        genres=pl.lit([], dtype=pl.List(pl.Utf8)),
    )
    users = catalogue_from_keys(interactions["user"], "user")
    return RawDataset(name, interactions, items, users, source=str(path)).validate()
