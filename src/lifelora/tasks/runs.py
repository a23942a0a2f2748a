"""A trained run directory read back: its config and its task, for every command and the server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lifelora.errors import LifeloraError
from lifelora.tasks.base import Task
from lifelora.tasks.registry import DEFAULT_TASK, config_class, task_class


def task_in(source: Path | None) -> str:
    """The `task:` of a config file or a run's config.yaml (click-through when there is none)."""
    from lifelora.io import read_yaml

    tree = read_yaml(source) if source is not None and source.is_file() else None
    return tree.get("task", DEFAULT_TASK) if isinstance(tree, dict) else DEFAULT_TASK


def trained_config(name: str, run: Path, overrides: list[str] | None = None) -> Any:
    """The resolved config of a trained run directory (its adapter must be there)."""
    from lifelora.adapters import is_adapter_dir
    from lifelora.config import load_config
    from lifelora.io import read_yaml

    if not is_adapter_dir(run / "adapter"):
        raise LifeloraError(f"--run {run}: not a trained run (no adapter/ with an adapter config)")
    return load_config(config_class(name), None, overrides or [], base=read_yaml(run / "config.yaml"))


def open_task(name: str, cfg: Any, log: Callable[[str], object] = print, run: Path | None = None) -> Task:
    """The task for a run config on its prepared data; with `run`, what that trained run saved."""
    from lifelora.data.store import open_prepared

    data = open_prepared(cfg.dataset, cfg.preset, cfg.data_dir)
    return task_class(name).open(cfg, data, log, run=run)
