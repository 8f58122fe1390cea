"""Connections to the one database: SQLite (embedded default) or PostgreSQL, with the same code above.

On SQLite, writers take the database lock up front (``BEGIN IMMEDIATE``) through a one-connection pool,
so writers queue in-process instead of failing with "database is locked", while readers keep reading
from WAL snapshots on their own connections.

Ingest requests write through ``Database.write(work)`` / ``write_all(works)``, which hand the work to
this database's writer, one module a dialect (store/writer/: sqlite.py groups every write into one
transaction and one fsync; postgres.py groups only ``Combinable`` work, on a kept connection).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import NullPool

from convolens.store.shared_reads import SharedReads
from convolens.store.token_connections import HeldConnections
from convolens.store.writer.failures import (
    DatabaseUnavailable,
    is_connectivity_error,
    lost_connection_as_unavailable,
    unavailable_or,
)
from convolens.store.writer.groups import Combinable, FairLock, GroupCommit
from convolens.store.writer.postgres import PostgresGroupCommit
from convolens.store.writer.process_lock import FileWriteLock, WritesComing
from convolens.store.writer.sqlite import SqliteGroupCommit

__all__ = ["Combinable", "Database", "DatabaseUnavailable", "FairLock", "FileWriteLock", "private_sqlite_file"]

T = TypeVar("T")


_SQLITE_CONNECT_ARGS = {"check_same_thread": False, "timeout": 30}


def _sqlite_engine(url: str, *, immediate: bool, pool_size: int) -> Engine:
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0 if immediate else 10,
        pool_timeout=60,
        connect_args=_SQLITE_CONNECT_ARGS,
    )
    _sqlite_pragmas(engine)

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _held_engine(url: str, dialect: str) -> Engine:
    """Unpooled autocommit connections, for ``HeldConnections``."""
    if dialect == "postgresql":
        return create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args=_SQLITE_CONNECT_ARGS)
    _sqlite_pragmas(engine)
    return engine


def _sqlite_pragmas(engine: Engine) -> None:
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
        # Deleted rows are overwritten with zeros, not left in free space: an erasure leaves no text in
        # the database file (``Database.checkpoint`` then empties the WAL of the pages as they were).
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()


def private_sqlite_file(path: Path) -> None:
    """The database holds token hashes and the projects' LLM keys, so only its owner may read it: its
    directory is made 0700, and the file is made 0600 before SQLite opens it (SQLite gives the -wal and
    -shm files the main file's mode; left to itself it makes 0644). Files an older version left readable
    to others are narrowed to 0600."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name != "posix":
        return
    # Only a file that does not exist yet is opened (and closed) here: closing any descriptor of a file
    # drops every POSIX lock this process holds on it, so closing one while another Database of this
    # process has the file open would drop SQLite's locks and let another process corrupt the database.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    for file in (path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal"))):
        with contextlib.suppress(FileNotFoundError, PermissionError):  # not ours to change: left as is
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)


