"""The async entry point of the writer: one thread a process that checks and writes requests in batches.

Context's ``POST /api/v1/log/conversation`` sends one conversation a request (server/pipeline.py's
``new_ids`` hands it here). Each request used to make
its own thread hop (server/offload.py), its own token look-up and its own bid for the write turn, and
the turn's holder committed whatever had queued by then: groups of three to four. Here the event loop
hands each request's ``prepare`` to ``WriteBatches.write`` and awaits its future; one thread takes every
request waiting, makes one ``per_batch`` value for them all (the API's: ``auth.TokenLookups``, so each
distinct token is looked up once), prepares each request with it (token, bounds, PII out) and commits
them all with ``Database.write_all``, and meanwhile the next batch gathers by itself. The
thread hand-offs and token look-ups are paid once a batch instead of once a request, and nobody waits
on a timer for a group to fill (bench/README.md). One thread: a second one, preparing a batch while the
first writes, measured no faster and dearer in CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection

from convolens.store.db import Database

C = TypeVar("C")  # what ``per_batch`` makes, handed to each request's ``prepare``


@dataclass(frozen=True, slots=True)
class NotWritten:
    """What ``prepare`` returns for a request it checked but that is written elsewhere (a project that
    redacts names: its model would hold up the batch thread); ``write`` returns it as it is."""

    value: Any


# What a request hands over: run on the batch's thread with the batch's ``per_batch`` value, it checks
# the request (raising its error) and returns the work to write, or ``NotWritten``.
Prepare = Callable[[Any], "Callable[[Connection], Any] | NotWritten"]


@dataclass(slots=True)
class _Request:
    prepare: Prepare
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class WriteBatches(Generic[C]):
    def __init__(self, db: Database, per_batch: Callable[[], C], max_batch: int = Database.MAX_GROUP) -> None:
        self._db = db
        self._per_batch = per_batch
        self._max_batch = max_batch
        self._waiting: list[_Request] = []
        self._arrived = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    async def write(self, prepare: Prepare) -> Any:
        """``prepare(per_batch())``'s work, written; its result, the ``NotWritten`` that ``prepare`` returned,
        or the exception that ``prepare`` or the work raised."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._arrived:
            if self._stopping:
                raise RuntimeError("the server is shutting down")
            self._waiting.append(_Request(prepare, future, loop))
            if self._thread is None or not self._thread.is_alive():  # not yet, or killed by a BaseException
                self._thread = threading.Thread(target=self._run, name="convolens-write-batches", daemon=True)
                self._thread.start()
            self._arrived.notify()
        return await future

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is waiting, then end the thread."""
        with self._arrived:
            self._stopping = True
            self._arrived.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._arrived:
                while not self._waiting and not self._stopping:
                    self._arrived.wait()
                if not self._waiting:
                    return
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
            self._write(batch)

    def _write(self, batch: list[_Request]) -> None:
        outcomes: list[Any] = [None] * len(batch)
        works: list[Callable[[Connection], Any]] = []
        written: list[int] = []
        try:
            shared = self._per_batch()
            for index, request in enumerate(batch):
                try:
                    work = request.prepare(shared)
                except Exception as exc:
                    outcomes[index] = exc
                    continue
                if isinstance(work, NotWritten):
                    outcomes[index] = work
                else:
                    works.append(work)
                    written.append(index)
            for index, outcome in zip(written, self._db.write_all(works), strict=True):
                outcomes[index] = outcome
        except BaseException as exc:  # the database layer itself failed: every request of the batch hears
            outcomes = [exc if o is None or i in written else o for i, o in enumerate(outcomes)]
            if not isinstance(exc, Exception):
                raise  # after the answers: it ends this thread, and the next request starts another
        finally:
            _answer(batch, outcomes)


def _answer(batch: list[_Request], outcomes: list[Any]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any]]] = {}
    for request, outcome in zip(batch, outcomes, strict=True):
        by_loop.setdefault(request.loop, []).append((request.future, outcome))
    for loop, answers in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits for these answers
            loop.call_soon_threadsafe(_settle, answers)  # one wake-up of the loop for the whole batch


def _settle(answers: list[tuple[asyncio.Future, Any]]) -> None:
    for future, outcome in answers:
        if future.cancelled():  # the client went away; its write stands
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
