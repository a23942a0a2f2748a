"""Adapter versions of a served run (lifelora.serve.versions) and `lifelora versions`."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lifelora.errors import LifeloraError
from lifelora.serve.versions import VersionStore


def _adapter(folder: Path, seed: str = "a") -> Path:
    """A stand-in for a saved adapter directory, with a nested folder."""
    (folder / "nested" / "deeper").mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "seed": seed}))
    (folder / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 4 + seed.encode())
    (folder / "nested" / "deeper" / "lens.bin").write_bytes(b"lens " + seed.encode())
    return folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def store(tmp_path) -> VersionStore:
    return VersionStore(tmp_path / "run")


def test_publish_copies_the_adapter_records_checksums_and_keeps_meta(tmp_path, store):
    assert store.numbers() == [] and store.active() is None and store.active_state() is None
    assert not store.root.exists()  # created lazily
    first = _adapter(tmp_path / "a1", "a")
    meta = {"period": 3, "task": "next-item", "metrics": {"ndcg@10": 0.125}, "note": "initial"}
    assert store.publish(first, meta) == 1
    assert store.publish(_adapter(tmp_path / "a2", "b"), {"period": 4}) == 2
    assert store.numbers() == [1, 2]
    info = store.info(1)
    assert info["number"] == 1 and info["created"].endswith("+00:00")
    assert {k: info[k] for k in meta} == meta
    assert info["files"] == {
        "adapter_config.json": _sha(first / "adapter_config.json"),
        "adapter_model.safetensors": _sha(first / "adapter_model.safetensors"),
        "nested/deeper/lens.bin": _sha(first / "nested" / "deeper" / "lens.bin"),
    }
    copied = store.adapter_dir(1) / "nested" / "deeper" / "lens.bin"
    assert copied.read_bytes() == b"lens a" and store.adapter_dir(1) == store.root / "1" / "adapter"
    assert store.info(2)["period"] == 4 and store.active() is None  # publish alone activates nothing
    store.verify(1)
    store.verify(2)
    with pytest.raises(LifeloraError, match="number is set by publish"):
        store.publish(first, {"number": 7})
    with pytest.raises(LifeloraError, match="not a directory"):
        store.publish(tmp_path / "missing", {})
    assert store.numbers() == [1, 2]


def test_activate_and_rollback_keep_a_history(tmp_path, store):
    for i in range(3):
        store.publish(_adapter(tmp_path / f"a{i}", str(i)), {})
    store.activate(1)
    assert store.active_state()["previous"] == [] and store.active() == 1
    store.activate(2)
    store.activate(2)  # already active: no push
    store.activate(3)
    state = store.active_state()
    assert state["active"] == 3 and state["previous"] == [1, 2] and state["changed"].endswith("+00:00")
    assert [row["active"] for row in store.listing()] == [False, False, True]
    assert store.rollback() == 2
    assert store.active_state()["previous"] == [1]
    assert store.rollback() == 1
    with pytest.raises(LifeloraError, match="no earlier active version to roll back to"):
        store.rollback()
    assert store.active() == 1
    assert store.publish(_adapter(tmp_path / "a9", "9"), {}, activate=True) == 4
    assert store.active_state()["active"] == 4 and store.active_state()["previous"] == [1]


def test_rollback_without_any_activation_is_an_error(tmp_path, store):
    with pytest.raises(LifeloraError, match="no earlier active version to roll back to"):
        store.rollback()
    assert not store.root.exists()
    store.publish(_adapter(tmp_path / "a"), {}, activate=True)
    with pytest.raises(LifeloraError, match="no earlier active version to roll back to"):
        store.rollback()


def test_unknown_and_tampered_versions_are_refused_by_name(tmp_path, store):
    with pytest.raises(LifeloraError, match=r"version 1: no such version \(have none\)"):
        store.activate(1)
    store.publish(_adapter(tmp_path / "a1", "a"), {}, activate=True)
    store.publish(_adapter(tmp_path / "a2", "b"), {})
    with pytest.raises(LifeloraError, match=r"^version 5: no such version \(have 1, 2\)$"):
        store.activate(5)
    with pytest.raises(LifeloraError, match="no such version"):
        store.info(5)

    weights = store.adapter_dir(2) / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[10] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(LifeloraError, match=r"2/adapter/adapter_model\.safetensors: changed since version 2"):
        store.activate(2)
    assert store.active() == 1 and store.active_state()["previous"] == []

    lens = store.adapter_dir(1) / "nested" / "deeper" / "lens.bin"
    lens.unlink()
    with pytest.raises(LifeloraError, match=r"deeper/lens\.bin: missing from version 1"):
        store.verify(1)
    lens.write_bytes(b"lens a")
    store.verify(1)
    (store.adapter_dir(1) / "extra.bin").write_bytes(b"x")
    with pytest.raises(LifeloraError, match=r"extra\.bin: not part of version 1"):
        store.verify(1)


def test_rollback_to_a_tampered_version_changes_nothing(tmp_path, store):
    store.publish(_adapter(tmp_path / "a1", "a"), {}, activate=True)
    store.publish(_adapter(tmp_path / "a2", "b"), {}, activate=True)
    (store.adapter_dir(1) / "adapter_config.json").write_text("{}")
    with pytest.raises(LifeloraError, match=r"adapter_config\.json: changed since version 1"):
        store.rollback()
    assert store.active_state()["active"] == 2 and store.active_state()["previous"] == [1]


def test_leftover_temporary_and_unfinished_folders_are_not_versions(tmp_path, store):
    store.publish(_adapter(tmp_path / "a1"), {})
    leftover = store.root / ".publish-deadbeef.tmp"
    shutil.copytree(store.root / "1", leftover)
    (store.root / "2").mkdir()  # a numbered folder without version.json
    assert store.numbers() == [1]
    assert [row["number"] for row in store.listing()] == [1]
    with pytest.raises(LifeloraError, match=r"version 2: no such version \(have 1\)"):
        store.activate(2)
    assert store.publish(_adapter(tmp_path / "a3"), {}) == 3  # never onto the unfinished 2
    assert store.numbers() == [1, 3] and leftover.is_dir()


def test_a_crash_mid_publish_leaves_no_version_and_no_activation_change(tmp_path, store, monkeypatch):
    import lifelora.serve.versions as versions

    store.publish(_adapter(tmp_path / "a1"), {}, activate=True)
    before = (store.root / "active.json").read_text()
    real_copy = shutil.copy2

    def copy_then_crash(src, dst, *args, **kwargs):
        real_copy(src, dst)
        raise RuntimeError("disk pulled out")

    def copytree_crashing(src, dst, **kwargs):
        return real_copytree(src, dst, copy_function=copy_then_crash)

    real_copytree = shutil.copytree
    monkeypatch.setattr(versions.shutil, "copytree", copytree_crashing)
    with pytest.raises(RuntimeError, match="disk pulled out"):
        store.publish(_adapter(tmp_path / "a2"), {"note": "crash"}, activate=True)
    monkeypatch.undo()
    assert store.numbers() == [1]
    assert (store.root / "active.json").read_text() == before
    assert sorted(p.name for p in store.root.iterdir()) == [".lock", "1", "active.json"]  # temp removed

    def no_hash(path):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(versions, "sha256_of", no_hash)
    with pytest.raises(LifeloraError, match="cannot publish it as a version"):
        store.publish(_adapter(tmp_path / "a3"), {}, activate=True)
    monkeypatch.undo()
    assert store.numbers() == [1] and (store.root / "active.json").read_text() == before
    assert store.publish(_adapter(tmp_path / "a4"), {}) == 2


PUBLISHER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from lifelora.serve.versions import VersionStore

    run, adapter, writer, gate = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    (gate / writer).touch()
    while not (gate / "go").exists():  # all writers start together, imports done
        time.sleep(0.005)
    store = VersionStore(run)
    print(" ".join(str(store.publish(adapter, {"writer": writer, "i": i}, activate=True)) for i in range(5)))
    """
)


