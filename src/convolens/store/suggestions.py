"""What the clustering of suggested topics reads and writes: the user messages no topic covers, and
the suggestions themselves, kept stable between runs.

A new cluster whose centre is close to an earlier suggestion's (cosine ≥ ``SAME_TOPIC``) *is* that
suggestion: it keeps its id and its name, and only its centre, keywords and samples move. One close
to a dismissed suggestion is not suggested again. Suggestions no cluster matches any more go.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Connection, and_, exists, insert, or_, select, update

from convolens.store import topics
from convolens.store.dialect import insert_ignore
from convolens.store.tables import conversation, message, message_embedding, message_topic, project, suggestion_run
from convolens.store.tables import topic as topic_table

SAME_TOPIC = 0.8
MAX_MESSAGES = 100_000


@dataclass
class Uncovered:
    vectors: np.ndarray
    texts: list[str]
    conversation_ids: list[str]


@dataclass
class Suggestion:
    name: str
    keywords: list[str]
    phrases: list[str]
    centroid: np.ndarray
    conversation_ids: list[str]
    size: int
    threshold: float


def claim_run(conn: Connection, owner: str, every: timedelta, lease: timedelta, now: datetime) -> int | None:
    """Lease one project whose suggestions are due (asked for, or older than ``every``)."""
    # Two workers can both see a project without a row: the second one's insert is ignored, not a failure.
    conn.execute(
        insert_ignore(conn, suggestion_run, ["project_pk"]).from_select(
            ["project_pk"],
            select(project.c.pk).where(~exists().where(suggestion_run.c.project_pk == project.c.pk)),
        )
    )
    due = or_(
        suggestion_run.c.last_run_at.is_(None),
        suggestion_run.c.last_run_at < now - every,
        and_(suggestion_run.c.requested_at.is_not(None), suggestion_run.c.requested_at > suggestion_run.c.last_run_at),
    )
    free = or_(suggestion_run.c.lease_until.is_(None), suggestion_run.c.lease_until < now)
    candidate = (
        select(suggestion_run.c.project_pk)
        .where(due, free)
        .order_by(suggestion_run.c.last_run_at.is_not(None), suggestion_run.c.last_run_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return conn.execute(
        update(suggestion_run)
        .where(suggestion_run.c.project_pk.in_(candidate.scalar_subquery()))
        .values(lease_owner=owner, lease_until=now + lease)
        .returning(suggestion_run.c.project_pk)
    ).scalar()


def finish_run(conn: Connection, owner: str, project_pk: int, now: datetime) -> bool:
    return bool(
        conn.execute(
            update(suggestion_run)
            .where(suggestion_run.c.project_pk == project_pk, suggestion_run.c.lease_owner == owner)
            .values(last_run_at=now, lease_owner=None, lease_until=None)
        ).rowcount
    )


def request_run(conn: Connection, project_pk: int, now: datetime) -> None:
    """Ask the workers to recompute a project's suggestions soon (the dashboard's refresh button)."""
    if conn.execute(
        update(suggestion_run).where(suggestion_run.c.project_pk == project_pk).values(requested_at=now)
    ).rowcount:
        return
    conn.execute(insert(suggestion_run).values(project_pk=project_pk, requested_at=now))


def uncovered(conn: Connection, project_pk: int, limit: int = MAX_MESSAGES) -> Uncovered:
    """The newest user messages with an embedding that no defined topic covers."""
    covered = (
        select(message_topic.c.message_pk)
        .join(topic_table, topic_table.c.pk == message_topic.c.topic_pk)
        .where(message_topic.c.message_pk == message.c.pk, topic_table.c.status == "active")
    )
    rows = conn.execute(
        select(message_embedding.c.vector, message.c.content, conversation.c.id)
        .select_from(
            message_embedding.join(message, message.c.pk == message_embedding.c.message_pk).join(
                conversation, conversation.c.pk == message.c.conversation_pk
            )
        )
        .where(message_embedding.c.project_pk == project_pk, ~exists(covered))
        .order_by(message_embedding.c.message_pk.desc())
        .limit(limit)
    ).all()
    width = len(rows[0][0]) // 2 if rows else 0  # float16: two bytes a dimension
    vectors = np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float16).reshape(len(rows), width)
    return Uncovered(vectors.astype(np.float32), [r[1] for r in rows], [r[2] for r in rows])


def replace(conn: Connection, project_pk: int, found: list[Suggestion], now: datetime) -> dict[str, int]:
    """Store this run's suggestions; returns how many were new, kept, skipped (dismissed) and dropped."""
    earlier = topics.list_topics(conn, project_pk, ("suggested", "dismissed"))
    earlier = [t for t in earlier if t.kind == "suggested" and t.centroid]
    centres = (
        np.stack([np.frombuffer(t.centroid, dtype=np.float16).astype(np.float32) for t in earlier]) if earlier else None
    )
    counts = {"new": 0, "kept": 0, "skipped": 0, "dropped": 0}
    matched: set[int] = set()
    for s in found:
        centroid = s.centroid.astype(np.float16).tobytes()
        definition = {"keywords": s.keywords, "phrases": s.phrases, "size": s.size, "threshold": s.threshold}
        samples = list(dict.fromkeys(s.conversation_ids))[:5]
        same = None
        if centres is not None:
            similarity = centres @ s.centroid
            best = int(np.argmax(similarity))
            if similarity[best] >= SAME_TOPIC and earlier[best].pk not in matched:
                same = earlier[best]
        if same is not None and same.status == "dismissed":
            matched.add(same.pk)
            counts["skipped"] += 1
        elif same is not None:
            matched.add(same.pk)
            topics.redefine(conn, project_pk, same.pk, now, definition=definition, centroid=centroid, samples=samples)
            counts["kept"] += 1
        else:
            topics.create(
                conn, project_pk, name=s.name[:128], kind="suggested", status="suggested", definition=definition,
                centroid=centroid, samples=samples, now=now,
            )  # fmt: skip
            counts["new"] += 1
    for t in earlier:
        if t.status == "suggested" and t.pk not in matched:
            topics.remove(conn, project_pk, t.pk, now)
            counts["dropped"] += 1
    return counts
