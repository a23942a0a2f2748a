"""Shared fixtures."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A private cache shared by a module's tests (their model and embedding caches persist)."""
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("home")
        patch.setenv("LIFELORA_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def data(home, tmp_path_factory):
    """A small synthetic prepared dataset (tests/synthetic.py); modules may define their own `data`."""
    from synthetic import synthetic_prepared

    return synthetic_prepared(tmp_path_factory.mktemp("prepared") / "ml-synthetic", name="ml-synthetic")


@pytest.fixture
def lifelora_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty cache: $LIFELORA_HOME points at tmp_path/home (not created)."""
    home = tmp_path / "home"
    monkeypatch.setenv("LIFELORA_HOME", str(home))
    return home


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run `lifelora ARGS...` through `lifelora.cli.main` (which maps LifeloraError to exit 2)."""
    from lifelora.cli import main

    def run(*args: str | Path) -> CliResult:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["lifelora", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run