class Database:
    def __init__(self, url: str, *, yields_writes: bool = False) -> None:
        """``yields_writes``: this process's writes go after the other processes' (``FileWriteLock``): an
        enrichment worker's, so that ingestion comes first."""
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                private_sqlite_file(Path(parsed.database))
            self.write_engine = _sqlite_engine(url, immediate=True, pool_size=1)
            self.read_engine = _sqlite_engine(url, immediate=False, pool_size=5)
            self._write_turn: FairLock | None = FairLock()
            file_backed = parsed.database and parsed.database != ":memory:" and os.name == "posix"
            self._file_lock = (
                FileWriteLock(f"{parsed.database}-writelock", yields=yields_writes) if file_backed else None
            )
            self._writes_coming = WritesComing(f"{parsed.database}-writelock") if file_backed else None
        elif self.dialect == "postgresql":
            self.write_engine = create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
            # Reads in autocommit, on the same pool: no BEGIN, and no ROLLBACK when the connection goes
            # back, on which psycopg also drops every prepared statement of the connection ("DEALLOCATE
            # ALL"), so the writes that followed a token look-up prepared theirs again. Under READ
            # COMMITTED each statement sees its own snapshot either way; ``snapshot()`` opts out.
            self.read_engine = self.write_engine.execution_options(isolation_level="AUTOCOMMIT")
            self._write_turn = None
            self._file_lock = None
            self._writes_coming = None
        else:
            raise ValueError(f"unsupported database {self.dialect!r}: use sqlite:/// or postgresql+psycopg://")
        # A few connections kept for the token look-up (store/token_connections.py).
        self._held = HeldConnections(_held_engine(url, self.dialect), is_connectivity_error, self.HELD_CONNECTIONS)
        self._shared = SharedReads()
        # The writer of this dialect (store/writer/): on SQLite every write is grouped under the write
        # turn (one writer at a time anyway); on PostgreSQL only combinable work, the rest in parallel.
        self.groups: GroupCommit = (
            SqliteGroupCommit(self._write_turn, self._group_transaction)
            if self._write_turn is not None
            else PostgresGroupCommit(self.write_engine, self.writer)
        )

    @contextmanager
    def writes_coming(self) -> Iterator[None]:
        """Around an ingest request from its translation to its commit: the writes of an enrichment worker
        sharing the SQLite file wait until no request is on its way (store/writer/process_lock.py). A
        no-op on PostgreSQL, whose writers do not share one lock."""
        if self._writes_coming is None:
            yield
            return
        with self._writes_coming.during():
            yield

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
            with self._other_processes_locked_out(), self.write_engine.begin() as conn:
                yield conn
        except (OperationalError, PoolTimeout) as exc:
            translated = unavailable_or(exc)
            if translated is exc:
                raise
            raise translated from exc
        finally:
            if turn is not None:
                turn.release()

    @contextmanager
    def _other_processes_locked_out(self) -> Iterator[None]:
        lock = self._file_lock
        if lock is None:
            yield
            return
        if not lock.acquire(timeout=60):
            raise DatabaseUnavailable("timed out waiting for another process's write")
        try:
            yield
        finally:
            lock.release()

    # Connections kept for the token look-up (store/token_connections.py); more concurrent look-ups use the pool.
    HELD_CONNECTIONS = 8

    # Work items committed together, at most (store/writer/groups.py).
    MAX_GROUP = GroupCommit.MAX_GROUP

    def write(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` in a write transaction, committed before this returns; its exception, if it
        raises, with nothing of it written. On SQLite the transaction may be shared with other callers'
        work (group commit), so ``work`` must do nothing but database work on ``conn``. On PostgreSQL
        only ``Combinable`` work is grouped (fewer round trips and commits); other work runs in a
        transaction of its own, in parallel with the rest (store/writer/)."""
        return self.groups.write(work)

    def write_all(self, works: list[Callable[[Connection], Any]]) -> list[Any]:
        """Each of ``works`` as ``write`` would do it, for a thread that writes on behalf of many callers:
        all of them queued at once and committed in as few groups as ``MAX_GROUP`` allows. Returns, in
        order, each work's result, or the exception it raised (nothing of that work written)."""
        return self.groups.write_all(works)

    @contextmanager
    def _group_transaction(self) -> Iterator[Connection]:
        """SQLite: a group's write transaction, other processes locked out (the caller holds the turn)."""
        with self._other_processes_locked_out(), self.write_engine.begin() as conn:
            yield conn

    @contextmanager
    def reader(self) -> Iterator[Connection]:
        with lost_connection_as_unavailable(), self.read_engine.connect() as conn:
            yield conn

    def read_held(self, work: Callable[[Connection], T], *, share: Hashable | None = None) -> T:
        """``work(conn)``, which only reads, on one of a few connections kept outside the pool
        (store/token_connections.py): for the small read that every request makes. Concurrent calls with the same
        ``share`` key share one read that started after each of them (store/shared_reads.py)."""

        def held() -> T:
            return self._held.read(work, when_busy=lambda: self._read_pooled(work))

        with lost_connection_as_unavailable():
            return held() if share is None else self._shared.read(share, held)

    def _read_pooled(self, work: Callable[[Connection], T]) -> T:
        with self.reader() as conn:
            return work(conn)

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read transaction that sees one snapshot throughout (SQLite's read transactions do; PostgreSQL
        needs REPEATABLE READ), for work that must agree with itself across several queries."""
        with self.reader() as conn:
            if self.dialect == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            yield conn

    # How long a checkpoint waits for readers of older snapshots (an export streaming), holding up writers.
    CHECKPOINT_WAIT_MS = 5000

    def checkpoint(self) -> bool:
        """SQLite: copy the WAL into the database file and truncate the WAL to zero bytes, after rows were
        deleted for good (an erasure, a prune): the WAL still holds their pages as they were before the
        delete, and ``secure_delete`` zeroed them in what it copies back. False if a reader of an older
        snapshot held it up past ``CHECKPOINT_WAIT_MS`` (then the next full checkpoint finishes it).

        PostgreSQL: nothing to do here; deleted rows stay as dead tuples until VACUUM (docs/deploy.md)."""
        if not self.is_sqlite:
            return True
        turn = self._write_turn
        if turn is not None and not turn.acquire(timeout=60):
            raise DatabaseUnavailable("timed out waiting for the write lock")
        try:
            with self._other_processes_locked_out():
                raw = self.write_engine.raw_connection()  # outside a transaction: no BEGIN IMMEDIATE
                try:
                    driver = raw.driver_connection
                    driver.execute(f"PRAGMA busy_timeout={self.CHECKPOINT_WAIT_MS}")
                    try:
                        busy, _frames, _copied = driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                    finally:
                        driver.execute("PRAGMA busy_timeout=30000")
                finally:
                    raw.close()
        finally:
            if turn is not None:
                turn.release()
        return busy == 0

    def ping(self) -> bool:
        try:
            with self.read_engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def dispose(self) -> None:
        if self._file_lock is not None:
            self._file_lock.close()
        if self._writes_coming is not None:
            self._writes_coming.close()
        self._held.close()
        self.groups.close()
        self.write_engine.dispose()
        if self.is_sqlite:  # PostgreSQL's read engine shares the write engine's pool
            self.read_engine.dispose()
