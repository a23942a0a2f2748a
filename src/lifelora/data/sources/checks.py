"""Value checks shared by the source loaders; each error names the file and line of the first offender.

Loaders know how a table's rows map to file lines (a header, JSON lines skipping blanks), so they
pass that mapping in as `line_of(row index) -> line number`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from lifelora.data.raw import RatingScale
from lifelora.errors import LifeloraError

LineOf = Callable[[int], int]
_HEADER_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_ -]*")


def delimited_lines(header: bool) -> LineOf:
    """Row → line for a delimited file (blank lines inside it are errors, so rows never skip one)."""
    offset = 2 if header else 1
    return lambda index: index + offset


def check_unique(frame: pl.DataFrame, column: str, path: Path, line_of: LineOf, what: str) -> None:
    """A key listed twice would silently move rows to the other entry: fail on the second listing."""
    repeats = ~frame[column].is_first_distinct()
    if repeats.any():
        index = int(repeats.arg_max())
        value = frame[column][index]
        first = int((frame[column] == value).arg_max())
        raise LifeloraError(
            f"{path}: line {line_of(index)}: {what} {value!r} is listed twice (also on line {line_of(first)})"
        )


def check_no_header(frame: pl.DataFrame, path: Path, numeric: Sequence[str], layout: str) -> None:
    """Headerless files: a first line whose numeric fields are all words is a header someone added."""
    first = [frame[c][0] for c in numeric] if frame.height else []
    if first and all(_HEADER_WORD.fullmatch(value) for value in first):
        fields = ", ".join(str(v) for v in frame.row(0))
        raise LifeloraError(
            f"{path}: line 1 is a header line ({fields}), but {layout} files have none; delete that line"
        )


def check_interactions(
    interactions: pl.DataFrame, path: Path, line_of: LineOf, scale: RatingScale | None
) -> pl.DataFrame:
    """Ratings must be finite and on the dataset's scale (when it has one); timestamps not negative."""
    ratings = interactions["rating"]
    if scale is not None and (off := scale.off_scale(ratings)).any():
        index = int(off.arg_max())
        raise LifeloraError(
            f"{path}: line {line_of(index)}: rating {ratings[index]:g} is off {scale.name} ({scale})"
        )
    if (bad := ~ratings.is_finite().fill_null(False)).any():
        index = int(bad.arg_max())
        raise LifeloraError(f"{path}: line {line_of(index)}: rating {ratings[index]} is not a finite number")
    if (negative := interactions["timestamp"] < 0).any():
        index = int(negative.arg_max())
        raise LifeloraError(
            f"{path}: line {line_of(index)}: timestamp {interactions['timestamp'][index]} is negative "
            "(before 1970)"
        )
    return interactions
