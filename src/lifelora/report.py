"""Tables printed to the terminal and written as Markdown."""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from lifelora.io import atomic_path

METRIC_ORDER = ("AUC", "gAUC", "LogLoss", "ACC")
CTR_COLUMNS = ("samples", *METRIC_ORDER)  # result tables that compare models on the same rows
NEXT_ITEM_COLUMNS = ("hit@5", "ndcg@5", "hit@10", "ndcg@10", "users")  # one next-item run's metrics
LOG_WIDTH = 160  # columns off a terminal: rich's default of 80 wraps title columns and long log lines


def paired_verdict(span: str, test: dict, first: str, second: str, where: str = "at this budget") -> str:
    """A paired difference (first − second, with its 95% interval) said in words: which ranks better, or
    that the two are within noise of each other."""
    if test["low"] > 0:
        return f"{span}: {first} ranks better {where}."
    if test["high"] < 0:
        return f"{span}: {second} ranks better {where}."
    return f"{span}: the two are within noise of each other {where}."


def make_console(stderr: bool = False) -> Console:
    """A rich console for stdout (or stderr). Off a terminal (a log file, a pipe) it is `$COLUMNS` wide
    when that is set (rich reads it), else LOG_WIDTH, so tables written to logs keep one line per row."""
    console = Console(stderr=stderr)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = LOG_WIDTH
    return console


def _cell(values: dict, column: str) -> str:
    value = values.get(column)
    if value is None:
        return "–"
    if isinstance(value, str):  # already formatted, e.g. an interval
        return value
    return f"{value:,}" if isinstance(value, int) else f"{value:.4f}"


def metrics_table(
    title: str, rows: Sequence[tuple[str, dict[str, float]]], columns: Sequence[str] = METRIC_ORDER
):
    table = Table(title=title)
    table.add_column("model")
    for column in columns:
        table.add_column(column, justify="right")
    for name, values in rows:
        table.add_row(name, *(_cell(values, c) for c in columns))
    return table


def markdown_table(
    rows: Sequence[tuple[str, dict[str, float]]], columns: Sequence[str] = METRIC_ORDER
) -> str:
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, values in rows:
        cells = (_cell(values, c) for c in columns)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def print_table(table: Table) -> None:
    make_console().print(table)


def _pyplot():
    """matplotlib's pyplot on the file-only backend (no display on servers and in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _save_png(figure, path: Path) -> Path:
    """Write the figure atomically and free it; the tight box keeps long titles whole."""
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(figure)
    return path


def plot_curve(
    curve: Sequence[dict],
    path: Path,
    title: str,
    x: str = "epoch",
    series: Sequence[tuple[str, str]] = (("train_loss", "train loss (BCE)"), ("valid_AUC", "valid AUC")),
    best: float | None = None,
) -> Path:
    """One panel per (key, label) in `series` against `x`, side by side, as a PNG. `best` (an `x` value,
    e.g. the early-stopping epoch whose weights were kept) is marked on every panel."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.5), squeeze=False)
    xs = [row[x] for row in curve]
    for axis, (key, label), color in zip(
        axes[0], series, ("tab:blue", "tab:orange", "tab:green"), strict=False
    ):
        ys = [row[key] for row in curve]
        axis.plot(xs, ys, marker="o" if len(xs) < 30 else None, color=color)
        axis.set(xlabel=x, ylabel=label)
        if best in xs:
            axis.axvline(best, color="tab:gray", linestyle="--", linewidth=1)
            axis.plot(
                [best], [ys[xs.index(best)]], "*", color="tab:red", markersize=12, label=f"best {x} {best}"
            )
            axis.legend(loc="best", fontsize=8)
    figure.suptitle(title)
    return _save_png(figure, path)


def plot_lines(
    panels: Sequence[tuple[str, dict[str, Sequence[float]]]],
    path: Path,
    title: str,
    x_label: str,
    x: Sequence[float] | None = None,
    bands: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    dashed: Collection[str] = (),
) -> Path:
    """One panel per (y label, {series name: values}), each series a line over `x` (default 0, 1, …:
    integer ticks; NaN = gap); `bands` shades a series' (low, high) interval in every panel; `dashed`
    names reference series (baselines). A series without a value and a panel without a series are left
    out, and a name keeps its colour in every panel, so that many strategies stay told apart."""
    plt = _pyplot()
    kept = [(label, {n: v for n, v in series.items() if not np.isnan(np.asarray(v, float)).all()})
            for label, series in panels]  # fmt: skip
    kept = [panel for panel in kept if panel[1]] or kept[:1]
    names = list(dict.fromkeys(name for _, series in kept for name in series))
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20").colors
    colours = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    outside = len(names) > 6
    figure, axes = plt.subplots(1, len(kept), figsize=(5 * len(kept) + 1.5 * outside, 3.8), squeeze=False)
    handles = {}
    for axis, (label, series) in zip(axes[0], kept, strict=True):
        for name, values in series.items():
            where = range(len(values)) if x is None else x
            style = "--" if name in dashed else "-"
            (handles[name],) = axis.plot(where, values, style, marker="o", color=colours[name], label=name)
            if bands and name in bands:
                axis.fill_between(where, *bands[name], color=colours[name], alpha=0.1, linewidth=0)
        axis.set(xlabel=x_label, ylabel=label)
        if x is None:
            axis.xaxis.get_major_locator().set_params(integer=True)
        if not outside:
            axis.legend(loc="best", fontsize=8)
    if outside:  # one legend for every panel, beside the last
        axes[0][-1].legend(
            handles.values(), handles.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8
        )
    figure.suptitle(title)
    return _save_png(figure, path)


def plot_bars(
    rows: Sequence[tuple[str, dict]],
    path: Path,
    title: str,
    metric: str = "AUC",
    interval: tuple[str, str] | None = None,
) -> Path:
    """One horizontal bar per row for `metric` (rows without it are left out), as a PNG; `interval`
    names the keys of each row's (low, high) bounds, drawn as error bars."""
    plt = _pyplot()
    shown = [(name, values) for name, values in rows if values.get(metric) is not None]
    figure, axis = plt.subplots(figsize=(7, 0.4 * len(shown) + 1.2))
    names = [name for name, _ in shown]
    values = [v[metric] for _, v in shown]
    bounds = [(v[interval[0]], v[interval[1]]) for _, v in shown] if interval else None
    errors = None
    if bounds:
        errors = [
            [v - lo for v, (lo, _) in zip(values, bounds, strict=True)],
            [hi - v for v, (_, hi) in zip(values, bounds, strict=True)],
        ]
    axis.barh(range(len(shown)), values, color="tab:blue", xerr=errors, ecolor="black", capsize=3)
    axis.set_yticks(range(len(shown)), names)
    axis.invert_yaxis()
    if shown:
        low = min(lo for lo, _ in bounds) if bounds else min(values)
        high = max(hi for _, hi in bounds) if bounds else max(values)
        axis.set_xlim(max(0.0, low - 0.05), min(1.0, high + 0.02) if high <= 1 else high * 1.02)
    for i, value in enumerate(values):
        axis.text(value, i, f" {value:.4f}", va="bottom", fontsize=8)
    axis.set_xlabel(metric)
    axis.set_title(title, fontsize=10)
    return _save_png(figure, path)
