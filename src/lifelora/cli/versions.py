"""`lifelora versions`: the numbered adapter versions of a served run (list, activate, roll back)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lifelora.cli.common import App
from lifelora.errors import LifeloraError

app = App(
    help="The numbered adapter versions of a served run: `lifelora versions list RUN_DIR`; activate one, or "
    "roll back to the one active before.",
    no_args_is_help=True,
)
RUN_DIR_HELP = "a served run directory (its adapter versions are under versions/)"


def _store(run_dir: Path):
    from lifelora.serve.versions import VersionStore

    store = VersionStore(run_dir)
    if not store.numbers():
        raise LifeloraError(f"{run_dir}: no adapter versions (serve or publish one first)")
    return store


def _metrics(meta: dict) -> str:
    """`{"ndcg@10": 0.1234, ...}` as `ndcg@10 0.1234 · ...`; not a dict of numbers: blank."""
    metrics = meta.get("metrics")
    if not isinstance(metrics, dict):
        return ""
    return " · ".join(
        f"{name} {value:.4g}"
        for name, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    )


def _note(meta: dict) -> str:
    return " — ".join(str(meta[key]) for key in ("decision", "note") if meta.get(key) not in (None, ""))


@app.command("list")
def list_versions(
    run_dir: Path = typer.Argument(..., help=RUN_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="print a JSON line per version instead of a table"),
) -> None:
    """List the adapter versions, oldest first, marking the active one."""
    from rich.table import Table

    from lifelora.report import make_console

    rows = _store(run_dir).listing()
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, default=str))
        return
    columns = {
        "period": lambda row: str(row.get("period", "")),
        "task": lambda row: str(row.get("task", "")),
        "metrics": _metrics,
        "note": _note,
    }
    shown = {name: cell for name, cell in columns.items() if any(cell(row) for row in rows)}
    table = Table(title=f"adapter versions of {run_dir}")
    table.add_column("version", justify="right")
    table.add_column("created")
    table.add_column("active", justify="center")
    for name in shown:
        table.add_column(name, justify="right" if name == "period" else "left")
    for row in rows:
        cells = (cell(row) for cell in shown.values())
        table.add_row(str(row["number"]), str(row.get("created", "")), "●" if row["active"] else "", *cells)
    make_console().print(table)


@app.command("activate")
def activate(
    run_dir: Path = typer.Argument(..., help=RUN_DIR_HELP),
    number: int = typer.Argument(..., help="the version to make active (see `lifelora versions list`)"),
) -> None:
    """Make a version the active one (its files' checksums are verified first)."""
    store = _store(run_dir)
    was = store.active()
    store.activate(number)
    if was == number:
        typer.echo(f"version {number} is already active")
    else:
        typer.echo(f"version {number} is active" + (f" (was {was})" if was is not None else ""))


@app.command("rollback")
def rollback(run_dir: Path = typer.Argument(..., help=RUN_DIR_HELP)) -> None:
    """Re-activate the version that was active before the current one."""
    store = _store(run_dir)
    was = store.active()
    number = store.rollback()
    typer.echo(f"version {number} is active (rolled back from {was})")
