"""Item text every task shows the LLM: display titles and the short description whose embedding drives
semantic retrieval (ReLLa's SUBR wording) and, later, semantic IDs."""

from __future__ import annotations

import polars as pl

DESCRIPTIONS = {
    "movie": "Here is a movie. Its title is {title}. The movie's genre is {genres}.",
    "book": "Here is a book. Its title is {title}. The book's genre is {genres}.",
    "product": "Here is a product. Its title is {title}. Its category is {genres}.",
}


def domain_of(dataset: str) -> str:
    """What a dataset's items are, from its name: movie (ml-*), book (goodreads*, book*) or product."""
    if dataset.startswith("ml-"):
        return "movie"
    if dataset.startswith(("goodreads", "book")):
        return "book"
    return "product"


def item_titles(items: pl.DataFrame) -> list[str]:
    """Display titles: "Toy Story (1995)". The raw key (it may be an id) is shown only for an item with
    no title, as "item {key}", so that no prompt or embedding reads "None"."""
    titles = items["title"].to_list() if "title" in items.columns else items["item"].to_list()
    untitled = [i for i, t in enumerate(titles) if t is None or not str(t).strip()]
    for i in untitled:
        titles[i] = f"item {items['item'][i]}"
    years = items["year"].to_list() if "year" in items.columns else [None] * len(titles)
    return [
        f"{t} ({y})" if y and f"({y})" not in str(t) else str(t) for t, y in zip(titles, years, strict=True)
    ]


def item_descriptions(items: pl.DataFrame, dataset: str) -> list[str]:
    genres = (
        items["genres"].list.join(", ").fill_null("unknown").to_list()
        if "genres" in items.columns
        else ["unknown"] * items.height
    )
    template = DESCRIPTIONS[domain_of(dataset)]
    return [
        template.format(title=t, genres=g or "unknown")
        for t, g in zip(item_titles(items), genres, strict=True)
    ]
