"""Typed configs from YAML files plus `key=value` overrides; errors name the key and the problem."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, Tag, ValidationError

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


def _members(annotation) -> list[tuple[str | None, type[BaseModel]]]:
    """The config classes a field's annotation allows, through Optional, unions and Annotated, each with
    its discriminator tag (None without one)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(None, annotation)]
    if get_origin(annotation) is Annotated:
        tags = [m.tag for m in annotation.__metadata__ if isinstance(m, Tag)]
        inner = _members(get_args(annotation)[0])
        return [(tags[0], cls) for _, cls in inner] if tags else inner
    return [member for arg in get_args(annotation) for member in _members(arg)]


def _known_keys(model: type[BaseModel], loc: tuple) -> set[str]:
    """The keys the section holding `loc`'s last key accepts (a union's members narrowed by its tag)."""
    members = [(None, model)]
    for part in loc[:-1]:
        tagged = [(tag, cls) for tag, cls in members if tag == part]
        if tagged:  # pydantic's loc names the member of a discriminated union
            members = tagged
            continue
        fields = [cls.model_fields[part] for _, cls in members if part in cls.model_fields]
        members = [member for field in fields for member in _members(field.annotation)]
    return {name for _, cls in members for name in cls.model_fields}


def _message(model: type[BaseModel], error: dict, where: str) -> str:
    """pydantic's message, except that an unknown key gets the closest known one (or the known ones)."""
    if error["type"] != "extra_forbidden":
        return error["msg"]
    known = _known_keys(model, error["loc"])
    section = where.rpartition(".")[0]
    prefix = f"{section}." if section else ""
    close = difflib.get_close_matches(where.rpartition(".")[2], known, n=1)
    if close:
        return f"unknown key; did you mean {prefix}{close[0]}?"
    return f"unknown key; {section or 'the config'} takes {', '.join(sorted(known))}"


def _source(where: str, overrides: dict[str, str], path: Path | None) -> str:
    """Who set the bad value: the override of that key, of a section holding it or of a key inside it
    (the last one given), else the file."""
    for key in sorted(overrides, key=len, reverse=True):
        if where == key:
            return f"override {overrides[key]}: "
        if where.startswith(f"{key}."):
            return f"override {overrides[key]}: {where}: "
    inside = [key for key in overrides if key.startswith(f"{where}.")]
    if inside:
        return f"override {overrides[inside[-1]]}: {where}: "
    return f"{path}: {where}: " if path else f"{where}: "


def load_config(
    model: type[ConfigT],
    path: Path | None = None,
    overrides: list[str] | None = None,
    base: dict | None = None,
) -> ConfigT:
    """`base` (e.g. a named preset), then the YAML file, then the overrides, validated by `model`. An error
    names the override or the file that set the bad value, and an unknown key the closest known one."""
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
    applied: dict[str, str] = {}
    for assignment in overrides or []:
        apply_override(tree, assignment)
        applied[assignment.partition("=")[0].strip()] = assignment
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(_user_path(tree, first["loc"])) or "config"
        raise LifeloraError(f"{_source(where, applied, path)}{_message(model, first, where)}") from None
