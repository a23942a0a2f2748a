"""What every sub-app shares: the stderr console, the joined command line, and opening prepared data."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

console = Console(stderr=True)

OVERRIDES_HELP = "KEY=VALUE overrides of the config (e.g. train.lr=5e-4 model.use_ratings=false)"


def log(message: str) -> None:
    console.print(message, highlight=False)


def command_line() -> str:
    """The command as the user typed it, recorded in run directories."""
    return " ".join(["lifelora", *sys.argv[1:]])


def load_data(dataset: str, preset: str, data_dir: Path | None):
    from lifelora.data.store import open_prepared

    return open_prepared(dataset, preset, data_dir)
