"""The enrichment work queue, kept in the message table itself: a message is pending until its
``enriched_version`` is set. Workers claim a batch with a lease (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so concurrent workers never take the same rows) and save results only while they still
hold the lease; a worker that dies leaves rows whose lease simply expires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, or_, select, update

from convolens.store.tables import message


@dataclass(frozen=True)
class PendingMessage:
    pk: int
    project_pk: int
    role: str
    kind: str
    content: str


@dataclass(frozen=True)
class EnrichmentResult:
    pk: int
    language: str | None
    sentiment: float | None


def claim(conn: Connection, owner: str, limit: int, lease: timedelta, now: datetime) -> list[PendingMessage]:
    """Lease up to ``limit`` pending messages to ``owner``, oldest first."""
    free = or_(message.c.lease_until.is_(None), message.c.lease_until < now)
    candidates = (
        select(message.c.pk)
        .where(message.c.enriched_version.is_(None), free)
        .order_by(message.c.pk)
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite's single writer needs no lock hint
    )
    rows = conn.execute(
        update(message)
        .where(message.c.pk.in_(candidates.scalar_subquery()))
        .values(lease_owner=owner, lease_until=now + lease)
        .returning(message.c.pk, message.c.project_pk, message.c.role, message.c.kind, message.c.content)
    ).all()
    return sorted((PendingMessage(*row) for row in rows), key=lambda m: m.pk)


def save(conn: Connection, owner: str, version: int, results: list[EnrichmentResult]) -> list[int]:
    """Store results for the messages ``owner`` still holds; returns the keys it saved."""
    saved = []
    for result in results:
        done = conn.execute(
            update(message)
            .where(and_(message.c.pk == result.pk, message.c.lease_owner == owner))
            .values(
                language=result.language,
                sentiment=result.sentiment,
                enriched_version=version,
                lease_owner=None,
                lease_until=None,
            )
        ).rowcount
        if done:
            saved.append(result.pk)
    return saved


def requeue(conn: Connection, project_pk: int | None = None) -> int:
    """Mark messages pending again (after a model or topic change); returns how many."""
    query = update(message).values(enriched_version=None, lease_owner=None, lease_until=None)
    if project_pk is not None:
        query = query.where(message.c.project_pk == project_pk)
    return conn.execute(query).rowcount
