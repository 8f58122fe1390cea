"""SQLite's writer: every write goes through the group commit.

SQLite has one writer at a time, and a commit with ``synchronous=FULL`` costs a few milliseconds of
fsync however little it writes, so one-conversation requests were bound by it (bench/README.md). Here
the leader runs every queued piece of work in one transaction, each in a savepoint of its own, and one
fsync makes them all durable. Work that says it can be combined (``Combinable``: Context's
one-conversation logs, whose ids are all new) is done as one piece with the other such work of its
group, one set of statements under the write lock instead of one set per request.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection

from convolens.store.driver import Statements
from convolens.store.writer.failures import driver_in_transaction, unavailable_or
from convolens.store.writer.groups import FairLock, GroupCommit, Job


class SqliteGroupCommit(GroupCommit):
    """``transaction()`` opens the write transaction (other processes locked out, ``BEGIN IMMEDIATE``);
    ``turn`` is the database's write turn, the one ``Database.writer()`` takes too."""

    def __init__(self, turn: FairLock, transaction: Callable[[], AbstractContextManager[Connection]]) -> None:
        super().__init__(turn)
        self._transaction = transaction

    def _commit(self, group: list[Job[Any]]) -> None:
        failure: BaseException | None = None
        try:
            with self._transaction() as conn:
                if len(group) == 1:  # alone: no savepoint, its exception rolls the transaction back
                    group[0].result = group[0].work(conn)
                else:
                    self._run_in_savepoints(conn, group)
        except BaseException as exc:
            failure = unavailable_or(exc)
        self.finish(group, failure)

    def _run_in_savepoints(self, conn: Connection, group: list[Job[Any]]) -> None:
        """Each job of the group in a savepoint of its own, so that one failing rolls back alone; jobs
        that can be combined (``Combinable`` with one key) first as one, in one savepoint.

        Savepoints go straight to the driver's cursor: through SQLAlchemy's ``begin_nested`` they cost
        ~0.1 ms of CPU each, under the write lock that every API process waits for."""
        savepoints = Statements(conn)
        alone: list[Job[Any]] = []
        together: dict[Hashable, list[Job[Any]]] = {}
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
                if not driver_in_transaction(conn):
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
                job.error = unavailable_or(exc)  # rolled back to its savepoint; the others go on
                if not driver_in_transaction(conn):
                    raise  # SQLite dropped the whole transaction (disk full, I/O error)
                savepoints.execute("ROLLBACK TO group_job")
            savepoints.execute("RELEASE group_job")
