"""Reading delimited and JSON-lines files into string tables with errors that name the file and row."""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from lifelora.errors import LifeloraError

_UNIT_SEPARATOR = "\x1f"
_UTF8_BOM = b"\xef\xbb\xbf"
_INT64_LIMIT = 2.0**63


def _unreadable(path: Path, exc: OSError) -> LifeloraError:
    return LifeloraError(f"{path}: cannot read ({exc.strerror or exc})")


def require_file(path: Path) -> Path:
    try:
        if not path.exists():
            raise LifeloraError(f"{path}: file not found")
        if not path.is_file():
            raise LifeloraError(f"{path}: not a file")
        if path.stat().st_size == 0:
            raise LifeloraError(f"{path}: file is empty")
    except OSError as exc:
        raise _unreadable(path, exc) from None
    return path


def plain_or_gz(path: Path) -> Path:
    """`path`, or its gzipped (or un-gzipped) twin when only that exists: .gz is accepted everywhere."""
    twin = path.with_suffix("") if path.suffix == ".gz" else path.with_name(f"{path.name}.gz")
    return twin if not path.exists() and twin.exists() else path


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
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _unreadable(path, exc) from None
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
    try:
        with opener(path, "rb") as handle:
            line = handle.readline()
    except EOFError as exc:
        raise LifeloraError(f"{path}: not a readable gzip file ({exc})") from None
    except OSError as exc:
        raise _unreadable(path, exc) from None
    return decode(path, line, encoding).rstrip("\r\n")


def check_text(path: Path, data: bytes, encoding: str) -> None:
    """UTF-16 (or binary) data decodes as garbage that later looks like a wrong separator: say so here."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        advice = "latin-1 or UTF-8" if encoding == "latin-1" else encoding
        raise LifeloraError(
            f"{path}: the file is UTF-16 (it starts with a UTF-16 byte-order mark), expected {encoding} "
            f"text; re-save it as {advice}"
        )
    if b"\x00" in data[:4096]:
        raise LifeloraError(
            f"{path}: the file has NUL bytes (UTF-16 text or a binary file?), expected {encoding} text"
        )


def decode(path: Path, data: bytes, encoding: str) -> str:
    """Decode, dropping a UTF-8 byte-order mark.

    A latin-1 file (GroupLens) that is valid UTF-8 and not plain ASCII was re-encoded as UTF-8 (real
    latin-1 accents are invalid UTF-8): it is read as UTF-8, where latin-1 would turn é into Ã©.
    """
    check_text(path, data, encoding)
    data = data.removeprefix(_UTF8_BOM)
    if encoding == "latin-1" and not data.isascii():
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LifeloraError(
            f"{path}: not valid {encoding} at line {line} (byte 0x{data[exc.start]:02x}); "
            "wrong encoding? GroupLens ML-1M/ML-100K files are latin-1 and load with their own format"
        ) from None


def _without_trailing_blank_lines(text: str) -> str:
    """Cut after the newline that ends the last non-blank line (its own trailing blanks are fields)."""
    end = len(text)
    while end and text[end - 1].isspace():
        end -= 1
    cut = text.find("\n", end)
    return text if cut == -1 else text[: cut + 1]


def _first_ragged_line(text: str, separator: str, n_fields: int) -> tuple[int, int] | None:
    """(line, fields) of the first non-blank line whose field count differs from line 1's."""
    for number, line in enumerate(text.split("\n"), 1):
        count = line.count(separator) + 1
        if line.strip() and count != n_fields:
            return number, count
    return None


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
    they are exactly the fields of every line, in order. Every field is stripped of surrounding
    blanks; trailing blank lines are ignored. Fields in `may_be_empty` read empty as "" (others must
    be present: an empty one marks a truncated file).
    """
    text = decode(path, read_bytes(path), encoding).replace("\r\n", "\n")
    text = _without_trailing_blank_lines(text)
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
    if not header and n_fields > len(columns):
        raise LifeloraError(
            f"{path}: line 1 has {n_fields} fields with separator {shown}, expected {len(columns)} "
            f"({', '.join(columns)})"
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
        ragged = None if quoted else _first_ragged_line(text, separator, n_fields)
        if ragged:
            raise LifeloraError(
                f"{path}: line {ragged[0]} has {ragged[1]} fields with separator {shown}, line 1 has "
                f"{n_fields}; every line must have the same number of fields"
            ) from None
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
        frame.columns = list(columns)
    frame = frame.with_columns(
        pl.col(c).str.strip_chars().fill_null("")
        if c in may_be_empty
        else pl.when(pl.col(c).str.strip_chars() != "").then(pl.col(c).str.strip_chars()).alias(c)
        for c in columns
    )
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
    frame: pl.DataFrame,
    column: str,
    dtype: type[pl.DataType],
    path: Path,
    header: bool,
    label: str | None = None,
) -> pl.Series:
    """Cast a string column to a number, naming the first offending line and value (as `label`).

    Integers are parsed exactly; a float form ("5.0") is accepted for them only when whole and in
    range, so a 20-digit timestamp is an error rather than an overflow.
    """
    text = frame[column].str.strip_chars()
    values = text.cast(pl.Float64, strict=False)
    label = label or column

    def fail(bad: pl.Series, problem: str) -> LifeloraError:
        index = int(bad.arg_max())
        return LifeloraError(
            f"{path}: line {index + (2 if header else 1)}: {label} {text[index]!r} {problem}"
        )

    if (bad := values.is_null() | values.is_nan()).any():
        raise fail(bad, "is not a number")
    if dtype == pl.Float64:
        return values.alias(column)
    exact = text.cast(pl.Int64, strict=False)
    if (bad := exact.is_null() & ~(values.abs() < _INT64_LIMIT)).any():
        raise fail(bad, "is out of range")
    if (bad := exact.is_null() & (values != values.floor())).any():
        raise fail(bad, "is not a whole number")
    return exact.fill_null(values.cast(pl.Int64, strict=False)).cast(dtype).alias(column)


def read_json_lines(path: Path, schema: dict[str, type[pl.DataType] | pl.DataType]) -> pl.DataFrame:
    """Read the `schema` fields of a JSON-lines file (plain or .gz); other fields are ignored."""
    data = read_bytes(path)
    check_text(path, data, "utf-8")
    try:
        frame = pl.read_ndjson(io.BytesIO(data.removeprefix(_UTF8_BOM)), schema=schema)
    except pl.exceptions.PolarsError as exc:
        message = str(exc).strip().splitlines()[0]
        raise LifeloraError(
            f"{path}: could not parse JSON lines ({message}); truncated or malformed file?"
        ) from None
    for field in schema:
        if frame[field].null_count() == frame.height:
            raise LifeloraError(f"{path}: no record has the field {field!r}; wrong file?")
    return frame


def json_line(path: Path, index: int) -> int:
    """The line of record `index` (0-based) of a JSON-lines file, which skips blank lines.

    Only called to word an error, so it re-reads the file rather than keep offsets for every record.
    """
    number = 0
    for number, line in enumerate(read_bytes(path).split(b"\n"), 1):
        if line.strip():
            if index == 0:
                return number
            index -= 1
    return number
