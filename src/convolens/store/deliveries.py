"""Outbound deliveries owed (alert_delivery, digest_delivery): which are due, leasing one to one worker,
and logging each attempt. One worker sends a delivery at a time: the lease is taken by a conditional
update, so of two workers that read the same due row only one moves it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, and_, or_, select, update
from sqlalchemy.sql.elements import ColumnElement


def due(table: Table, now: datetime) -> ColumnElement[bool]:
    return and_(
        table.c.status == "pending",
        table.c.next_attempt_at <= now,
        or_(table.c.lease_until.is_(None), table.c.lease_until < now),
    )


def any_due(conn: Connection, table: Table, now: datetime) -> bool:
    """Whether one is due: asked on a read connection first, so an idle worker does not take the write
    lock (on SQLite, every ingest's) twice a minute for nothing."""
    return conn.execute(select(table.c.pk).where(due(table, now)).limit(1)).first() is not None


def claim(conn: Connection, table: Table, owner: str, now: datetime, lease: timedelta) -> Any | None:
    """Lease the oldest due row and return it (None if there is none or another worker just took it)."""
    condition = due(table, now)
    row = conn.execute(select(table).where(condition).order_by(table.c.next_attempt_at).limit(1)).first()
    if row is None:
        return None
    taken = conn.execute(
        update(table).where(table.c.pk == row.pk, condition).values(lease_owner=owner, lease_until=now + lease)
    )
    return row if taken.rowcount == 1 else None


def finish(
    conn: Connection,
    table: Table,
    pk: int,
    owner: str,
    attempts: int,
    now: datetime,
    *,
    status_code: int | None,
    error: str | None,
    retry_at: datetime | None,
) -> None:
    """Log one attempt (``attempts`` before it): delivered (no error), pending again at ``retry_at``, or
    failed for good."""
    status = "delivered" if error is None else ("pending" if retry_at is not None else "failed")
    conn.execute(
        update(table)
        .where(table.c.pk == pk, table.c.lease_owner == owner)
        .values(
            status=status, attempts=attempts + 1, last_status_code=status_code,
            last_error=None if error is None else error[:1000], next_attempt_at=retry_at or now,
            lease_owner=None, lease_until=None, delivered_at=now if error is None else None,
        )
    )  # fmt: skip
