"""Which database errors a retry may cure: those become ``DatabaseUnavailable`` (HTTP 503)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout


class DatabaseUnavailable(Exception):
    """The database cannot be reached, is too busy or out of disk; retry later (HTTP 503)."""


class CommitUnknown(Exception):
    """A group's connection broke after its COMMIT was sent: whether it was committed is unknown."""

    def __init__(self, unavailable: DatabaseUnavailable) -> None:
        super().__init__(str(unavailable))
        self.unavailable = unavailable


def unavailable_or(exc: BaseException) -> BaseException:
    """``DatabaseUnavailable`` for what a retry may cure (HTTP 503), else the exception itself."""
    if isinstance(exc, OperationalError | PoolTimeout) and is_connectivity_error(exc):
        unavailable = DatabaseUnavailable(exc.__class__.__name__)
        unavailable.__cause__ = exc
        return unavailable
    return exc


def driver_in_transaction(conn: Connection) -> bool:
    """Whether SQLite's transaction survived a statement's error, so that rolling back to a savepoint
    recovers it (SQLite drops the whole transaction on some errors: disk full, I/O error). Groups on
    PostgreSQL take no savepoints (store/writer/postgres.py)."""
    return bool(conn.connection.dbapi_connection.in_transaction)  # type: ignore[union-attr]


@contextmanager
def lost_connection_as_unavailable() -> Iterator[None]:
    """A connectivity error or pool timeout as ``DatabaseUnavailable`` (HTTP 503); others as they are."""
    try:
        yield
    except (OperationalError, PoolTimeout) as exc:
        if is_connectivity_error(exc):
            raise DatabaseUnavailable(str(exc.__class__.__name__)) from exc
        raise


def is_connectivity_error(exc: Exception) -> bool:
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
