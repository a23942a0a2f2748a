"""Dataset names and file formats → the loader that reads them."""

from __future__ import annotations

from pathlib import Path

from lifelora.data import embedded
from lifelora.data.raw import RawDataset
from lifelora.data.sources.amazon import load_amazon2023
from lifelora.data.sources.generic import load_table
from lifelora.data.sources.goodreads import load_goodreads
from lifelora.data.sources.movielens import load_grouplens, load_recbole
from lifelora.errors import LifeloraError

FORMATS = ("recbole", "grouplens", "amazon2023", "goodreads", "csv", "parquet")
MOVIELENS = ("ml-100k", "ml-1m", "ml-25m", "ml-latest", "ml-latest-small")
EMBEDDED_DATASETS = ("ml-100k", "ml-1m")
NAME_PATTERNS = "ml-100k, ml-1m, ml-25m, ml-latest, ml-latest-small, amazon-<category>, goodreads-<genre>"


def default_format(dataset: str, source: Path | None) -> str:
    if dataset in MOVIELENS:
        if source is None or (source / f"{dataset}.inter").exists():
            return "recbole"
        return "grouplens"
    if dataset.startswith("amazon-"):
        return "amazon2023"
    if dataset.startswith("goodreads"):
        return "goodreads"
    raise LifeloraError(
        f"unknown dataset {dataset!r}: known names are {NAME_PATTERNS}; for your own data pass "
        "--source FILE --format csv|parquet"
    )


def load_raw(
    dataset: str, source: Path | None = None, fmt: str | None = None, columns: str | None = None
) -> RawDataset:
    """Load `dataset` from `source` (a directory or file) or, for the embedded ones, from the cache."""
    if fmt is not None and fmt not in FORMATS:
        raise LifeloraError(f"--format: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    fmt = fmt or default_format(dataset, source)
    if source is None:
        if dataset not in EMBEDDED_DATASETS:
            raise LifeloraError(
                f"{dataset} is not embedded (only {', '.join(EMBEDDED_DATASETS)} are): download it and pass --source"
            )
        source = embedded.fetch(dataset)
    source = Path(source)
    if not source.exists():
        raise LifeloraError(f"{source}: no such file or directory")
    if fmt == "recbole":
        return load_recbole(source, dataset)
    if fmt == "grouplens":
        return load_grouplens(source, dataset)
    if fmt == "amazon2023":
        return load_amazon2023(source, dataset)
    if fmt == "goodreads":
        return load_goodreads(source, dataset)
    return load_table(source, dataset, columns, fmt)
