"""Topics of a project and the work of applying them to messages stored before them.

A topic created or redefined is applied to new messages by the enrichment pipeline at once, and to the
messages already stored by a *backfill*: the worker walks message keys up to ``backfill_until`` (the
newest key when the topic changed) in batches, under a lease like the message queue's, so a backfill
survives a worker that dies and never blocks ingestion.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, delete, func, insert, or_, outerjoin, select, update

from convolens.config import Limits
from convolens.store import rollups
from convolens.store.tables import message, message_embedding, message_topic, topic

MATCHED_STATUSES = ("active", "suggested")


@dataclass
class TopicRow:
    pk: int
    project_pk: int
    name: str
    kind: str
    status: str
    definition: dict[str, Any]
    centroid: bytes | None
    samples: list[str] | None
    created_at: datetime
    updated_at: datetime
    backfill_cursor: int
    backfill_until: int
    category_pk: int | None = None


_COLUMNS = tuple(getattr(topic.c, name) for name in TopicRow.__dataclass_fields__)


def _newest_message_pk(conn: Connection, project_pk: int) -> int:
    return conn.execute(select(func.max(message.c.pk)).where(message.c.project_pk == project_pk)).scalar() or 0


def create(
    conn: Connection,
    project_pk: int,
    *,
    name: str,
    kind: str,
    definition: dict[str, Any],
    now: datetime,
    status: str = "active",
    centroid: bytes | None = None,
    samples: list[str] | None = None,
) -> int:
    return conn.execute(
        insert(topic)
        .values(
            project_pk=project_pk,
            name=name,
            kind=kind,
            status=status,
            definition=definition,
            centroid=centroid,
            samples=samples,
            created_at=now,
            updated_at=now,
            backfill_cursor=0,
            backfill_until=_newest_message_pk(conn, project_pk),
        )
        .returning(topic.c.pk)
    ).scalar_one()


def get(conn: Connection, project_pk: int, topic_pk: int) -> TopicRow | None:
    row = conn.execute(select(*_COLUMNS).where(topic.c.project_pk == project_pk, topic.c.pk == topic_pk)).first()
    return TopicRow(**row._mapping) if row else None


def in_project(conn: Connection, project_pk: int, topic_id: str) -> int | None:
    """The key of the project's topic ``topic_id`` (a decimal id as a form or a body gives it), or None when
    it is not one (not a number, longer than any key, or another project's)."""
    if not topic_id.isdigit() or len(topic_id) > 18:
        return None
    return int(topic_id) if get(conn, project_pk, int(topic_id)) is not None else None


def list_topics(conn: Connection, project_pk: int, statuses: tuple[str, ...] = ("active",)) -> list[TopicRow]:
    rows = conn.execute(
        select(*_COLUMNS).where(topic.c.project_pk == project_pk, topic.c.status.in_(statuses)).order_by(topic.c.pk)
    )
    return [TopicRow(**row._mapping) for row in rows]


def name_taken(conn: Connection, project_pk: int, name: str, except_pk: int | None = None) -> bool:
    query = select(topic.c.pk).where(
        topic.c.project_pk == project_pk, func.lower(topic.c.name) == name.lower(), topic.c.status == "active"
    )
    if except_pk is not None:
        query = query.where(topic.c.pk != except_pk)
    return conn.execute(query.limit(1)).first() is not None


@dataclass(frozen=True)
class OverLimit:
    """Why a topic cannot be defined: the field at fault, and 422 (its definition) or 409 (one too many)."""

    field: str
    message: str
    status: int


def over_limit(
    conn: Connection,
    project_pk: int,
    kind: str,
    definition: dict[str, Any],
    limits: Limits,
    except_pk: int | None = None,
) -> OverLimit | None:
    """Whether defining this topic (or redefining ``except_pk`` as it) would pass the project's limits:
    every message is matched against every topic, so their number and size are bounded."""
    keywords = list(definition.get("keywords") or []) if kind == "keyword" else []
    if len(keywords) > limits.max_keywords_per_topic:
        return OverLimit("keywords", f"at most {limits.max_keywords_per_topic} keywords a topic", 422)
    for i, keyword in enumerate(keywords):
        if len(keyword) > limits.max_keyword_chars:
            return OverLimit(f"keywords[{i}]", f"at most {limits.max_keyword_chars} characters a keyword", 422)
    examples = list(definition.get("examples") or []) if kind == "semantic" else []
    if len(examples) > limits.max_examples_per_topic:
        return OverLimit("examples", f"at most {limits.max_examples_per_topic} examples a topic", 422)
    query = select(func.count()).select_from(topic).where(topic.c.project_pk == project_pk, topic.c.status == "active")
    if except_pk is not None:
        query = query.where(topic.c.pk != except_pk)
    if conn.execute(query).scalar_one() >= limits.max_topics_per_project:
        message = f"this project has {limits.max_topics_per_project} topics, the most it may have"
        return OverLimit("topics", message, 409)
    return None


def redefine(conn: Connection, project_pk: int, topic_pk: int, now: datetime, **values: Any) -> None:
    """Change a topic (name, kind, definition, status); its old matches go and a backfill starts again."""
    conn.execute(delete(message_topic).where(message_topic.c.topic_pk == topic_pk))
    rollups.forget_topic(conn, project_pk, topic_pk, now)
    conn.execute(
        update(topic)
        .where(topic.c.project_pk == project_pk, topic.c.pk == topic_pk)
        .values(
            **values,
            updated_at=now,
            backfill_cursor=0,
            backfill_until=_newest_message_pk(conn, project_pk),
            lease_owner=None,
            lease_until=None,
        )
    )


def annotate(conn: Connection, project_pk: int, topic_pk: int, now: datetime, **values: Any) -> None:
    """Change what a topic shows (name, description, sample conversations) but not what it matches: its
    matches, rollups and backfill stay as they are (a stable suggestion, store/suggestions.py)."""
    conn.execute(
        update(topic).where(topic.c.project_pk == project_pk, topic.c.pk == topic_pk).values(**values, updated_at=now)
    )


def same_definition(row: TopicRow, name: str, kind: str, definition: dict[str, Any]) -> bool:
    """Whether an edit leaves what a topic matches as it is (only its category may differ)."""
    return row.status == "active" and (row.name, row.kind, row.definition) == (name, kind, definition)


def accept(conn: Connection, row: TopicRow, name: str, now: datetime) -> None:
    """A suggestion becomes a semantic topic: its sample phrases and cluster centre define it, and the
    similarity 90% of its members reached against the centre is its threshold."""
    definition = {
        "description": None,
        "examples": list(row.definition.get("phrases", []))[:20],
        "keywords": row.definition.get("keywords", []),
        "threshold": row.definition.get("threshold"),
    }
    redefine(conn, row.project_pk, row.pk, now, name=name, kind="semantic", definition=definition, status="active")


def set_status(conn: Connection, project_pk: int, topic_pk: int, status: str, now: datetime) -> None:
    """Dismiss a suggestion (its matches go, and the clustering will not suggest it again)."""
    if status not in MATCHED_STATUSES:
        conn.execute(delete(message_topic).where(message_topic.c.topic_pk == topic_pk))
    conn.execute(
        update(topic)
        .where(topic.c.project_pk == project_pk, topic.c.pk == topic_pk)
        .values(status=status, updated_at=now)
    )


def remove(conn: Connection, project_pk: int, topic_pk: int, now: datetime) -> bool:
    conn.execute(delete(message_topic).where(message_topic.c.topic_pk == topic_pk))
    rollups.forget_topic(conn, project_pk, topic_pk, now)
    return bool(conn.execute(delete(topic).where(topic.c.project_pk == project_pk, topic.c.pk == topic_pk)).rowcount)


def matched_topics(conn: Connection) -> list[TopicRow]:
    """Every topic the pipeline matches, of every project (the worker caches their compiled form)."""
    rows = conn.execute(select(*_COLUMNS).where(topic.c.status.in_(MATCHED_STATUSES)).order_by(topic.c.pk))
    return [TopicRow(**row._mapping) for row in rows]


def existing(conn: Connection, topic_pks: set[int]) -> set[int]:
    """Which of these topics still exist and are matched (one may have gone while a worker held it)."""
    if not topic_pks:
        return set()
    return set(
        conn.execute(
            select(topic.c.pk).where(topic.c.pk.in_(topic_pks), topic.c.status.in_(MATCHED_STATUSES))
        ).scalars()
    )


# -- backfills -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackfillMessage:
    pk: int
    conversation_pk: int
    content: str
    created_at: datetime
    vector: bytes | None


def claim_backfill(
    conn: Connection, owner: str, lease: timedelta, now: datetime, after_project: int = 0
) -> TopicRow | None:
    """Lease one topic whose backfill is unfinished: projects take turns (the first project above
    ``after_project``, the one served last, then round), so a project that redefined a hundred topics
    does not hold up another's one; within a project, the topic changed longest ago first."""
    free = or_(topic.c.lease_until.is_(None), topic.c.lease_until < now)
    candidate = (
        select(topic.c.pk)
        .where(topic.c.backfill_cursor < topic.c.backfill_until, topic.c.status.in_(MATCHED_STATUSES), free)
        .order_by(case((topic.c.project_pk > after_project, 0), else_=1), topic.c.project_pk, topic.c.updated_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    pk = conn.execute(
        update(topic)
        .where(topic.c.pk.in_(candidate.scalar_subquery()))
        .values(lease_owner=owner, lease_until=now + lease)
        .returning(topic.c.pk)
    ).scalar()
    if pk is None:
        return None
    row = conn.execute(select(*_COLUMNS).where(topic.c.pk == pk)).one()
    return TopicRow(**row._mapping)


def backfill_batch(conn: Connection, row: TopicRow, limit: int) -> tuple[list[BackfillMessage], int]:
    """The next enriched user messages the topic has not seen, and the cursor to advance to.

    It stops before the first message still pending: the pipeline may yet match it with an older
    version of the topic, so the backfill waits for it rather than racing it.
    """
    rows = conn.execute(
        select(
            message.c.pk,
            message.c.conversation_pk,
            message.c.content,
            message.c.created_at,
            message.c.role,
            message.c.enriched_version,
            message_embedding.c.vector,
        )
        .select_from(outerjoin(message, message_embedding, message_embedding.c.message_pk == message.c.pk))
        .where(
            message.c.project_pk == row.project_pk,
            message.c.pk > row.backfill_cursor,
            message.c.pk <= row.backfill_until,
        )
        .order_by(message.c.pk)
        .limit(limit)
    ).all()
    batch = []
    cursor = row.backfill_cursor
    for r in rows:
        if r.enriched_version is None:
            break
        cursor = r.pk
        if r.role == "user":
            batch.append(BackfillMessage(r.pk, r.conversation_pk, r.content, r.created_at, r.vector))
    if len(rows) < limit and (not rows or rows[-1].enriched_version is not None):
        cursor = row.backfill_until  # nothing left in range (deleted messages leave gaps)
    return batch, cursor


def save_backfill(
    conn: Connection,
    owner: str,
    row: TopicRow,
    links: list[dict[str, Any]],
    cursor: int,
    now: datetime,
    lease: timedelta,
) -> bool:
    """Record a batch's matches and move the cursor, if ``owner`` still holds the topic."""
    moved = conn.execute(
        update(topic)
        .where(and_(topic.c.pk == row.pk, topic.c.lease_owner == owner, topic.c.updated_at == row.updated_at))
        .values(
            backfill_cursor=cursor,
            lease_owner=None if cursor >= row.backfill_until else owner,
            lease_until=None if cursor >= row.backfill_until else now + lease,
        )
    ).rowcount
    if not moved:
        return False
    if links:
        conn.execute(
            delete(message_topic).where(
                message_topic.c.topic_pk == row.pk,
                message_topic.c.message_pk.in_([link["message_pk"] for link in links]),
            )
        )
        conn.execute(
            insert(message_topic), [{**link, "topic_pk": row.pk, "project_pk": row.project_pk} for link in links]
        )
        if row.status == "active":  # suggestions are not rolled up (store/rollups.py)
            days = {rollups.day_of(link["created_at"]) for link in links}
            # and the days their conversations started, which a topic's outcome counts are kept on
            days |= rollups.start_days(conn, {link["conversation_pk"] for link in links}).get(row.project_pk, set())
            rollups.mark(conn, row.project_pk, days, now)
    return True
