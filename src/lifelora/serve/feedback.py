"""A durable feedback log: the server appends rating and click events, an `update` reads them back by sequence.

SQLite (stdlib) by default; PostgreSQL through psycopg for a log that several machines share. A batch is
committed before `record` returns, so an acknowledged event survives a crash; client-chosen event ids make
retries idempotent; sequence numbers are never reused, so a reader resumes after the last one it consumed.
"""

from __future__ import annotations

import math
import numbers
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import polars as pl

from lifelora.errors import LifeloraError

SCHEMA_VERSION: int = 1
KINDS = ("rating", "click")
COLUMNS: dict[str, type[pl.DataType]] = {
    "seq": pl.Int64,
    "event_id": pl.Utf8,
    "user": pl.Utf8,
    "item": pl.Utf8,
    "kind": pl.Utf8,
    "value": pl.Float64,
    "timestamp": pl.Int64,
    "received": pl.Float64,
}
POSTGRES_SCHEMES = ("postgresql://", "postgres://")

# `user` is reserved in PostgreSQL and `timestamp` is a type name, so the tables say user_id and event_time
_FIELDS = "event_id, user_id, item_id, kind, value, event_time"
_SELECT = f"SELECT seq, {_FIELDS}, received FROM feedback"
_FEEDBACK_TABLE = """CREATE TABLE IF NOT EXISTS feedback (
    seq {seq},
    event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    event_time BIGINT NOT NULL,
    received DOUBLE PRECISION NOT NULL
)"""
_INT64 = 2**63
_PG_WRITE_LOCK = 0x11FE10A  # advisory lock key: writers take turns, so seq order is commit order


@dataclass(frozen=True)
class FeedbackEvent:
    """One piece of feedback as the client sent it; `event_id` is the client's, so a retry is recognised."""

    event_id: str
    user: str
    item: str
    kind: str
    value: float
    timestamp: int


def _row(event: FeedbackEvent) -> tuple[str, str, str, str, float, int]:
    """The event's stored fields in table order, or a LifeloraError naming the field that is wrong."""
    name = f"feedback event {event.event_id!r}" if isinstance(event.event_id, str) else "feedback event"
    for field in ("event_id", "user", "item"):
        value = getattr(event, field)
        if not isinstance(value, str) or not value.strip():
            raise LifeloraError(f"{name}: `{field}` must be a non-empty string, got {value!r}")
    if event.kind not in KINDS:
        raise LifeloraError(f"{name}: `kind` is {event.kind!r}, expected one of {', '.join(KINDS)}")
    if not isinstance(event.value, numbers.Real) or not math.isfinite(event.value):
        raise LifeloraError(f"{name}: `value` must be a finite number, got {event.value!r}")
    if event.kind == "click" and event.value not in (0, 1):
        raise LifeloraError(f"{name}: `value` of a click must be 1 (clicked) or 0 (not), got {event.value!r}")
    stamp = event.timestamp
    if isinstance(stamp, bool) or not isinstance(stamp, numbers.Integral) or not -_INT64 <= stamp < _INT64:
        raise LifeloraError(f"{name}: `timestamp` must be whole seconds since the epoch, got {stamp!r}")
    return event.event_id, event.user, event.item, event.kind, float(event.value), int(stamp)


def _frame(rows: Sequence[Sequence[Any]]) -> pl.DataFrame:
    """Stored rows (seq, fields, received) as a frame with fixed columns and dtypes, also when empty."""
    return pl.DataFrame([tuple(r) for r in rows], schema=COLUMNS, orient="row")


