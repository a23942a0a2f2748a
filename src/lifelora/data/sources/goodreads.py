"""GoodReads (UCSD Book Graph): `goodreads_interactions_*.json` + `goodreads_books_*.json`.

Shelved-but-unrated interactions (rating 0) carry no preference and are dropped.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import polars as pl

from lifelora.data.raw import RatingScale, RawDataset, catalogue_from_keys
from lifelora.data.sources.checks import check_interactions
from lifelora.data.sources.readers import check_complete, json_line, plain_or_gz, read_json_lines
from lifelora.errors import LifeloraError

INTERACTION_SCHEMA = {"user_id": pl.Utf8, "book_id": pl.Utf8, "rating": pl.Int64, "date_added": pl.Utf8}
BOOK_SCHEMA = {"book_id": pl.Utf8, "title_without_series": pl.Utf8, "publication_year": pl.Utf8}
DATE_FORMAT = "%a %b %d %H:%M:%S %z %Y"


def books_path_for(interactions: Path) -> Path:
    """`goodreads_books_*.json`, gzipped or not whichever the interactions are."""
    return plain_or_gz(interactions.with_name(interactions.name.replace("interactions", "books")))


def load_goodreads(interactions_path: Path, name: str, scale: RatingScale | None = None) -> RawDataset:
    """Ratings are checked against `scale` (GoodReads: 0-5) before the unrated 0s are dropped."""
    if "interactions" not in interactions_path.name:
        raise LifeloraError(f"{interactions_path}: expected a goodreads_interactions_*.json file")
    frame = check_complete(read_json_lines(interactions_path, INTERACTION_SCHEMA), interactions_path)
    stamps = frame["date_added"].str.strptime(pl.Datetime, DATE_FORMAT, strict=False)
    if stamps.null_count():
        index = int(stamps.is_null().arg_max())
        raise LifeloraError(
            f"{interactions_path}: line {json_line(interactions_path, index)}: date_added "
            f"{frame['date_added'][index]!r} is not a GoodReads date"
        )
    interactions = pl.DataFrame(
        {
            "user": frame["user_id"],
            "item": frame["book_id"],
            "rating": frame["rating"].cast(pl.Float64),
            "timestamp": stamps.dt.epoch("s"),
        }
    )
    check_interactions(interactions, interactions_path, partial(json_line, interactions_path), scale)
    interactions = interactions.filter(pl.col("rating") > 0)

    books_path = books_path_for(interactions_path)
    books = read_json_lines(books_path, BOOK_SCHEMA).unique("book_id", keep="first", maintain_order=True)
    catalogue = catalogue_from_keys(interactions["item"], "item").join(
        books.rename({"book_id": "item"}), on="item", how="left"
    )
    items = pl.DataFrame(
        {
            "item": catalogue["item"],
            "title": catalogue["title_without_series"].fill_null(catalogue["item"]),
            "year": catalogue["publication_year"].cast(pl.Int32, strict=False),
            "genres": pl.Series([[]] * catalogue.height, dtype=pl.List(pl.Utf8)),
        }
    )
    users = catalogue_from_keys(interactions["user"], "user")
    return RawDataset(name, interactions, items, users, source=str(interactions_path)).validate()
