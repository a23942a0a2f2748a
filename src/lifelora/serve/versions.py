"""Numbered adapter versions of one served run, and which of them is active.

```
RUN_DIR/versions/1/adapter/...      a copy of a saved adapter directory
RUN_DIR/versions/1/version.json     {"number": 1, "created": ..., "files": {relative path: sha256}, **meta}
RUN_DIR/versions/active.json        {"active": N, "previous": [earlier active numbers, oldest first], "changed": ...}
```

A version is copied into a hidden temporary folder beside the numbered ones and renamed into place only when
complete, so a crash never leaves half a version (a leftover temporary folder is not a version). Choosing
the number, the rename, and every change of `active.json` happen under an exclusive lock on
`versions/.lock`, so concurrent publishers get distinct numbers and no activation is lost. Published
versions are never changed; `verify` recomputes their checksums. Only files and JSON: no torch here.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from lifelora.errors import LifeloraError
from lifelora.io import read_json, write_json

RESERVED_KEYS = ("number", "created", "files")
_CHUNK = 1 << 20


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    """Every file under `folder` (nested folders too), as sorted paths relative to it."""
    return sorted(path.relative_to(folder) for path in folder.rglob("*") if path.is_file())


def _read(path: Path) -> dict:
    try:
        value = read_json(path)
    except ValueError as exc:
        raise LifeloraError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise LifeloraError(f"{path}: expected a JSON object")
    return value


class VersionStore:
    """The adapter versions under `run_dir/versions` (created by the first `publish`)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / "versions"

    # --- reading --------------------------------------------------------------------------------------

    def _version_dir(self, number: int) -> Path:
        return self.root / str(number)

    def _numbered(self) -> list[int]:
        """Every numbered entry, complete or not: the next number must not collide with any of them."""
        if not self.root.is_dir():
            return []
        return sorted(int(p.name) for p in self.root.iterdir() if p.name.isdigit())

    def numbers(self) -> list[int]:
        """The published versions, sorted (temporary folders of unfinished publishes are not versions)."""
        return [n for n in self._numbered() if (self._version_dir(n) / "version.json").is_file()]

    def info(self, number: int) -> dict:
        """The version's `version.json`."""
        path = self._version_dir(number) / "version.json"
        if not path.is_file():
            have = ", ".join(map(str, self.numbers())) or "none"
            raise LifeloraError(f"version {number}: no such version (have {have})")
        return _read(path)

    def adapter_dir(self, number: int) -> Path:
        return self._version_dir(number) / "adapter"

    def verify(self, number: int) -> None:
        """Recompute the version's checksums: a changed, missing or extra file is an error naming it."""
        recorded = self.info(number).get("files")
        if not isinstance(recorded, dict):
            raise LifeloraError(f"{self._version_dir(number) / 'version.json'}: no files recorded")
        folder = self.adapter_dir(number)
        for name, digest in recorded.items():
            path = folder / name
            if not path.is_file():
                raise LifeloraError(f"{path}: missing from version {number} (it was published with it)")
            if sha256_of(path) != digest:
                raise LifeloraError(f"{path}: changed since version {number} was published (sha256 differs)")
        extra = [p for p in _files(folder) if p.as_posix() not in recorded] if folder.is_dir() else []
        if extra:
            raise LifeloraError(f"{folder / extra[0]}: not part of version {number} as published")

    def active_state(self) -> dict | None:
        """The content of `active.json`; None before any version was activated."""
        path = self.root / "active.json"
        if not path.is_file():
            return None
        state = _read(path)
        if not isinstance(state.get("active"), int) or not isinstance(state.get("previous"), list):
            raise LifeloraError(f'{path}: expected {{"active": N, "previous": [...]}}')
        return state

    def active(self) -> int | None:
        state = self.active_state()
        return None if state is None else state["active"]

    def listing(self) -> list[dict]:
        """Every version's info, with `"active": bool`."""
        active = self.active()
        return [{**self.info(n), "active": n == active} for n in self.numbers()]

    # --- writing --------------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive across processes (flock); not re-entrant: take it once per operation."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = (self.root / ".lock").open("a")
        except OSError as exc:
            raise LifeloraError(f"{self.root}: cannot write here ({exc.strerror or exc})") from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _temp_dir(self) -> Path:
        """A new hidden folder beside the versions (0777 less the umask, like any other output)."""
        while True:
            tmp = self.root / f".publish-{secrets.token_hex(4)}.tmp"
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                tmp.mkdir(0o777)
                return tmp
            except FileExistsError:
                continue
            except OSError as exc:
                raise LifeloraError(f"{self.root}: cannot write here ({exc.strerror or exc})") from None

    def publish(self, adapter_dir: Path, meta: dict, activate: bool = False) -> int:
        """Copy a saved adapter directory in as the next version (max + 1); returns its number."""
        adapter_dir = Path(adapter_dir)
        if not adapter_dir.is_dir():
            raise LifeloraError(f"{adapter_dir}: not a directory (expected a saved adapter)")
        reserved = [key for key in RESERVED_KEYS if key in meta]
        if reserved:
            raise LifeloraError(f"meta: {', '.join(reserved)} is set by publish, not by the caller")
        tmp = self._temp_dir()
        try:
            # the copy and the checksums are outside the lock: other publishers wait only for the rename
            shutil.copytree(adapter_dir, tmp / "adapter")
            files = {p.as_posix(): sha256_of(tmp / "adapter" / p) for p in _files(tmp / "adapter")}
            with self._locked():
                number = max(self._numbered(), default=0) + 1
                write_json(
                    tmp / "version.json", {"number": number, "created": _now(), "files": files, **meta}
                )
                os.rename(tmp, self._version_dir(number))
                if activate:
                    self._activate_locked(number)
        except OSError as exc:
            raise LifeloraError(f"{adapter_dir}: cannot publish it as a version ({exc})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return number

    def _write_active(self, number: int, previous: list[int]) -> None:
        write_json(self.root / "active.json", {"active": number, "previous": previous, "changed": _now()})

    def _activate_locked(self, number: int) -> None:
        """Make `number` active (the lock held); the one active so far goes onto `previous`."""
        state = self.active_state()
        if state is None:
            self._write_active(number, [])
        elif state["active"] != number:  # re-activating the active version changes nothing
            self._write_active(number, [*state["previous"], state["active"]])

    def activate(self, number: int) -> None:
        """Verify the version, then make it the active one."""
        self.verify(number)  # versions never change once published: safe outside the lock
        with self._locked():
            self._activate_locked(number)

    def rollback(self) -> int:
        """Re-activate the version active before the current one (dropping the current one from the
        history); returns its number."""
        if self.active_state() is None:
            raise LifeloraError(f"{self.root}: no earlier active version to roll back to")
        with self._locked():
            state = self.active_state()
            if not state or not state["previous"]:
                raise LifeloraError(f"{self.root}: no earlier active version to roll back to")
            *previous, number = state["previous"]
            self.verify(number)
            self._write_active(number, previous)
        return number
