"""What every sub-app shares: the stderr console, the joined command line, opening prepared data, and the
typer app whose help prints flags without a value type."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import typer
from typer.core import TyperCommand, TyperGroup

from lifelora.errors import LifeloraError
from lifelora.report import make_console

console = make_console(stderr=True)

OVERRIDES_HELP = "KEY=VALUE overrides of the config (e.g. train.lr=5e-4 model.use_ratings=false)"
PROGRESS_INTERVAL_S = 60  # off a terminal: one progress-bar update a minute, not ten a second


def log(message: str) -> None:
    """One log line on stderr; the terminal (or nothing, in a log file) wraps it, not rich."""
    console.print(message, highlight=False, soft_wrap=True)


def command_line() -> str:
    """The command as the user typed it, recorded in run directories."""
    return " ".join(["lifelora", *sys.argv[1:]])


def quiet_progress_bars() -> None:
    """When stderr is a file or a pipe, tqdm bars update once a minute instead of flooding the log with
    carriage-return lines. tqdm reads `TQDM_*` defaults when it is imported, so call this first; a
    `TQDM_MININTERVAL` the user set wins."""
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_MININTERVAL", str(PROGRESS_INTERVAL_S))
        os.environ.setdefault("TQDM_MAXINTERVAL", str(PROGRESS_INTERVAL_S))


def run_directory(run_dir: Path | None, kind: str, cfg, name: str) -> Path:
    """The run directory (default: a new `runs/KIND-NAME-<time>`), with the resolved config recorded once."""
    from lifelora.distributed import is_main_process, world_size
    from lifelora.run import new_run_dir, record_run

    if run_dir is None and world_size() > 1:
        raise LifeloraError("--run-dir is required with several processes (they must share one)")
    run_dir = run_dir or new_run_dir(kind, name)
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        record_run(run_dir, cfg, command_line())
    return run_dir


def print_metrics(title: str, split: str, metrics: dict, columns: Sequence[str]) -> None:
    """One split's metrics as a table (the task's columns), printed by the main process only."""
    from lifelora.distributed import is_main_process
    from lifelora.report import metrics_table, print_table

    if is_main_process():
        print_table(metrics_table(title, [(split, metrics)], columns))


def load_data(dataset: str, preset: str, data_dir: Path | None):
    from lifelora.data.store import open_prepared

    return open_prepared(dataset, preset, data_dir)


class _FlagsTakeNoValue:
    """typer's help shows `<bool>` beside every flag (`--quick`, `--help`) as if it took a value: show
    no type for flags."""

    def format_help(self, ctx, formatter) -> None:
        for param in self.get_params(ctx):
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        super().format_help(ctx, formatter)


class Command(_FlagsTakeNoValue, TyperCommand):
    pass


class Group(_FlagsTakeNoValue, TyperGroup):
    pass


class App(typer.Typer):
    """A typer app whose groups and commands print their flags without a value type."""

    def __init__(self, **kwargs) -> None:
        super().__init__(cls=Group, **kwargs)

    def command(self, *args, **kwargs):
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)
