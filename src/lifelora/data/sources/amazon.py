"""Amazon Reviews 2023 (the PESO datasets): `{Category}.jsonl` reviews + `meta_{Category}.jsonl` items."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import polars as pl

from lifelora.data.raw import RatingScale, RawDataset, catalogue_from_keys
from lifelora.data.sources.checks import check_interactions
from lifelora.data.sources.readers import check_complete, json_line, plain_or_gz, read_json_lines
from lifelora.errors import LifeloraError

REVIEW_SCHEMA = {"user_id": pl.Utf8, "parent_asin": pl.Utf8, "rating": pl.Float64, "timestamp": pl.Int64}
META_SCHEMA = {
    "parent_asin": pl.Utf8,
    "title": pl.Utf8,
    "categories": pl.List(pl.Utf8),
    "main_category": pl.Utf8,
}


def meta_path_for(reviews: Path) -> Path:
    """`meta_{Category}.jsonl`, gzipped or not whichever the reviews are."""
    return plain_or_gz(reviews.with_name(f"meta_{reviews.name}"))


def load_amazon2023(reviews_path: Path, name: str, scale: RatingScale | None = None) -> RawDataset:
    """Items are keyed by `parent_asin`; timestamps (milliseconds) are kept as seconds."""
    if reviews_path.is_dir():
        raise LifeloraError(f"{reviews_path}: pass the reviews file ({{Category}}.jsonl), not a directory")
    reviews = check_complete(read_json_lines(reviews_path, REVIEW_SCHEMA), reviews_path)
    interactions = pl.DataFrame(
        {
            "user": reviews["user_id"],
            "item": reviews["parent_asin"],
            "rating": reviews["rating"],
            "timestamp": reviews["timestamp"] // 1000,
        }
    )
    check_interactions(interactions, reviews_path, partial(json_line, reviews_path), scale)
    meta_path = meta_path_for(reviews_path)
    meta = read_json_lines(meta_path, META_SCHEMA).unique("parent_asin", keep="first", maintain_order=True)
    known = meta.rename({"parent_asin": "item"})
    catalogue = catalogue_from_keys(interactions["item"], "item").join(known, on="item", how="left")
    items = pl.DataFrame(
        {
            "item": catalogue["item"],
            "title": catalogue["title"].fill_null(catalogue["item"]),
            "year": pl.Series([None] * catalogue.height, dtype=pl.Int32),
            "genres": catalogue["categories"].fill_null(pl.lit([], dtype=pl.List(pl.Utf8))),
        }
    )
    users = catalogue_from_keys(interactions["user"], "user")
    return RawDataset(name, interactions, items, users, source=str(reviews_path)).validate()
