"""The feedback log keeps every acknowledged event, once, in sequence order: through retries, bad input,
concurrent writers and a SIGKILL.

The tests taking `target` run on SQLite, and also on PostgreSQL when LIFELORA_TEST_POSTGRES names a scratch
database (its `meta` and `feedback` tables are dropped) and psycopg is installed.
"""

from __future__ import annotations

import math
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import polars as pl
import pytest

from lifelora.errors import LifeloraError
from lifelora.serve.feedback import KINDS, SCHEMA_VERSION, FeedbackEvent, FeedbackLog, open_log

POSTGRES_URL = os.environ.get("LIFELORA_TEST_POSTGRES")
REQUIRED = os.environ.get("LIFELORA_REQUIRE_POSTGRES") == "1"  # scripts/test.sh: fail, never skip
DTYPES = {
    "seq": pl.Int64,
    "event_id": pl.Utf8,
    "user": pl.Utf8,
    "item": pl.Utf8,
    "kind": pl.Utf8,
    "value": pl.Float64,
    "timestamp": pl.Int64,
    "received": pl.Float64,
}


def event(
    event_id: str, user: str = "u1", item: str = "i1", kind: str = "rating", value: float = 4.0, at: int = 0
):
    return FeedbackEvent(event_id, user, item, kind, value, 1_700_000_000 + at)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres",
            marks=pytest.mark.skipif(
                not POSTGRES_URL and not REQUIRED,
                reason="LIFELORA_TEST_POSTGRES names no scratch database (scripts/test-services.sh starts one)",
            ),
        ),
    ]
)
def target(request, tmp_path):
    """What `--feedback` would name: a fresh SQLite file, or the scratch PostgreSQL database emptied."""
    if request.param == "sqlite":
        return tmp_path / "logs" / "feedback.db"  # the folder does not exist yet
    if not POSTGRES_URL:
        pytest.fail("LIFELORA_REQUIRE_POSTGRES=1 but LIFELORA_TEST_POSTGRES names no database")
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS feedback, meta")
    return POSTGRES_URL


def test_round_trip_in_sequence_order(target):
    with open_log(target) as log:
        assert log.count() == 0 and log.last_seq() == 0
        empty = log.since(0)
        assert empty.height == 0 and dict(empty.schema) == DTYPES
        before = time.time()
        assert log.record([event("a", at=1), event("b", user="u2", kind="click", value=1, at=2)]) == [
            True,
            True,
        ]
        assert log.record([event("c", item="i2", value=2.5, at=3)]) == [True]
        assert log.record([]) == []

        frame = log.since(0)
        assert dict(frame.schema) == DTYPES
        assert frame["event_id"].to_list() == ["a", "b", "c"]
        assert frame["seq"].is_sorted() and frame["seq"].n_unique() == 3
        assert frame.drop("seq", "received").row(1) == ("b", "u2", "i1", "click", 1.0, 1_700_000_002)
        assert frame["received"].min() >= before - 1 and frame["received"].max() <= time.time() + 1
        assert log.count() == 3 and log.last_seq() == frame["seq"][-1]

        first, second, last = frame["seq"].to_list()
        assert log.since(first)["event_id"].to_list() == ["b", "c"]
        assert log.since(0, until=second)["event_id"].to_list() == ["a", "b"]
        assert log.since(last).height == 0 and dict(log.since(last).schema) == DTYPES

        assert log.recent(2)["event_id"].to_list() == ["c", "b"]
        assert log.recent(user="u1")["event_id"].to_list() == ["c", "a"]
        assert log.recent(5, user="nobody").height == 0
        assert dict(log.recent(5, user="nobody").schema) == DTYPES
    with open_log(target) as again:  # reopening keeps everything
        assert again.since(0)["event_id"].to_list() == ["a", "b", "c"]


def test_a_retry_is_recognised_and_a_conflicting_batch_stores_nothing(target):
    with open_log(target) as log:
        assert log.record([event("a")]) == [True]
        assert log.record([event("a")]) == [False]
        assert log.record([event("b"), event("a"), event("b")]) == [True, False, False]
        assert log.count() == 2
        last = log.last_seq()

        with pytest.raises(LifeloraError, match="event_id 'a' was recorded before with other content"):
            log.record([event("c"), event("a", value=5.0)])
        assert log.count() == 2 and log.since(last).height == 0  # "c" went with the batch
        with pytest.raises(LifeloraError, match="event_id 'd'"):
            log.record([event("d"), event("d", item="i9")])  # conflicting within one batch
        assert log.count() == 2
        assert log.record([event("c")]) == [True]  # the log still takes writes


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (event("x", kind="like"), "kind"),
        (event("x", kind="click", value=0.5), "value"),
        (event("x", value=math.nan), "value"),
        (event("x", value=math.inf), "value"),
        (event("x", value="4"), "value"),
        (event("", value=1), "event_id"),
        (event("x", user=" "), "user"),
        (event("x", item=""), "item"),
        (FeedbackEvent("x", "u", "i", "rating", 3.0, 1.5), "timestamp"),
    ],
    ids=["kind", "click-value", "nan", "inf", "string-value", "event_id", "user", "item", "timestamp"],
)
def test_bad_events_are_refused_naming_the_field(target, bad, field):
    with open_log(target) as log:
        with pytest.raises(LifeloraError, match=f"`{field}`") as refused:
            log.record([event("fine"), bad])
        assert "\n" not in str(refused.value)
        assert log.count() == 0  # the good event before it is not stored either


