"""What the clustering of suggested topics reads and writes: the user messages no topic covers, and
the suggestions themselves, kept stable between runs.

A new cluster whose centre is close to an earlier suggestion's (cosine ≥ ``SAME_TOPIC``) *is* that
suggestion: it keeps its id and its name, and only its centre, keywords and samples move. One close
to a dismissed suggestion is not suggested again. Suggestions no cluster matches any more go.

A project's first run comes once it has enough uncovered messages to cluster, not on a clock: a new
project sees suggestions minutes after its data arrives, and an empty one is never clustered. The
next comes as the pool grows (``Timing``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import ColumnElement, Connection, and_, exists, func, insert, literal, or_, select, update

from convolens.store import categories, topics
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
    message_pks: list[int]


@dataclass
class Suggestion:
    name: str
    keywords: list[str]
    phrases: list[str]
    centroid: np.ndarray
    conversation_ids: list[str]
    size: int
    threshold: float


@dataclass
class CategorySuggestion:
    """A category of this run's suggestions (``enrich.suggest.categorise``): indexes into ``found``."""

    name: str
    centroid: np.ndarray
    suggestions: list[int]


@dataclass(frozen=True)
class Timing:
    """When a project's suggestions are recomputed: as soon as there is something to cluster, then as
    the pool of uncovered messages grows, and at least daily while anything new arrives."""

    # The first run: once this many enriched user messages no active topic covers (fewer make no clusters).
    min_messages: int = 40
    # The next: once the uncovered messages that arrived since the last run amount to this share of
    # what it read…
    growth: float = 0.2
    # …or this long after it, if any arrived at all.
    max_age: timedelta = timedelta(days=1)
    # A worker counts a project at most this often (the counts are bounded, but an idle worker asks
    # twice a second).
    check_every: timedelta = timedelta(seconds=10)


@dataclass
class RunState:
    project_pk: int
    last_run_at: datetime | None
    requested_at: datetime | None
    last_pool: int | None
    last_message_pk: int | None


