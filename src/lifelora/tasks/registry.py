"""Tasks by name (a config's `task:`, `--task`): one line per task, each part imported when first asked
for, so that the command line starts without loading every task and a config loads without its model."""

from __future__ import annotations

from importlib import import_module

from pydantic import BaseModel

from lifelora.errors import LifeloraError
from lifelora.tasks.base import Task

# name → (its run config, its task class)
_TASKS: dict[str, tuple[str | type[BaseModel], str | type[Task]]] = {
    "ctr": ("lifelora.tasks.ctr.config:CTRConfig", "lifelora.tasks.ctr.task:CTRTask"),
    "next-item": (
        "lifelora.tasks.next_item.config:NextItemConfig",
        "lifelora.tasks.next_item.task:NextItemTask",
    ),
}
DEFAULT_TASK = "ctr"


def task_names() -> tuple[str, ...]:
    return tuple(_TASKS)


def register_task(task: type[Task]) -> None:
    """Make a task known by its `name` (a third task: its folder plus this call, or a line above)."""
    _TASKS[task.name] = (task.config_class, task)


def _entry(name: str, option: str) -> tuple:
    if name not in _TASKS:
        raise LifeloraError(f"{option}: unknown task {name!r}; choose one of {', '.join(_TASKS)}")
    return _TASKS[name]


def _resolved(entry):
    if isinstance(entry, str):
        module, _, attribute = entry.partition(":")
        return getattr(import_module(module), attribute)
    return entry


def config_class(name: str, option: str = "task") -> type[BaseModel]:
    return _resolved(_entry(name, option)[0])


def task_class(name: str, option: str = "task") -> type[Task]:
    return _resolved(_entry(name, option)[1])
