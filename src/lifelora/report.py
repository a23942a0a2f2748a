"""Tables printed to the terminal and written as Markdown."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

METRIC_ORDER = ("AUC", "gAUC", "LogLoss", "ACC")


def metrics_table(
    title: str, rows: Sequence[tuple[str, dict[str, float]]], columns: Sequence[str] = METRIC_ORDER
):
    table = Table(title=title)
    table.add_column("model")
    for column in columns:
        table.add_column(column, justify="right")
    for name, values in rows:
        table.add_row(name, *(f"{values[c]:.4f}" if c in values else "–" for c in columns))
    return table


def markdown_table(
    rows: Sequence[tuple[str, dict[str, float]]], columns: Sequence[str] = METRIC_ORDER
) -> str:
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, values in rows:
        cells = (f"{values[c]:.4f}" if c in values else "–" for c in columns)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def print_table(table: Table) -> None:
    Console().print(table)