class _SqlFeedbackLog(ABC):
    """The log's API over one DB-API connection; a subclass opens it and says how a write transaction runs.

    Every use of the connection holds one lock, so a threaded server may share the log.
    """

    def __init__(self, name: str, connection: Any) -> None:
        self._name = name  # names the file or URL in errors
        self._conn = connection
        self._lock = threading.Lock()
        self._closed = False

    def _sql(self, sql: str) -> str:
        """The statement in the driver's parameter style (written with `?`)."""
        return sql

    @abstractmethod
    def _writing(self) -> AbstractContextManager[None]:
        """One write transaction, committed on leaving, rolled back on an exception."""

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(self._sql(sql), tuple(params))

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._execute(sql, params).fetchall()

    @contextmanager
    def _using(self) -> Iterator[None]:
        with self._lock:
            if self._closed:
                raise LifeloraError(f"{self._name}: the feedback log was closed")
            yield

    def _create_or_check_schema(self, seq_column: str) -> None:
        """Create the tables in a new log; refuse a log written with another schema version."""
        with self._using(), self._writing():
            self._execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO NOTHING",
                (str(SCHEMA_VERSION),),
            )
            ((version,),) = self._rows("SELECT value FROM meta WHERE key = 'schema_version'")
            if str(version) != str(SCHEMA_VERSION):
                raise LifeloraError(
                    f"{self._name}: feedback log schema version {version}, this lifelora reads version "
                    f"{SCHEMA_VERSION}"
                )
            self._execute(_FEEDBACK_TABLE.format(seq=seq_column))
            self._execute("CREATE INDEX IF NOT EXISTS feedback_user ON feedback (user_id, seq)")

    def record(self, events: Sequence[FeedbackEvent]) -> list[bool]:
        """Store a batch in one transaction, committed before returning (so the caller may acknowledge).

        True: stored now; False: this event_id was stored before with the same content (a retry). The same
        event_id with other content raises LifeloraError, and nothing of the batch is stored.
        """
        rows = [_row(event) for event in events]
        if not rows:
            return []
        received = time.time()
        stored = []
        with self._using(), self._writing():
            for row in rows:
                inserted = self._execute(
                    f"INSERT INTO feedback ({_FIELDS}, received) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (event_id) DO NOTHING",
                    (*row, received),
                )
                if inserted.rowcount == 1:
                    stored.append(True)
                    continue
                (before,) = self._rows(f"SELECT {_FIELDS} FROM feedback WHERE event_id = ?", (row[0],))
                if tuple(before) != row:
                    raise LifeloraError(f"event_id {row[0]!r} was recorded before with other content")
                stored.append(False)
        return stored

    def last_seq(self) -> int:
        """The highest sequence number stored, 0 when the log is empty: where a reader is caught up."""
        with self._using():
            return int(self._rows("SELECT COALESCE(MAX(seq), 0) FROM feedback")[0][0])

    def since(self, seq: int, until: int | None = None) -> pl.DataFrame:
        """The events after sequence number `seq` (up to and including `until`), in sequence order."""
        sql, params = f"{_SELECT} WHERE seq > ?", [int(seq)]
        if until is not None:
            sql, params = f"{sql} AND seq <= ?", [*params, int(until)]
        with self._using():
            return _frame(self._rows(f"{sql} ORDER BY seq", params))

    def recent(self, n: int = 20, user: str | None = None) -> pl.DataFrame:
        """The `n` newest events (of one user if given), newest first: for a look at what came in."""
        if n < 0:
            raise LifeloraError(f"recent feedback: n must be 0 or more, got {n}")
        where, params = ("WHERE user_id = ? ", [user]) if user is not None else ("", [])
        with self._using():
            return _frame(self._rows(f"{_SELECT} {where}ORDER BY seq DESC LIMIT ?", [*params, int(n)]))

    def count(self) -> int:
        """How many events are stored."""
        with self._using():
            return int(self._rows("SELECT COUNT(*) FROM feedback")[0][0])

    def close(self) -> None:
        """Close the connection; closing twice is harmless."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> _SqlFeedbackLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class FeedbackLog(_SqlFeedbackLog):
    """The log in one SQLite file, in WAL mode: the server writes while an `update` process reads.

    synchronous=FULL makes each commit durable before `record` returns; AUTOINCREMENT never reuses a
    sequence number, even after the newest rows are deleted.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=5.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as error:
            raise LifeloraError(f"{self.path}: cannot open the feedback log ({error})") from None
        super().__init__(str(self.path), connection)
        try:
            self._setup()
        except sqlite3.DatabaseError as error:
            connection.close()
            raise LifeloraError(f"{self.path}: not a usable feedback log (SQLite: {error})") from None
        except BaseException:
            connection.close()
            raise

    def _setup(self) -> None:
        self._execute("PRAGMA busy_timeout = 5000")
        ((mode,),) = self._rows("PRAGMA journal_mode = WAL")
        if str(mode).lower() != "wal":
            raise LifeloraError(f"{self.path}: SQLite cannot use WAL journal mode here (it stays {mode!r})")
        self._execute("PRAGMA synchronous = FULL")
        tables = {name for (name,) in self._rows("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "meta" not in tables:
            raise LifeloraError(
                f"{self.path}: a SQLite database but not a feedback log (it has no `meta` table)"
            )
        self._create_or_check_schema("INTEGER PRIMARY KEY AUTOINCREMENT")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front: no deadlock between two processes upgrading a read
        self._execute("BEGIN IMMEDIATE")
        try:
            yield
            self._execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._execute("ROLLBACK")
            raise

    def __repr__(self) -> str:
        return f"FeedbackLog({str(self.path)!r})"


def _redacted(url: str) -> str:
    """The URL without its password, for error messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}").geturl()


class PostgresFeedbackLog(_SqlFeedbackLog):
    """The log in a PostgreSQL database (tables `meta` and `feedback`), for servers on several machines.

    Writers take one advisory lock per transaction, so sequence numbers become visible in order and a
    reader that resumes after `last_seq()` never skips an event committed late with a lower number.
    """

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise LifeloraError("--feedback URL: PostgreSQL needs `pip install psycopg[binary]`") from None
        self.url = url
        name = f"--feedback {_redacted(url)}"
        try:
            connection = psycopg.connect(url, autocommit=True)
        except psycopg.Error as error:
            raise LifeloraError(f"{name}: cannot connect ({str(error).strip().splitlines()[0]})") from None
        super().__init__(name, connection)
        try:
            self._create_or_check_schema("BIGSERIAL PRIMARY KEY")
        except psycopg.Error as error:
            connection.close()
            raise LifeloraError(
                f"{name}: not a usable feedback log ({str(error).strip().splitlines()[0]})"
            ) from None
        except BaseException:
            connection.close()
            raise

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._conn.transaction():
            self._execute("SELECT pg_advisory_xact_lock(?)", (_PG_WRITE_LOCK,))
            yield

    def __repr__(self) -> str:
        return f"PostgresFeedbackLog({_redacted(self.url)!r})"


def open_log(target: str | Path) -> FeedbackLog | PostgresFeedbackLog:
    """The log that `--feedback` names: a file path (SQLite), or a postgresql:// URL."""
    text = str(target)
    if isinstance(target, str) and text.startswith(POSTGRES_SCHEMES):
        return PostgresFeedbackLog(text)
    if isinstance(target, str) and "://" in text:
        scheme = text.split("://", 1)[0]
        raise LifeloraError(
            f"--feedback {_redacted(text)}: unknown URL scheme {scheme!r}; give a file path or a postgresql:// URL"
        )
    return FeedbackLog(target)