def to_check(conn: Connection, timing: Timing, now: datetime, limit: int = 50) -> list[RunState]:
    """The projects whose suggestions a worker should look at now (asked for, or not counted for
    ``timing.check_every``), marked as counted so that other workers pass them over meanwhile."""
    # Two workers can both see a project without a row: the second one's insert is ignored, not a failure.
    conn.execute(
        insert_ignore(conn, suggestion_run, ["project_pk"]).from_select(
            ["project_pk"],
            select(project.c.pk).where(~exists().where(suggestion_run.c.project_pk == project.c.pk)),
        )
    )
    run = suggestion_run.c
    free = or_(run.lease_until.is_(None), run.lease_until < now)
    rows = conn.execute(
        select(run.project_pk, run.last_run_at, run.requested_at, run.last_pool, run.last_message_pk)
        .where(free, or_(_asked_for(), run.checked_at.is_(None), run.checked_at < now - timing.check_every))
        .order_by(run.checked_at.is_not(None), run.checked_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    states = [RunState(*row) for row in rows]
    if states:
        conn.execute(
            update(suggestion_run).where(run.project_pk.in_([s.project_pk for s in states])).values(checked_at=now)
        )
    return states


def _asked_for() -> ColumnElement[bool]:
    """The refresh endpoint asked for a run since the last one."""
    run = suggestion_run.c
    return and_(run.requested_at.is_not(None), or_(run.last_run_at.is_(None), run.requested_at > run.last_run_at))


def is_due(conn: Connection, state: RunState, timing: Timing, now: datetime) -> bool:
    """Whether a project's suggestions should be recomputed: asked for; or no run yet read
    ``min_messages`` uncovered messages and now there are that many (the last run's and newer ones); or
    the uncovered messages newer than the last run's newest amount to ``growth`` of what it read, or to
    any at all after ``max_age``. Every count stops at the number it needs and, once a project has had
    a run, reads only newer messages."""
    if state.requested_at is not None and (state.last_run_at is None or state.requested_at > state.last_run_at):
        return True
    after = state.last_message_pk or 0
    if not state.last_pool or state.last_pool < timing.min_messages:
        # Too few to cluster last time: due once the newer ones make up the difference (counting only
        # those keeps the count off the project's older, covered messages).
        needed = timing.min_messages - (state.last_pool or 0)
        return count_uncovered(conn, state.project_pk, after=after, at_most=needed) >= needed
    needed = max(1, math.ceil(state.last_pool * timing.growth))
    if count_uncovered(conn, state.project_pk, after=after, at_most=needed) >= needed:
        return True
    stale = state.last_run_at is None or state.last_run_at <= now - timing.max_age
    return stale and count_uncovered(conn, state.project_pk, after=after, at_most=1) >= 1


def lease_run(conn: Connection, owner: str, project_pk: int, lease: timedelta, now: datetime) -> bool:
    """Take a due project's run, unless another worker holds it."""
    run = suggestion_run.c
    return bool(
        conn.execute(
            update(suggestion_run)
            .where(run.project_pk == project_pk, or_(run.lease_until.is_(None), run.lease_until < now))
            .values(lease_owner=owner, lease_until=now + lease)
        ).rowcount
    )


def finish_run(conn: Connection, owner: str, project_pk: int, now: datetime, pool: Uncovered) -> bool:
    """Release the run, remembering what it read (the next one is due on what arrived since)."""
    return bool(
        conn.execute(
            update(suggestion_run)
            .where(suggestion_run.c.project_pk == project_pk, suggestion_run.c.lease_owner == owner)
            .values(
                last_run_at=now,
                last_pool=len(pool.texts),
                last_message_pk=max(pool.message_pks, default=None),
                lease_owner=None,
                lease_until=None,
            )
        ).rowcount
    )


def request_run(conn: Connection, project_pk: int, now: datetime) -> None:
    """Ask the workers to recompute a project's suggestions soon (the dashboard's refresh button)."""
    if conn.execute(
        update(suggestion_run).where(suggestion_run.c.project_pk == project_pk).values(requested_at=now)
    ).rowcount:
        return
    conn.execute(insert(suggestion_run).values(project_pk=project_pk, requested_at=now))


def _uncovered_query(project_pk: int, *columns):
    covered = (
        select(message_topic.c.message_pk)
        .join(topic_table, topic_table.c.pk == message_topic.c.topic_pk)
        .where(message_topic.c.message_pk == message_embedding.c.message_pk, topic_table.c.status == "active")
    )
    return select(*columns).where(message_embedding.c.project_pk == project_pk, ~exists(covered))


def count_uncovered(conn: Connection, project_pk: int, *, at_most: int, after: int = 0) -> int:
    """How many user messages with an embedding no active topic covers (newer than message ``after``),
    counting no further than ``at_most``."""
    rows = (
        _uncovered_query(project_pk, literal(1))
        .select_from(message_embedding)
        .where(message_embedding.c.message_pk > after)
        .limit(at_most)
        .subquery()
    )
    return conn.execute(select(func.count()).select_from(rows)).scalar_one()


def uncovered(conn: Connection, project_pk: int, limit: int = MAX_MESSAGES) -> Uncovered:
    """The newest user messages with an embedding that no defined topic covers."""
    rows = conn.execute(
        _uncovered_query(project_pk, message_embedding.c.vector, message.c.content, conversation.c.id, message.c.pk)
        .select_from(
            message_embedding.join(message, message.c.pk == message_embedding.c.message_pk).join(
                conversation, conversation.c.pk == message.c.conversation_pk
            )
        )
        .order_by(message_embedding.c.message_pk.desc())
        .limit(limit)
    ).all()
    width = len(rows[0][0]) // 2 if rows else 0  # float16: two bytes a dimension
    vectors = np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float16).reshape(len(rows), width)
    return Uncovered(vectors.astype(np.float32), [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])


def replace(
    conn: Connection,
    project_pk: int,
    found: list[Suggestion],
    now: datetime,
    grouped: list[CategorySuggestion] | None = None,
) -> dict[str, int]:
    """Store this run's suggestions, and their categories when ``grouped`` (store/categories.py keeps a
    category's id while most of its topics stay); returns how many were new, kept, skipped (dismissed)
    and dropped."""
    earlier = topics.list_topics(conn, project_pk, ("suggested", "dismissed"))
    earlier = [t for t in earlier if t.kind == "suggested" and t.centroid]
    centres = (
        np.stack([np.frombuffer(t.centroid, dtype=np.float16).astype(np.float32) for t in earlier]) if earlier else None
    )
    counts = {"new": 0, "kept": 0, "skipped": 0, "dropped": 0}
    matched: set[int] = set()
    stored: list[int | None] = []  # the topic pk of each of found (None: it was dismissed before)
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
            stored.append(None)
        elif same is not None:
            matched.add(same.pk)
            topics.redefine(conn, project_pk, same.pk, now, definition=definition, centroid=centroid, samples=samples)
            counts["kept"] += 1
            stored.append(same.pk)
        else:
            pk = topics.create(
                conn, project_pk, name=s.name[:128], kind="suggested", status="suggested", definition=definition,
                centroid=centroid, samples=samples, now=now,
            )  # fmt: skip
            counts["new"] += 1
            stored.append(pk)
    for t in earlier:
        if t.status == "suggested" and t.pk not in matched:
            topics.remove(conn, project_pk, t.pk, now)
            counts["dropped"] += 1
    if grouped is not None:
        placed = [
            categories.Found(c.name, c.centroid, [pk for i in c.suggestions if (pk := stored[i]) is not None])
            for c in grouped
        ]
        counts.update(categories.place(conn, project_pk, [c for c in placed if c.topic_pks], now))
    return counts
