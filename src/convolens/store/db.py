"""Connections to the one database: SQLite (embedded default) or PostgreSQL, with the same code above.

On SQLite, writers take the database lock up front (``BEGIN IMMEDIATE``) through a one-connection pool,
so writers queue in-process instead of failing with "database is locked", while readers keep reading
from WAL snapshots on their own connections.

Ingest requests write through ``Database.write(work)``, which on SQLite commits concurrent requests
together (group commit): one writer runs every queued piece of work in one transaction, each in a
savepoint of its own, and one fsync makes them all durable. A commit with ``synchronous=FULL`` costs a
few milliseconds of fsync however little it writes, so one-conversation requests were bound by it
(bench/README.md). Work that says it can be combined (``Combinable``: Context's one-conversation logs,
whose ids are all new) is done as one piece with the other such work of its group, so that the group
runs one set of statements under the write lock instead of one set per request. PostgreSQL runs
concurrent writers in parallel and groups their WAL flushes itself; there only ``Combinable`` work is
grouped, one transaction a key on a connection kept for groups, without savepoints.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import NullPool

from convolens.store.driver import Statements
from convolens.store.shared_reads import SharedReads
from convolens.store.token_connections import HeldConnections


@dataclass(eq=False, slots=True)
class _Waiter:
    wake: threading.Event
    handed: bool = False  # release() gave it the lock (else it woke by its own event, or timed out)


class FairLock:
    """A lock handed over in arrival order. ``threading.Lock`` is not fair: a thread that releases and
    re-acquires in a loop (the enrichment worker) can starve the others (the ingest requests) of
    SQLite's single write connection."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: deque[_Waiter] = deque()
        self._held = False

    def acquire(self, timeout: float, wake: threading.Event | None = None) -> bool:
        """True once the lock is ours; False after ``timeout``, or as soon as someone else sets ``wake``
        (the waiter's alarm, which ``release`` also sets to hand the lock over). A group commit's
        follower is woken so when the leader has committed its work: before, each follower took the
        lock in turn only to hand it on, one thread wake-up after another, and the next group's
        leader waited behind all of them."""
        with self._mutex:
            if not self._held and not self._waiters:
                self._held = True
                return True
            waiter = _Waiter(wake if wake is not None else threading.Event())
            self._waiters.append(waiter)
        waiter.wake.wait(timeout)
        with self._mutex:
            if waiter.handed:
                return True
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            return False

    def release(self) -> None:
        with self._mutex:
            while self._waiters:
                waiter = self._waiters.popleft()
                if waiter.wake.is_set():
                    continue  # woken by someone else: it no longer wants the lock
                waiter.handed = True
                waiter.wake.set()  # straight to the next in line; never unlocked between
                return
            self._held = False


T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(eq=False)
class _Job(Generic[T]):
    work: Callable[[Connection], T]
    done: threading.Event = field(default_factory=threading.Event)
    wake: threading.Event = field(default_factory=threading.Event)  # its caller's alarm (FairLock.acquire)
    result: Any = None
    error: BaseException | None = None


class Combinable(Protocol[T_co]):
    """Work for ``Database.write`` that may be done together with other work of the same
    ``combine_key`` when their callers' requests are committed in one group: one set of statements for
    all of them instead of one each. ``run_together(conn, works)`` returns each work's result, in order,
    as calling each would have; if it raises, each work is called on its own instead."""

    combine_key: Hashable

    def __call__(self, conn: Connection) -> T_co: ...

    def run_together(self, conn: Connection, works: list[Any]) -> list[T_co]: ...


class DatabaseUnavailable(Exception):
    """The database cannot be reached, is too busy or out of disk; retry later (HTTP 503)."""


class _CommitUnknown(Exception):
    """A group's connection broke after its COMMIT was sent: whether it was committed is unknown."""

    def __init__(self, unavailable: DatabaseUnavailable) -> None:
        super().__init__(str(unavailable))
        self.unavailable = unavailable