def test_kinds_and_schema_version_are_the_documented_ones():
    assert KINDS == ("rating", "click") and SCHEMA_VERSION == 1


def test_sqlite_file_is_in_wal_mode(tmp_path):
    path = tmp_path / "feedback.db"
    with FeedbackLog(path) as log:
        log.record([event("a")])
        reader = sqlite3.connect(path)
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reader.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "1"
        reader.close()


def test_another_connection_sees_what_was_committed(tmp_path):
    """The server writes while an `update` process reads the same file."""
    path = tmp_path / "feedback.db"
    with FeedbackLog(path) as writer, FeedbackLog(path) as reader:
        writer.record([event("a")])
        assert reader.since(0)["event_id"].to_list() == ["a"]
        writer.record([event("b")])
        assert reader.since(reader.since(0)["seq"][0])["event_id"].to_list() == ["b"]


def test_sequence_numbers_are_never_reused(tmp_path):
    path = tmp_path / "feedback.db"
    with FeedbackLog(path) as log:
        log.record([event("a"), event("b")])
        last = log.last_seq()
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM feedback WHERE seq = ?", (last,))
    connection.close()
    with FeedbackLog(path) as log:
        log.record([event("c")])
        assert log.last_seq() > last


def test_another_schema_version_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "feedback.db"
    FeedbackLog(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    connection.close()
    with pytest.raises(LifeloraError, match="schema version 2") as refused:
        FeedbackLog(path)
    assert str(path) in str(refused.value)


def test_a_file_that_is_not_sqlite_is_refused_naming_it(tmp_path):
    path = tmp_path / "feedback.db"
    path.write_bytes(b"this is not a database, just some bytes\x00\x01\x02" * 100)
    with pytest.raises(LifeloraError) as refused:
        FeedbackLog(path)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)


def test_another_sqlite_database_is_refused_naming_it(tmp_path):
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE orders (id INTEGER)")
    connection.close()
    with pytest.raises(LifeloraError, match="not a feedback log") as refused:
        FeedbackLog(path)
    assert str(path) in str(refused.value)


def test_a_closed_log_says_so(tmp_path):
    log = FeedbackLog(tmp_path / "feedback.db")
    log.close()
    log.close()
    with pytest.raises(LifeloraError, match="closed"):
        log.record([event("a")])


CHILD = """
import sys
from lifelora.serve.feedback import FeedbackEvent, open_log
log = open_log(sys.argv[1])
for i in range(1_000_000):
    log.record([FeedbackEvent(f"e{i}", f"u{i % 7}", f"i{i}", "click", float(i % 2), 1_700_000_000 + i)])
    print(f"e{i}", flush=True)  # the acknowledgement: only after record returned
"""


def test_every_acknowledged_event_survives_sigkill(target, tmp_path):
    stderr = tmp_path / "child.err"
    with stderr.open("w") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(target)], stdout=subprocess.PIPE, stderr=err, text=True
        )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in child.stdout:
            lines.put(line.strip())
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    acked: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while len(acked) < 50:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"only {len(acked)} acknowledgements in 60 s")
            assert line is not None, f"the child ended early: {stderr.read_text()}"
            acked.append(line)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    reader.join(timeout=10)
    while (line := lines.get(timeout=10)) is not None:  # acknowledged before the kill, read after it
        acked.append(line)

    with open_log(target) as log:
        stored = log.since(0)["event_id"].to_list()
    assert set(acked) <= set(stored)
    assert len(stored) == len(set(stored)) and len(set(stored) - set(acked)) <= 1  # one committed, unacked


def test_two_threads_lose_nothing(target):
    with open_log(target) as log:
        start = threading.Barrier(2)
        results: dict[str, list[bool]] = {}
        failures: list[BaseException] = []

        def write(name: str) -> None:
            try:
                start.wait()
                results[name] = [
                    flag for i in range(200) for flag in log.record([event(f"{name}{i}", user=name, at=i)])
                ]
            except BaseException as error:
                failures.append(error)

        threads = [threading.Thread(target=write, args=(name,)) for name in ("p", "q")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not failures and all(not t.is_alive() for t in threads)
        assert results["p"] == results["q"] == [True] * 200
        frame = log.since(0)
        assert frame.height == log.count() == 400
        assert set(frame["event_id"]) == {f"{n}{i}" for n in "pq" for i in range(200)}
        assert frame["seq"].is_sorted() and frame["seq"].n_unique() == 400
        for name in "pq":  # each thread's events in the order it wrote them
            assert frame.filter(pl.col("user") == name)["event_id"].to_list() == [
                f"{name}{i}" for i in range(200)
            ]


def test_postgres_without_psycopg_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` raises ImportError
    for url in ("postgresql://user:secret@db.example/feedback", "postgres://db.example/feedback"):
        with pytest.raises(LifeloraError, match=r"pip install psycopg\[binary\]"):
            open_log(url)


def test_an_unknown_url_scheme_is_refused():
    with pytest.raises(LifeloraError, match="'ftp'") as refused:
        open_log("ftp://user:secret@x/feedback.db")
    assert "secret" not in str(refused.value)


def test_open_log_takes_a_path(tmp_path):
    with open_log(tmp_path / "feedback.db") as log, open_log(str(tmp_path / "other.db")) as other:
        assert isinstance(log, FeedbackLog) and isinstance(other, FeedbackLog)
