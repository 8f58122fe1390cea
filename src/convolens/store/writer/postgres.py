"""PostgreSQL's writer: concurrent writers run in parallel; only ``Combinable`` work is grouped.

PostgreSQL groups concurrent WAL flushes itself, so work that cannot be combined is written in a
transaction of its own (``writes_alone``). Context's one-conversation logs (``Combinable``) queue for
the turn and the leader writes those of one key together, in one transaction on a connection kept for
groups, without savepoints (fewer round trips and commits: bench/README.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from convolens.store.writer.failures import CommitUnknown, DatabaseUnavailable
from convolens.store.writer.groups import FairLock, GroupCommit, Job

T = TypeVar("T")


class PostgresGroupCommit(GroupCommit):
    """``writer()`` is ``Database.writer``: a transaction of its own from the pool."""

    def __init__(self, engine: Engine, writer: Callable[[], AbstractContextManager[Connection]]) -> None:
        super().__init__(FairLock())
        self._engine = engine
        self._writer = writer
        self._conn: Connection | None = None
        self._conn_pid = 0

    def writes_alone(self, work: Callable[[Connection], Any]) -> bool:
        return getattr(work, "combine_key", None) is None

    def _alone(self, work: Callable[[Connection], T]) -> T:
        with self._writer() as conn:
            return work(conn)

    def _commit(self, group: list[Job[Any]]) -> None:
        """PostgreSQL: the jobs of each combine key together, in one transaction on the connection kept
        for groups (``connection``), without a savepoint: a pre-ping, a savepoint and its release
        were three of the ten round trips of a one-conversation Context group (bench/README.md).

        If that transaction fails, nothing of it was committed, and each job is written again alone in a
        transaction of its own (``writer()``), so that each caller sees its own outcome. Only if the
        connection broke while committing is the outcome unknown: then every caller of the group gets
        ``DatabaseUnavailable``."""
        by_key: dict[Hashable, list[Job[Any]]] = {}
        for job in group:
            by_key.setdefault(job.work.combine_key, []).append(job)  # type: ignore[attr-defined]
        for jobs in by_key.values():
            try:
                self._run_together(jobs)
            except CommitUnknown as exc:
                self.finish(jobs, exc.unavailable)
            except Exception:
                for job in jobs:
                    try:
                        with self._writer() as conn:
                            job.result = job.work(conn)
                    except Exception as exc:
                        job.error = exc
                    self.finish([job], None)
            except BaseException as exc:
                self.finish(jobs, exc)
            else:
                self.finish(jobs, None)

    def _run_together(self, jobs: list[Job[Any]]) -> None:
        conn = self.connection()
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
                self._drop_connection()
            if broken and committing:
                raise CommitUnknown(DatabaseUnavailable("the connection broke while committing")) from exc
            raise
        for job, result in zip(jobs, results, strict=True):
            job.result = result

    def connection(self) -> Connection:
        """PostgreSQL: a connection kept for the leader of a group (one at a time: it holds the turn), so
        that groups pay no pool checkout and no pre-ping. One found broken is dropped, and its jobs are
        written again alone through the pool (``_commit``), which checks its connections."""
        conn = self._conn
        if conn is None or self._conn_pid != os.getpid():
            conn = self._conn = self._engine.connect()
            self._conn_pid = os.getpid()
        return conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._conn_pid == os.getpid():
            with contextlib.suppress(Exception):  # already unusable: dropping it is all that was wanted
                conn.invalidate()
                conn.close()

    def close(self) -> None:
        if self._conn is not None and self._conn_pid == os.getpid():
            with contextlib.suppress(Exception):  # at shutdown, closing is best effort
                self._conn.close()
        self._conn = None