class FileWriteLock:
    """SQLite's write lock, taken ahead of SQLite across the processes sharing a database file (several
    ``convolens serve --workers``, a ``convolens worker``, the CLI): an ``flock`` on a file beside the
    database. Without it a process that finds the database locked sleeps in SQLite's busy handler
    (1, 2, 5, 10… ms), which left the database idle between transactions; here a waiter polls a lock
    that costs a system call, backing off to at most a millisecond."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = 0

    def acquire(self, timeout: float) -> bool:
        import fcntl

        if self._fd is None or self._pid != os.getpid():
            # A forked child opens its own: a shared open file description would share the lock too.
            self._fd, self._pid = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600), os.getpid()
        deadline = time.monotonic() + timeout
        pause = 0.00005
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(pause)
                pause = min(pause * 2, 0.001)

    def release(self) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None


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
    def __init__(self, url: str) -> None:
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
            self._file_lock = FileWriteLock(f"{parsed.database}-writelock") if file_backed else None
        elif self.dialect == "postgresql":
            self.write_engine = create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
            # Reads in autocommit, on the same pool: no BEGIN, and no ROLLBACK when the connection goes
            # back, on which psycopg also drops every prepared statement of the connection ("DEALLOCATE
            # ALL"), so the writes that followed a token look-up prepared theirs again. Under READ
            # COMMITTED each statement sees its own snapshot either way; ``snapshot()`` opts out.
            self.read_engine = self.write_engine.execution_options(isolation_level="AUTOCOMMIT")
            self._write_turn = None
            self._file_lock = None
        else:
            raise ValueError(f"unsupported database {self.dialect!r}: use sqlite:/// or postgresql+psycopg://")
        # A few connections kept for the token look-up (store/token_connections.py).
        self._held = HeldConnections(_held_engine(url, self.dialect), _is_connectivity_error, self.HELD_CONNECTIONS)
        self._shared = SharedReads()
        # Whose turn it is to commit a group: on SQLite every write's (one writer at a time anyway); on
        # PostgreSQL only combinable work queues here, everything else writes in parallel.
        self._group_turn = self._write_turn or FairLock()
        self._queued: deque[_Job[Any]] = deque()
        self._queue_mutex = threading.Lock()
        self._group_conn: Connection | None = None
        self._group_conn_pid = 0

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
            translated = _unavailable_or(exc)
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

    # Work items committed together, at most: bounds one group's transaction and its latency.
    MAX_GROUP = 64

    def write(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` in a write transaction, committed before this returns; its exception, if it
        raises, with nothing of it written. On SQLite the transaction may be shared with other callers'
        work (group commit), so ``work`` must do nothing but database work on ``conn``. On PostgreSQL
        only ``Combinable`` work is grouped (fewer round trips and commits); other work runs in a
        transaction of its own, in parallel with the rest."""
        if self._writes_alone(work):
            with self.writer() as conn:
                return work(conn)
        job: _Job[T] = _Job(work)
        with self._queue_mutex:
            self._queued.append(job)
        self._lead_until_done([job], wake=job.wake)
        if job.error is not None:
            raise job.error
        return job.result

    def write_all(self, works: list[Callable[[Connection], Any]]) -> list[Any]:
        """Each of ``works`` as ``write`` would do it, for a thread that writes on behalf of many callers
        (server/write_batches.py): all of them queued at once and committed in as few groups as
        ``MAX_GROUP`` allows. Returns, in order, each work's result, or the exception it raised
        (nothing of that work written)."""
        jobs: list[_Job[Any]] = [_Job(work) for work in works]
        for job in jobs:
            if self._writes_alone(job.work):
                try:
                    job.result = self.write(job.work)
                except Exception as exc:
                    job.error = exc
                job.done.set()
        queued = [job for job in jobs if not job.done.is_set()]
        if queued:
            with self._queue_mutex:
                self._queued.extend(queued)
            self._lead_until_done(queued, wake=None)
        return [job.error if job.error is not None else job.result for job in jobs]

    def _writes_alone(self, work: Callable[[Connection], Any]) -> bool:
        """PostgreSQL: work that cannot be combined runs in a transaction of its own, not in a group."""
        return self._write_turn is None and getattr(work, "combine_key", None) is None

    def _lead_until_done(self, jobs: list[_Job[Any]], wake: threading.Event | None) -> None:
        """Wait for the group turn, then lead groups until every one of ``jobs`` (queued) is committed; or,
        woken by a leader that committed them (``wake``), return at once."""
        turn = self._group_turn
        if not turn.acquire(timeout=60, wake=wake):
            with self._queue_mutex:
                for job in jobs:
                    if job in self._queued:  # timed out before any leader took it
                        self._queued.remove(job)
                        job.error = DatabaseUnavailable("timed out waiting for the write lock")
                        job.done.set()
            for job in jobs:
                job.done.wait()  # a leader has taken it and is committing it now
            return
        try:
            for job in jobs:
                while not job.done.is_set():
                    self._commit_group()  # it is still queued: lead groups until it is committed
        finally:
            turn.release()

    def _commit_group(self) -> None:
        with self._queue_mutex:
            group = [self._queued.popleft() for _ in range(min(len(self._queued), self.MAX_GROUP))]
        if self._write_turn is None:  # PostgreSQL: only Combinable work queues here
            self._commit_postgresql(group)
            return
        failure: BaseException | None = None
        try:
            with self._other_processes_locked_out(), self.write_engine.begin() as conn:
                if len(group) == 1:  # alone: no savepoint, its exception rolls the transaction back
                    group[0].result = group[0].work(conn)
                else:
                    self._run_in_savepoints(conn, group)
        except BaseException as exc:
            failure = _unavailable_or(exc)
        self._finish(group, failure)

    def _run_in_savepoints(self, conn: Connection, group: list[_Job[Any]]) -> None:
        """Each job of the group in a savepoint of its own, so that one failing rolls back alone; jobs
        that can be combined (``Combinable`` with one key) first as one, in one savepoint.

        Savepoints go straight to the driver's cursor: through SQLAlchemy's ``begin_nested`` they cost
        ~0.1 ms of CPU each, under the write lock that every API process waits for."""
        savepoints = Statements(conn)
        alone: list[_Job[Any]] = []
        together: dict[Hashable, list[_Job[Any]]] = {}
        for job in group:
            key = getattr(job.work, "combine_key", None)  # a Combinable's
            (alone if key is None else together.setdefault(key, [])).append(job)
        for jobs in together.values():
            if len(jobs) == 1:
                alone.extend(jobs)
                continue
            savepoints.execute("SAVEPOINT group_job")
            try:
                results = jobs[0].work.run_together(conn, [job.work for job in jobs])
            except Exception:
                if not _driver_in_transaction(conn):
                    raise  # SQLite dropped the whole transaction (disk full, I/O error)
                savepoints.execute("ROLLBACK TO group_job")
                alone.extend(jobs)  # one at a time, to find the one that fails
            else:
                for job, result in zip(jobs, results, strict=True):
                    job.result = result
            savepoints.execute("RELEASE group_job")
        for job in alone:
            savepoints.execute("SAVEPOINT group_job")
            try:
                job.result = job.work(conn)
            except Exception as exc:
                job.error = _unavailable_or(exc)  # rolled back to its savepoint; the others go on
                if not _driver_in_transaction(conn):
                    raise  # SQLite dropped the whole transaction (disk full, I/O error)
                savepoints.execute("ROLLBACK TO group_job")
            savepoints.execute("RELEASE group_job")

    def _commit_postgresql(self, group: list[_Job[Any]]) -> None:
        """PostgreSQL: the jobs of each combine key together, in one transaction on the connection kept
        for groups (``_group_connection``), without a savepoint: a pre-ping, a savepoint and its release
        were three of the ten round trips of a one-conversation Context group (bench/README.md).

        If that transaction fails, nothing of it was committed, and each job is written again alone in a
        transaction of its own (``writer()``), so that each caller sees its own outcome. Only if the
        connection broke while committing is the outcome unknown: then every caller of the group gets
        ``DatabaseUnavailable``."""
        by_key: dict[Hashable, list[_Job[Any]]] = {}
        for job in group:
            by_key.setdefault(job.work.combine_key, []).append(job)  # type: ignore[attr-defined]
        for jobs in by_key.values():
            try:
                self._run_together(jobs)
            except _CommitUnknown as exc:
                self._finish(jobs, exc.unavailable)
            except Exception:
                for job in jobs:
                    try:
                        with self.writer() as conn:
                            job.result = job.work(conn)
                    except Exception as exc:
                        job.error = exc
                    self._finish([job], None)
            except BaseException as exc:
                self._finish(jobs, exc)
            else:
                self._finish(jobs, None)

    def _run_together(self, jobs: list[_Job[Any]]) -> None:
        conn = self._group_connection()
        committing = False
        try:
            with conn.begin():
                works = [job.work for job in jobs]
                results = works[0].run_together(conn, works) if len(works) > 1 else [works[0](conn)]
                committing = True
        except Exception as exc:
            driver = conn.connection.driver_connection if not conn.invalidated else None
            broken = driver is None or driver.broken or driver.closed  # type: ignore[union-attr]
            if broken:
                self._drop_group_connection()
            if broken and committing:
                raise _CommitUnknown(DatabaseUnavailable("the connection broke while committing")) from exc
            raise
        for job, result in zip(jobs, results, strict=True):
            job.result = result

    def _group_connection(self) -> Connection:
        """PostgreSQL: a connection kept for the leader of a group (one at a time: it holds the turn), so
        that groups pay no pool checkout and no pre-ping. One found broken is dropped, and its jobs are
        written again alone through the pool (``_commit_postgresql``), which checks its connections."""
        conn = self._group_conn
        if conn is None or self._group_conn_pid != os.getpid():
            conn = self._group_conn = self.write_engine.connect()
            self._group_conn_pid = os.getpid()
        return conn

    def _drop_group_connection(self) -> None:
        conn, self._group_conn = self._group_conn, None
        if conn is not None and self._group_conn_pid == os.getpid():
            with contextlib.suppress(Exception):  # already unusable: dropping it is all that was wanted
                conn.invalidate()
                conn.close()

    @staticmethod
    def _finish(group: list[_Job[Any]], failure: BaseException | None) -> None:
        for job in group:
            if failure is not None and (
                job.error is None or isinstance(job.error, DatabaseError | DatabaseUnavailable)
            ):
                job.result, job.error = None, failure  # nothing of the group was committed
            job.done.set()
            job.wake.set()  # a follower waiting for the turn needs it no more
        if failure is not None and not isinstance(failure, Exception):
            raise failure  # KeyboardInterrupt and the like end the leader too

    @contextmanager
    def reader(self) -> Iterator[Connection]:
        with _lost_connection_as_unavailable(), self.read_engine.connect() as conn:
            yield conn

    def read_held(self, work: Callable[[Connection], T], *, share: Hashable | None = None) -> T:
        """``work(conn)``, which only reads, on one of a few connections kept outside the pool
        (store/token_connections.py): for the small read that every request makes. Concurrent calls with the same
        ``share`` key share one read that started after each of them (store/shared_reads.py)."""

        def held() -> T:
            return self._held.read(work, when_busy=lambda: self._read_pooled(work))

        with _lost_connection_as_unavailable():
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
        self._held.close()
        if self._group_conn is not None and self._group_conn_pid == os.getpid():
            with contextlib.suppress(Exception):  # at shutdown, closing is best effort
                self._group_conn.close()
        self._group_conn = None
        self.write_engine.dispose()
        if self.is_sqlite:  # PostgreSQL's read engine shares the write engine's pool
            self.read_engine.dispose()


def _unavailable_or(exc: BaseException) -> BaseException:
    """``DatabaseUnavailable`` for what a retry may cure (HTTP 503), else the exception itself."""
    if isinstance(exc, OperationalError | PoolTimeout) and _is_connectivity_error(exc):
        unavailable = DatabaseUnavailable(exc.__class__.__name__)
        unavailable.__cause__ = exc
        return unavailable
    return exc


def _driver_in_transaction(conn: Connection) -> bool:
    """Whether SQLite's transaction survived a statement's error, so that rolling back to a savepoint
    recovers it (SQLite drops the whole transaction on some errors: disk full, I/O error). Groups on
    PostgreSQL take no savepoints (``Database._commit_postgresql``)."""
    return bool(conn.connection.dbapi_connection.in_transaction)  # type: ignore[union-attr]


@contextmanager
def _lost_connection_as_unavailable() -> Iterator[None]:
    """A connectivity error or pool timeout as ``DatabaseUnavailable`` (HTTP 503); others as they are."""
    try:
        yield
    except (OperationalError, PoolTimeout) as exc:
        if _is_connectivity_error(exc):
            raise DatabaseUnavailable(str(exc.__class__.__name__)) from exc
        raise


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