def test_concurrent_publishers_get_distinct_numbers(tmp_path):
    import time

    adapter = _adapter(tmp_path / "a")
    run, gate = tmp_path / "run", tmp_path / "gate"
    gate.mkdir()
    writers = [f"w{k}" for k in range(4)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, str(run), str(adapter), writer, str(gate)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for writer in writers
    ]
    deadline = time.monotonic() + 60
    while not all((gate / w).exists() for w in writers) and time.monotonic() < deadline:
        time.sleep(0.01)
    (gate / "go").touch()
    got = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        got += [int(n) for n in out.split()]
    assert sorted(got) == list(range(1, 21))
    store = VersionStore(run)
    assert store.numbers() == list(range(1, 21))
    assert sorted((row["writer"], row["i"]) for row in store.listing()) == [
        (f"w{k}", i) for k in range(4) for i in range(5)
    ]
    assert all(store.info(n)["number"] == n for n in store.numbers())
    state = store.active_state()
    # numbering and activation share the lock: activations happened in number order, none lost
    assert state["active"] == 20 and state["previous"] == list(range(1, 20))


# --- the command line ---------------------------------------------------------------------------------


@pytest.fixture
def cli():
    """`lifelora versions ...` on an app that adds the sub-app as the top-level CLI does."""
    from typer.testing import CliRunner

    from lifelora.cli import versions
    from lifelora.cli.common import App

    app = App(pretty_exceptions_enable=False, add_completion=False)
    app.add_typer(versions.app, name="versions")

    def invoke(*args):
        return CliRunner().invoke(app, ["versions", *map(str, args)], env={"COLUMNS": "200"})

    return invoke


