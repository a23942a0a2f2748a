"""Atomic file writes and the cache location: a crash never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from lifelora.errors import LifeloraError


def lifelora_home() -> Path:
    """The cache root: `$LIFELORA_HOME`, default `~/.cache/lifelora`."""
    return Path(os.environ.get("LIFELORA_HOME", Path.home() / ".cache" / "lifelora")).expanduser()


def history_index_file(dataset: str, retriever: str, k: int) -> Path:
    """Where `lifelora retrieve` writes, and a SIM lens looks by default for, per-split history positions."""
    return lifelora_home() / "retrieval" / f"{dataset}-{retriever}-{k}.safetensors"


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise LifeloraError(f"{path}: cannot create it: {blocker} is a file, not a directory") from None
        raise LifeloraError(f"{path}: cannot create its directory ({exc.strerror or exc})") from None


def _temp_sibling(path: Path, create: Callable[[Path], None]) -> Path:
    """A new hidden sibling of `path`, made by `create` (which fails if the name is taken).

    Not mkstemp/mkdtemp: those make owner-only (0600/0700) files and directories, which would become
    the final outputs; creating with 0666/0777 lets the umask decide, as for any other tool.
    """
    _make_parent(path)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            create(tmp)
            return tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise LifeloraError(f"{path}: cannot write here ({exc.strerror or exc})") from None


def _create_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    if path.is_dir():
        raise LifeloraError(f"{path}: is a directory, expected a file")
    tmp_path = _temp_sibling(path, _create_file)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; it replaces `path` only if the block succeeds."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LifeloraError(f"{path}: exists and is not a directory")
    tmp = _temp_sibling(path, lambda new: new.mkdir(0o777))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_yaml(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(obj, sort_keys=False))


def read_yaml(path: str | Path) -> Any:
    return yaml.safe_load(Path(path).read_text())


def write_parquet(path: str | Path, frame: pl.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)
