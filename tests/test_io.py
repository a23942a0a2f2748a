"""The atomic-write helpers: outputs follow the umask like any other tool's, and unusable targets are
one-line errors that leave nothing behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lifelora.errors import LifeloraError
from lifelora.io import atomic_dir, atomic_path, write_json


@pytest.fixture
def umask_002():
    old = os.umask(0o002)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_file_follows_the_umask(tmp_path, umask_002):
    write_json(tmp_path / "a" / "meta.json", {"x": 1})
    assert mode(tmp_path / "a" / "meta.json") == 0o664
    assert mode(tmp_path / "a") == 0o775


def test_atomic_dir_follows_the_umask(tmp_path, umask_002):
    target = tmp_path / "run"
    with atomic_dir(target) as tmp:
        write_json(tmp / "meta.json", {})
    assert mode(target) == 0o775
    assert mode(target / "meta.json") == 0o664
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_atomic_path_onto_a_directory_is_an_error(tmp_path):
    (tmp_path / "meta.json").mkdir()
    with pytest.raises(LifeloraError, match=r"meta\.json: is a directory, expected a file"):
        write_json(tmp_path / "meta.json", {})
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]


def test_atomic_path_below_a_file_is_an_error(tmp_path):
    (tmp_path / "notes").write_text("x")
    target = tmp_path / "notes" / "deeper" / "meta.json"
    with pytest.raises(LifeloraError, match=r"notes is a file, not a directory"), atomic_path(target):
        pass
    assert [p.name for p in tmp_path.iterdir()] == ["notes"]
