"""What every dialect's writer shares: work waiting for the turn to commit, and the leader that takes it.

A caller queues its work and bids for the turn (``FairLock``, handed over in arrival order); whoever holds
it leads: takes up to ``MAX_GROUP`` waiting works and commits them as one group
(``GroupCommit._commit``, one module a dialect: store/writer/sqlite.py, store/writer/postgres.py),
until its own are committed. A follower whose work a leader committed is woken and returns at once.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DatabaseError

from convolens.store.writer.failures import DatabaseUnavailable


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
class Job(Generic[T]):
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


class GroupCommit:
    """The queue of work waiting to be committed and the turn to commit it, for one database. A
    dialect's subclass says which work is written alone (``writes_alone``, ``_alone``) and how a group is
    committed (``_commit``)."""

    # Work items committed together, at most: bounds one group's transaction and its latency.
    MAX_GROUP = 64

    def __init__(self, turn: FairLock) -> None:
        self._turn = turn
        self._queued: deque[Job[Any]] = deque()
        self._queue_mutex = threading.Lock()

    def writes_alone(self, work: Callable[[Connection], Any]) -> bool:
        return False

    def _alone(self, work: Callable[[Connection], T]) -> T:
        raise NotImplementedError

    def _commit(self, group: list[Job[Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Anything kept between groups, closed (at shutdown)."""

    def write(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` in a write transaction, committed before this returns; its exception, if it
        raises, with nothing of it written. On SQLite the transaction may be shared with other callers'
        work (group commit), so ``work`` must do nothing but database work on ``conn``. On PostgreSQL
        only ``Combinable`` work is grouped (fewer round trips and commits); other work runs in a
        transaction of its own, in parallel with the rest."""
        if self.writes_alone(work):
            return self._alone(work)
        job: Job[T] = Job(work)
        with self._queue_mutex:
            self._queued.append(job)
        self._lead_until_done([job], wake=job.wake)
        if job.error is not None:
            raise job.error
        return job.result

    def write_all(self, works: list[Callable[[Connection], Any]]) -> list[Any]:
        """Each of ``works`` as ``write`` would do it, for a thread that writes on behalf of many callers
        (the batch thread): all of them queued at once and committed in as few groups as
        ``MAX_GROUP`` allows. Returns, in order, each work's result, or the exception it raised
        (nothing of that work written)."""
        jobs: list[Job[Any]] = [Job(work) for work in works]
        for job in jobs:
            if self.writes_alone(job.work):
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

    def _lead_until_done(self, jobs: list[Job[Any]], wake: threading.Event | None) -> None:
        """Wait for the group turn, then lead groups until every one of ``jobs`` (queued) is committed; or,
        woken by a leader that committed them (``wake``), return at once."""
        turn = self._turn
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
        self._commit(group)

    @staticmethod
    def finish(group: list[Job[Any]], failure: BaseException | None) -> None:
        for job in group:
            if failure is not None and (
                job.error is None or isinstance(job.error, DatabaseError | DatabaseUnavailable)
            ):
                job.result, job.error = None, failure  # nothing of the group was committed
            job.done.set()
            job.wake.set()  # a follower waiting for the turn needs it no more
        if failure is not None and not isinstance(failure, Exception):
            raise failure  # KeyboardInterrupt and the like end the leader too
