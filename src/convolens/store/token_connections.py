"""A few connections kept outside SQLAlchemy's pool, for the one small read every API request makes (the
token look-up).

Checking a connection out of SQLAlchemy's pool and back costs more than that read: pool events, a
pre-ping round trip on PostgreSQL, the reset on return. Here up to ``size`` connections wait on a plain
stack, in autocommit (each statement sees the latest commit, and no transaction is held open: on SQLite
an open read transaction would hold back checkpoints). On PostgreSQL that saved ~16% of the CPU of a
one-conversation Context request (bench/README.md). When all are in use, the caller reads through the
pool as before, so the number of connections stays bounded however many threads ask.

A kept connection may have died since its last use (a database restart): a connectivity error drops it
and the idle ones, and the read, which changes nothing, is tried once more on a new connection before
the caller sees the error.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine

T = TypeVar("T")


class HeldConnections:
    def __init__(self, engine: Engine, is_connectivity_error: Callable[[Exception], bool], size: int) -> None:
        """``engine`` must not pool (``NullPool``) and must give autocommit connections."""
        self._engine = engine
        self._is_connectivity_error = is_connectivity_error
        self._size = size
        self._idle: list[Connection] = []
        self._open = 0
        self._pid = os.getpid()
        self._mutex = threading.Lock()

    def read(self, work: Callable[[Connection], T], when_busy: Callable[[], T]) -> T:
        """``work(conn)``, which must only read, on a kept connection; ``when_busy()`` if all are in use."""
        conn = self._take()
        if conn is None:
            return when_busy()
        try:
            result = work(conn)
        except Exception as exc:
            if not self._is_connectivity_error(exc):
                self._give_back(conn)
                raise
            self._drop(conn)
            conn = self._take()
            if conn is None:
                raise
            try:
                result = work(conn)
            except Exception:
                self._drop(conn)
                raise
        self._give_back(conn)
        return result

    def _take(self) -> Connection | None:
        with self._mutex:
            if self._pid != os.getpid():
                # A forked child leaves its parent's connections alone (closing them would close the parent's).
                self._idle, self._open, self._pid = [], 0, os.getpid()
            if self._idle:
                return self._idle.pop()
            if self._open >= self._size:
                return None
            self._open += 1
        try:
            return self._engine.connect()
        except BaseException:
            with self._mutex:
                self._open -= 1
            raise

    def _give_back(self, conn: Connection) -> None:
        with self._mutex:
            self._idle.append(conn)

    def _drop(self, conn: Connection) -> None:
        """Close a connection found dead, and the idle ones with it: they lost the same server (as
        SQLAlchemy's pool does on a disconnect), so that the retry connects anew."""
        with self._mutex:
            dead, self._idle = [conn, *self._idle], []
            self._open -= len(dead)
        for each in dead:
            with contextlib.suppress(Exception):  # already unusable: dropping it is all that was wanted
                each.invalidate()
                each.close()

    def close(self) -> None:
        with self._mutex:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
        for conn in idle:
            with contextlib.suppress(Exception):  # at shutdown, closing is best effort
                conn.close()
        self._engine.dispose()
