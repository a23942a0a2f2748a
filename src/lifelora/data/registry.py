"""Dataset names and file formats → the loader that reads them."""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

from lifelora.data import embedded
from lifelora.data.raw import RatingScale, RawDataset
from lifelora.data.sources.amazon import load_amazon2023
from lifelora.data.sources.generic import load_table
from lifelora.data.sources.goodreads import load_goodreads
from lifelora.data.sources.movielens import load_grouplens, load_recbole
from lifelora.data.sources.peso_release import is_release, load_release, read_codes
from lifelora.errors import LifeloraError

FORMATS = ("recbole", "grouplens", "amazon2023", "goodreads", "csv", "parquet", "peso-release")
MOVIELENS = ("ml-100k", "ml-1m", "ml-25m", "ml-latest", "ml-latest-small")
EMBEDDED_DATASETS = ("ml-100k", "ml-1m")
NAME_PATTERNS = "ml-100k, ml-1m, ml-25m, ml-latest, ml-latest-small, amazon-<category>, goodreads-<genre>"
_WHOLE_STARS, _HALF_STARS = (1.0, 5.0, 1.0), (0.5, 5.0, 0.5)
RATING_SCALES = {
    "ml-100k": _WHOLE_STARS,
    "ml-1m": _WHOLE_STARS,
    "ml-25m": _HALF_STARS,
    "ml-latest": _HALF_STARS,
    "ml-latest-small": _HALF_STARS,
    "amazon-*": _WHOLE_STARS,
    "goodreads*": (0.0, 5.0, 1.0),  # 0: shelved but not rated
}


def scale_for(dataset: str, declared: str | None = None) -> RatingScale | None:
    """`--rating-scale MIN,MAX[,STEP]` if given, else the known dataset's own scale, else none."""
    if declared is not None:
        return RatingScale.parse(declared)
    for pattern, (low, high, step) in RATING_SCALES.items():
        if fnmatchcase(dataset, pattern):
            return RatingScale(low, high, step, f"the {dataset} rating scale")
    return None


def default_format(dataset: str, source: Path | None) -> str:
    if source is not None and is_release(Path(source)):
        return "peso-release"
    if dataset in MOVIELENS:
        if source is None or any((source / f"{dataset}.inter{gz}").exists() for gz in ("", ".gz")):
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
    dataset: str,
    source: Path | None = None,
    fmt: str | None = None,
    columns: str | None = None,
    rating_scale: str | None = None,
    codes: Path | None = None,
) -> RawDataset:
    """Load `dataset` from `source` (a directory or file) or, for the embedded ones, from the cache.

    Ratings off the dataset's scale are an error (see `scale_for`; `rating_scale` declares one).
    `codes`: a JSON file of given item codes, `{item: [code, …]}` (PESO's release brings its own).
    """
    raw = _load_interactions(dataset, source, fmt, columns, rating_scale)
    if codes is not None:
        raw.codes = read_codes(Path(codes), raw.items["item"])
    return raw


def _load_interactions(
    dataset: str, source: Path | None, fmt: str | None, columns: str | None, rating_scale: str | None
) -> RawDataset:
    if fmt is not None and fmt not in FORMATS:
        raise LifeloraError(f"--format: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    fmt = fmt or default_format(dataset, source)
    ratings = scale_for(dataset, rating_scale)
    if source is None:
        if dataset not in EMBEDDED_DATASETS:
            raise LifeloraError(
                f"{dataset} is not embedded (only {', '.join(EMBEDDED_DATASETS)} are): download it and pass --source"
            )
        source = embedded.fetch(dataset)
    source = Path(source)
    try:
        exists = source.exists()
    except OSError as exc:
        raise LifeloraError(f"{source}: cannot read ({exc.strerror or exc})") from None
    if not exists:
        raise LifeloraError(f"{source}: no such file or directory")
    if fmt == "peso-release":
        return load_release(source, dataset)
    if fmt == "recbole":
        return load_recbole(source, dataset, ratings)
    if fmt == "grouplens":
        return load_grouplens(source, dataset, ratings)
    if fmt == "amazon2023":
        return load_amazon2023(source, dataset, ratings)
    if fmt == "goodreads":
        return load_goodreads(source, dataset, ratings)
    return load_table(source, dataset, columns, fmt, ratings)