def test_cli_list_activate_rollback(tmp_path, cli):
    store = VersionStore(tmp_path / "run")
    meta = {"period": 1, "task": "next-item", "metrics": {"ndcg@10": 0.12345, "hr@10": 0.25}}
    store.publish(_adapter(tmp_path / "a1", "a"), meta, activate=True)
    store.publish(_adapter(tmp_path / "a2", "b"), {"period": 2, "task": "next-item", "decision": "keep"})

    result = cli("list", store.run_dir)
    assert result.exit_code == 0, result.output
    assert "ndcg@10 0.1235 · hr@10 0.25" in result.output and "keep" in result.output
    first = next(line for line in result.output.splitlines() if "ndcg@10" in line)
    assert "●" in first and "next-item" in first

    result = cli("activate", store.run_dir, 2)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "version 2 is active (was 1)"
    assert cli("activate", store.run_dir, 2).output.strip() == "version 2 is already active"

    result = cli("list", store.run_dir, "--json")
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["number"], r["active"], r["period"]) for r in rows] == [(1, False, 1), (2, True, 2)]
    assert rows[0]["metrics"] == meta["metrics"] and "adapter_config.json" in rows[0]["files"]

    result = cli("rollback", store.run_dir)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "version 1 is active (rolled back from 2)"
    assert store.active() == 1


def test_cli_errors_are_lifelora_errors(tmp_path, cli):
    for args in (["list", tmp_path], ["activate", tmp_path, 1], ["rollback", tmp_path]):
        result = cli(*args)
        assert isinstance(result.exception, LifeloraError), result.output
        assert str(result.exception) == f"{tmp_path}: no adapter versions (serve or publish one first)"
    assert not (tmp_path / "versions").exists()

    store = VersionStore(tmp_path / "run")
    store.publish(_adapter(tmp_path / "a1"), {})
    result = cli("activate", store.run_dir, 3)
    assert isinstance(result.exception, LifeloraError)
    assert str(result.exception) == "version 3: no such version (have 1)"
    result = cli("rollback", store.run_dir)
    assert isinstance(result.exception, LifeloraError) and "no earlier active version" in str(
        result.exception
    )
    result = cli("list", store.run_dir)
    assert result.exit_code == 0 and "period" not in result.output  # columns only when some version has them
