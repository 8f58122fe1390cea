"""Connections to the one database: SQLite (embedded default) or PostgreSQL, with the same code above.

On SQLite, writers take the database lock up front (``BEGIN IMMEDIATE``) through a one-connection pool,
so writers queue in-process instead of failing with "database is locked", while readers keep reading
from WAL snapshots on their own connections.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout


class FairLock:
    """A lock handed over in arrival order. ``threading.Lock`` is not fair: a thread that releases and
    re-acquires in a loop (the enrichment worker) can starve the others (the ingest requests) of
    SQLite's single write connection."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Event] = deque()
        self._held = False

    def acquire(self, timeout: float) -> bool:
        with self._mutex:
            if not self._held and not self._waiters:
                self._held = True
                return True
            turn = threading.Event()
            self._waiters.append(turn)
        if turn.wait(timeout):
            return True  # ownership was handed to us by release()
        with self._mutex:
            if turn.is_set():
                return True
            self._waiters.remove(turn)
            return False

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().set()  # straight to the next in line; never unlocked between
            else:
                self._held = False


class DatabaseUnavailable(Exception):
    """The database cannot be reached, is too busy or out of disk; retry later (HTTP 503)."""


def _sqlite_engine(url: str, *, immediate: bool, pool_size: int) -> Engine:
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0 if immediate else 10,
        pool_timeout=60,
        connect_args={"check_same_thread": False, "timeout": 30},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" event, not the driver, open transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: an acknowledged batch survives a power cut, not just a process crash.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.write_engine = _sqlite_engine(url, immediate=True, pool_size=1)
            self.read_engine = _sqlite_engine(url, immediate=False, pool_size=5)
            self._write_turn: FairLock | None = FairLock()
        elif self.dialect == "postgresql":
            self.write_engine = create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
            self.read_engine = self.write_engine
            self._write_turn = None
        else:
            raise ValueError(f"unsupported database {self.dialect!r}: use sqlite:/// or postgresql+psycopg://")

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def writer(self) -> Iterator[Connection]:
        """One write transaction: committed on success, rolled back on any exception."""
        turn = self._write_turn
        if turn is not None and not turn.acquire(timeout=60):
            raise DatabaseUnavailable("timed out waiting for the write lock")
        try:
            with self.write_engine.begin() as conn:
                yield conn
        except (OperationalError, PoolTimeout) as exc:
            if _is_connectivity_error(exc):
                raise DatabaseUnavailable(str(exc.__class__.__name__)) from exc
            raise
        finally:
            if turn is not None:
                turn.release()

    @contextmanager
    def reader(self) -> Iterator[Connection]:
        try:
            with self.read_engine.connect() as conn:
                yield conn
        except (OperationalError, PoolTimeout) as exc:
            if _is_connectivity_error(exc):
                raise DatabaseUnavailable(str(exc.__class__.__name__)) from exc
            raise

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read transaction that sees one snapshot throughout (SQLite's read transactions do; PostgreSQL
        needs REPEATABLE READ), for work that must agree with itself across several queries."""
        with self.reader() as conn:
            if self.dialect == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            yield conn

    def ping(self) -> bool:
        try:
            with self.read_engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


def _is_connectivity_error(exc: Exception) -> bool:
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, OperationalError):
        message = str(exc.orig).lower() if exc.orig else ""
        busy = (
            "database is locked",
            # Lock-order conflicts: the transaction was rolled back whole; a retry succeeds.
            "deadlock detected",
            "could not serialize access",
            "could not connect",
            "connection refused",
            "server closed",
            "terminating connection",
            "connection",
            "timeout",
            # Disk full: nothing was written; the client should keep its data and retry later.
            "disk is full",
            "no space left",
            "could not extend file",
            "could not write",
        )
        return exc.connection_invalidated or any(word in message for word in busy)
    return False
