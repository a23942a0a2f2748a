"""Tables printed to the terminal and written as Markdown."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lifelora.io import atomic_path

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


def plot_curve(curve: Sequence[dict], path: Path, title: str) -> Path:
    """Training loss and validation AUC per epoch, side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [row["epoch"] for row in curve]
    figure, (loss_axis, auc_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_axis.plot(epochs, [row["train_loss"] for row in curve], marker="o")
    loss_axis.set(xlabel="epoch", ylabel="train loss (BCE)")
    auc_axis.plot(epochs, [row["valid_AUC"] for row in curve], marker="o", color="tab:orange")
    auc_axis.set(xlabel="epoch", ylabel="valid AUC")
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
    return path
