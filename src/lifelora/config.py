"""Typed configs from YAML files plus `key=value` overrides; errors name the key and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from lifelora.errors import LifeloraError

ConfigT = TypeVar("ConfigT", bound=BaseModel)
SHIPPED_CONFIGS = Path(__file__).parent / "configs"


def shipped_config(name: str | Path) -> Path:
    """A config shipped with lifelora (`llm/reclora-ml1m.yaml`, also written `configs/llm/...`)."""
    parts = Path(name).parts
    path = SHIPPED_CONFIGS.joinpath(*(parts[1:] if parts[:1] == ("configs",) else parts))
    if not path.is_file():
        raise LifeloraError(f"{name}: config file not found")
    return path


def config_path(path: str | Path) -> Path:
    """`path` itself when it exists, else the shipped config of that name, so `-c configs/llm/x.yaml`
    works from any directory and from an installed package."""
    return Path(path) if Path(path).is_file() else shipped_config(path)


def apply_override(tree: dict, assignment: str) -> None:
    """`train.lr=5e-4` sets tree['train']['lr'] = 0.0005 (the value is parsed as YAML)."""
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise LifeloraError(f"override {assignment!r} is not KEY=VALUE (e.g. train.lr=5e-4)")
    *parents, leaf = key.strip().split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise LifeloraError(f"override {assignment!r}: {part!r} is not a section")
        node = child
    node[leaf] = yaml.safe_load(value) if value.strip() else None


def _user_path(tree: dict, loc: tuple) -> list[str]:
    """The error's location as the user wrote it: without the tags pydantic inserts for the
    member of a discriminated union (`adapter.personalized.r` → `adapter.r`)."""
    path, node = [], tree
    for depth, part in enumerate(loc):
        inner = depth < len(loc) - 1
        if inner and isinstance(node, dict) and isinstance(part, str) and part not in node:
            continue
        path.append(str(part))
        node = node.get(part) if isinstance(node, dict) else None
    return path


def load_config(
    model: type[ConfigT],
    path: Path | None = None,
    overrides: list[str] | None = None,
    base: dict | None = None,
) -> ConfigT:
    """`base` (e.g. a named preset), then the YAML file, then the overrides, validated by `model`."""
    tree: dict = dict(base or {})
    if path is not None:
        path = config_path(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:
            raise LifeloraError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise LifeloraError(f"{path}: the top level must be a mapping")
        tree.update(loaded)
    for assignment in overrides or []:
        apply_override(tree, assignment)
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(_user_path(tree, first["loc"])) or "config"
        source = f"{path}: " if path else ""
        raise LifeloraError(f"{source}{where}: {first['msg']}") from None
