"""Reading delimited and JSON-lines files into string tables with errors that name the file and row."""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from lifelora.errors import LifeloraError

_UNIT_SEPARATOR = "\x1f"


def require_file(path: Path) -> Path:
    if not path.exists():
        raise LifeloraError(f"{path}: file not found")
    if not path.is_file():
        raise LifeloraError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise LifeloraError(f"{path}: file is empty")
    return path


def find_file(directory: Path, candidates: Sequence[str]) -> Path:
    """The first of `candidates` present in `directory` (plain or .gz)."""
    for name in candidates:
        for suffix in ("", ".gz"):
            path = directory / f"{name}{suffix}"
            if path.exists():
                return require_file(path)
    raise LifeloraError(f"{directory}: none of {', '.join(candidates)} found")


def read_bytes(path: Path) -> bytes:
    require_file(path)
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise LifeloraError(f"{path}: not a readable gzip file ({exc})") from None
    if not data.strip():
        raise LifeloraError(f"{path}: file is empty")
    return data


def first_line(path: Path, encoding: str = "utf-8") -> str:
    """The header line, read without loading the whole file."""
    require_file(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return decode(path, handle.readline(), encoding).rstrip("\r\n")


def decode(path: Path, data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LifeloraError(
            f"{path}: not valid {encoding} at line {line} (byte 0x{data[exc.start]:02x}); "
            "wrong encoding? GroupLens ML-1M/ML-100K files are latin-1 and load with their own format"
        ) from None


def read_delimited(
    path: Path,
    separator: str,
    columns: Sequence[str],
    *,
    header: bool,
    encoding: str = "utf-8",
    quoted: bool = False,
    may_be_empty: Sequence[str] = (),
) -> pl.DataFrame:
    """Read a delimited file as all-string columns, checking the number of fields on every line.

    With `header`, `columns` are the names required in the header (others are ignored); without it,
    they name the leading fields in order. Fields in `may_be_empty` read empty as "" (others must be
    present: an empty one marks a truncated file).
    """
    text = decode(path, read_bytes(path), encoding).replace("\r\n", "\n")
    shown = "TAB" if separator == "\t" else repr(separator)
    if len(separator) > 1:
        text = text.replace(separator, _UNIT_SEPARATOR)
        separator = _UNIT_SEPARATOR
    n_fields = text.split("\n", 1)[0].count(separator) + 1
    if n_fields < (1 if header else len(columns)) or (n_fields == 1 and len(columns) > 1):
        raise LifeloraError(
            f"{path}: line 1 has {n_fields} field(s) with separator {shown}, expected {len(columns)}; "
            "wrong separator or format?"
        )
    try:
        frame = pl.read_csv(
            io.BytesIO(text.encode("utf-8")),
            separator=separator,
            has_header=header,
            infer_schema=False,
            quote_char='"' if quoted else None,
            truncate_ragged_lines=False,
        )
    except pl.exceptions.PolarsError as exc:
        message = str(exc).strip().splitlines()[0]
        raise LifeloraError(f"{path}: could not parse ({message}); truncated or malformed file?") from None
    if header:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise LifeloraError(
                f"{path}: missing column(s) {', '.join(missing)} (header has {', '.join(frame.columns)})"
            )
        frame = frame.select(columns)
    else:
        frame = frame.select(frame.columns[: len(columns)])
        frame.columns = list(columns)
    if may_be_empty:
        frame = frame.with_columns(pl.col(list(may_be_empty)).fill_null(""))
    return check_complete(frame, path, header=header)


def check_complete(frame: pl.DataFrame, path: Path, *, header: bool = False) -> pl.DataFrame:
    """Fail on the first row with a missing field, the mark of a truncated or ragged file."""
    for column in frame.columns:
        nulls = frame[column].is_null()
        if nulls.any():
            row = int(nulls.arg_max()) + (2 if header else 1)
            raise LifeloraError(
                f"{path}: line {row} has no value for {column!r}; truncated or malformed file?"
            )
    return frame


def to_number(
    frame: pl.DataFrame, column: str, dtype: type[pl.DataType], path: Path, header: bool
) -> pl.Series:
    """Cast a string column to a number, naming the first offending line and value."""
    text = frame[column].str.strip_chars()
    values = text.cast(pl.Float64, strict=False)
    bad = values.is_null() | values.is_nan()
    if bad.any():
        index = int(bad.arg_max())
        raise LifeloraError(
            f"{path}: line {index + (2 if header else 1)}: {column} {text[index]!r} is not a number"
        )
    if dtype == pl.Float64:
        return values.alias(column)
    return values.cast(dtype).alias(column)


def read_json_lines(path: Path, schema: dict[str, type[pl.DataType] | pl.DataType]) -> pl.DataFrame:
    """Read the `schema` fields of a JSON-lines file (plain or .gz); other fields are ignored."""
    data = read_bytes(path)
    try:
        frame = pl.read_ndjson(io.BytesIO(data), schema=schema)
    except pl.exceptions.PolarsError as exc:
        message = str(exc).strip().splitlines()[0]
        raise LifeloraError(
            f"{path}: could not parse JSON lines ({message}); truncated or malformed file?"
        ) from None
    for field in schema:
        if frame[field].null_count() == frame.height:
            raise LifeloraError(f"{path}: no record has the field {field!r}; wrong file?")
    return frame
