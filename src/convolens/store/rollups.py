"""Rollups: what the dashboards and the metrics API add up, kept per project x UTC day x tenant x
dimension (``none``, ``language``, ``model``, ``topic``) x value, so that a read costs O(days), not
O(messages).

Each row holds additive figures (messages, user messages, sentiment sum and count, ratings, tokens per
model, conversations started, conversations per outcome) and the *sets* of conversations and end users
active that day, delta-encoded and compressed: distinct counts over a week or a month are unions of daily
sets, exact, which counters could not give.

How they stay correct: every write that changes a day's figures (ingest, ratings, enrichment, topic
backfills, erasure, a topic redefined) inserts a *mark* for (project, day) in the same transaction. A
worker leases a marked day, recomputes it from the base tables in one snapshot (``summarize``, the same
function the read path uses for live days), replaces its rows and deletes exactly the marks its
snapshot saw; a mark committed later stays, so the day is done again. Readers treat a marked day as
live (``store/metrics.py``), so a figure is never stale, only sometimes slower.

Outcomes (resolved, unresolved, …) belong to the day a conversation *started*, in its latest outcome: a
conversation has one start, so it counts once however many days it runs, a week or a month adds its days
up exactly, and the share reads as "of the conversations begun that week, how many ended helped" — the
same cohort as ``conversations_started``. (By its last message instead, a conversation would move to
another bucket each time it grew, and a week's figure would change for reasons outside the week.) When a
thread grows its outcome is recomputed by enrichment, which marks the conversation's start day too.
In a group (a topic, a language, a model) a conversation counts in each group its messages are in, as
its conversation count does.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Connection, and_, case, delete, func, insert, literal, or_, select, update
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Subquery

from convolens.store.dialect import bucket, insert_ignore
from convolens.store.driver import Statements
from convolens.store.tables import (
    conversation,
    message,
    message_topic,
    rollup,
    rollup_dirty,
    rollup_state,
    topic,
)

DIMENSIONS = ("none", "language", "model", "topic")
ALL_TENANTS = "*"


def tenant_scope(tenant_id: str | None) -> str:
    """The scope key of one tenant's rows (``*`` is every tenant together)."""
    return "-" if tenant_id is None else "t:" + tenant_id


def scope_tenant(scope: str) -> str | None:
    return None if scope == "-" else scope[2:]


def day_of(value: datetime) -> str:
    return value.date().isoformat()


def day_start(day: str) -> datetime:
    return datetime.fromisoformat(day)


def days_between(first: datetime, last: datetime, cap: int = 3700) -> list[str]:
    """Every day label from ``first`` to ``last`` (at most ``cap`` of them, the newest kept)."""
    start, end = first.date(), last.date()
    if (end - start).days >= cap:
        start = end - timedelta(days=cap - 1)
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


# -- member sets -----------------------------------------------------------------------------------


def pack(keys: Iterable[int]) -> bytes:
    """Sorted, delta-encoded, deflated int64 keys: a day's 3,000 conversations take a few KiB."""
    array = np.fromiter(sorted(set(keys)), dtype=np.int64)
    return zlib.compress(np.diff(array, prepend=0).tobytes(), 1)


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting: NumPy 2's default hash-based unique took 1.8 s on a year of daily sets
    (about 2 million keys) where sorting takes 0.15 s."""
    keys = np.sort(keys)
    if len(keys) < 2:
        return keys
    return keys[np.concatenate(([True], keys[1:] != keys[:-1]))]


def unpack(data: bytes) -> np.ndarray:
    return np.cumsum(np.frombuffer(zlib.decompress(data), dtype=np.int64))


@dataclass
class Summary:
    """The figures of one (day, tenant scope, value), additive except for the two member sets."""

    messages: int = 0
    user_messages: int = 0
    sentiment_sum: float = 0.0
    sentiment_count: int = 0
    ratings_up: int = 0
    ratings_down: int = 0
    rated: int = 0
    rating_sum: int = 0
    conversations_started: int = 0
    tokens: dict[str, list[int]] = field(default_factory=dict)
    # {outcome: conversations started in the row's day}: additive, a conversation has one start.
    outcomes: dict[str, int] = field(default_factory=dict)
    conversations: set[int] = field(default_factory=set)
    users: set[int] = field(default_factory=set)

    def add_row(self, conversation_pk: int, user_pk: int | None, model: str | None, *figures: int | None) -> None:
        """One grouped row's ratings (up, down, rated, sum), tokens (in, out) and members."""
        up, down, rated, rating_sum, tokens_in, tokens_out = (int(f or 0) for f in figures)
        self.ratings_up += up
        self.ratings_down += down
        self.rated += rated
        self.rating_sum += rating_sum
        if model is not None:
            tokens = self.tokens.setdefault(model, [0, 0])
            tokens[0] += tokens_in
            tokens[1] += tokens_out
        self.conversations.add(conversation_pk)
        if user_pk is not None:
            self.users.add(user_pk)

    def add(self, other: Summary) -> None:
        self.messages += other.messages
        self.user_messages += other.user_messages
        self.sentiment_sum += other.sentiment_sum
        self.sentiment_count += other.sentiment_count
        self.ratings_up += other.ratings_up
        self.ratings_down += other.ratings_down
        self.rated += other.rated
        self.rating_sum += other.rating_sum
        self.conversations_started += other.conversations_started
        for model, (tokens_in, tokens_out) in other.tokens.items():
            mine = self.tokens.setdefault(model, [0, 0])
            mine[0] += tokens_in
            mine[1] += tokens_out
        for outcome, count in other.outcomes.items():
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + count
        self.conversations |= other.conversations
        self.users |= other.users


Key = tuple[str, str, str]  # (day, tenant scope, value)


def _value_expression(dimension: str) -> tuple[ColumnElement, bool]:
    """The grouped column of a dimension, and whether it needs the topic links joined."""
    if dimension == "none":
        return literal(""), False
    if dimension == "language":
        return message.c.language, False
    if dimension == "model":
        return message.c.model, False
    if dimension == "topic":
        return message_topic.c.topic_pk, True
    if dimension.startswith("metadata."):
        return conversation.c.metadata[dimension[len("metadata.") :]].as_string(), False
    raise ValueError(f"unknown dimension {dimension!r}")


# What ``Summary.add_row`` takes after the members: ratings up, down, rated, their sum; tokens in, out.
_RATINGS_AND_TOKENS = (
    func.sum(case((message.c.rating > 0, 1), else_=0)),
    func.sum(case((message.c.rating < 0, 1), else_=0)),
    func.count(message.c.rating),
    func.sum(message.c.rating),
    func.sum(message.c.input_tokens),
    func.sum(message.c.output_tokens),
)


def _messages_in(project_pk: int, start: datetime, end: datetime, tenant_id: str | None) -> list[ColumnElement]:
    """The project's messages (not custom events) created in [start, end), of one tenant if given."""
    conditions = [
        message.c.project_pk == project_pk,
        message.c.created_at >= start,
        message.c.created_at < end,
        message.c.kind != "event",
    ]
    if tenant_id is not None:
        conditions.append(conversation.c.tenant_id == tenant_id)
    return conditions


def summarize(
    conn: Connection,
    project_pk: int,
    start: datetime,
    end: datetime,
    dimension: str,
    tenant_id: str | None = None,
    with_outcomes: bool = True,
) -> dict[Key, Summary]:
    """Figures per (day, tenant scope, value) of the messages created in ``[start, end)``, from the base
    tables (``tenant_id`` keeps one tenant's). The one definition of every figure: the worker stores its
    output as rollups, and readers call it for the days that have none yet. ``with_outcomes=False``
    leaves the outcome counts to the caller (``compute`` counts three dimensions' in one query)."""
    day = bucket(conn, message.c.created_at, "day")
    source = message.join(conversation, conversation.c.pk == message.c.conversation_pk)
    if dimension == "category":
        # One row per message and category however many of the category's topics it is in.
        links = _category_links(project_pk, start, end)
        value, needs_topics = links.c.category_pk, False
        source = source.join(links, links.c.message_pk == message.c.pk)
    else:
        value, needs_topics = _value_expression(dimension)
    if needs_topics:
        # Active topics only: suggestions are redefined by every clustering run, and not charted.
        source = source.join(message_topic, message_topic.c.message_pk == message.c.pk).join(
            topic, and_(topic.c.pk == message_topic.c.topic_pk, topic.c.status == "active")
        )
    conditions = _messages_in(project_pk, start, end, tenant_id)
    is_user = message.c.role == "user"
    user_sentiment = case((is_user, message.c.sentiment))
    keys = (
        day,
        conversation.c.tenant_id,
        value,
        message.c.conversation_pk,
        conversation.c.end_user_pk,
        message.c.model,
    )
    rows = conn.execute(
        select(
            *keys,
            func.count(),
            func.sum(case((is_user, 1), else_=0)),
            func.sum(user_sentiment),
            func.count(user_sentiment),
            *_RATINGS_AND_TOKENS,
        )
        .select_from(source)
        .where(*conditions)
        .group_by(*keys)
    )
    out: dict[Key, Summary] = defaultdict(Summary)
    for row in rows:
        label, tenant, group, conv_pk, user_pk, model, n, users_n, s_sum, s_n, up, down, rated, r_sum, t_in, t_out = row
        figures = out[(label, tenant_scope(tenant), "" if group is None else str(group))]
        figures.messages += n
        figures.user_messages += int(users_n or 0)
        figures.sentiment_sum += float(s_sum or 0.0)
        figures.sentiment_count += s_n
        figures.add_row(conv_pk, user_pk, model, up, down, rated, r_sum, t_in, t_out)
    if dimension == "none":
        _count_started(conn, project_pk, start, end, tenant_id, out)
    if with_outcomes:
        _count_outcomes(conn, project_pk, start, end, dimension, tenant_id, out)
    if dimension in ("topic", "category"):
        _topic_replies(conn, project_pk, start, end, tenant_id, out, by_category=dimension == "category")
    return out


def _category_links(project_pk: int, start: datetime, end: datetime) -> Subquery:
    """(message, category) of the active topics' matches, each pair once: a message in two topics of one
    category counts once in it. Topics in no category are category 0 (shown as uncategorised). Never
    rolled up (a category's topics change with every clustering run): summarized live per read."""
    return (
        select(message_topic.c.message_pk, func.coalesce(topic.c.category_pk, 0).label("category_pk"))
        .join(topic, and_(topic.c.pk == message_topic.c.topic_pk, topic.c.status == "active"))
        # A link carries its message's time: the window bounds the DISTINCT, which the planner cannot
        # push the join's conditions into.
        .where(
            message_topic.c.project_pk == project_pk,
            message_topic.c.created_at >= start,
            message_topic.c.created_at < end,
        )
        .distinct()
        .subquery("category_links")
    )


def _topic_replies(
    conn: Connection,
    project_pk: int,
    start: datetime,
    end: datetime,
    tenant_id: str | None,
    out: dict[Key, Summary],
    by_category: bool = False,
) -> None:
    """Ratings and tokens of a topic (or of a category: its topics' conversations, each once): those of
    the replies (and other non-user messages) in the conversations whose user messages matched it the
    same day, since topics are matched on user messages but answers are what users rate and what costs
    tokens.

    Two plain queries joined here rather than one join in SQL: PostgreSQL planned the join on a computed
    day as a nested loop that took minutes for one day of a million-conversation project."""
    group_of = dict(
        conn.execute(
            select(topic.c.pk, func.coalesce(topic.c.category_pk, 0) if by_category else topic.c.pk).where(
                topic.c.project_pk == project_pk, topic.c.status == "active"
            )
        ).all()
    )
    active = list(group_of)
    if not active:
        return
    link_day = bucket(conn, message_topic.c.created_at, "day")
    topics_of: dict[tuple[str, int], set[int]] = defaultdict(set)
    for label, conversation_pk, topic_pk in conn.execute(
        select(link_day, message_topic.c.conversation_pk, message_topic.c.topic_pk)
        .where(
            message_topic.c.topic_pk.in_(active),
            message_topic.c.created_at >= start,
            message_topic.c.created_at < end,
        )
        .distinct()
    ):
        topics_of[(label, conversation_pk)].add(group_of[topic_pk])
    if not topics_of:
        return
    day = bucket(conn, message.c.created_at, "day")
    keys = (day, conversation.c.tenant_id, message.c.conversation_pk, conversation.c.end_user_pk, message.c.model)
    conditions = [*_messages_in(project_pk, start, end, tenant_id), message.c.role != "user"]
    rows = conn.execute(
        select(*keys, *_RATINGS_AND_TOKENS)
        .select_from(message.join(conversation, conversation.c.pk == message.c.conversation_pk))
        .where(*conditions)
        .group_by(*keys)
    )
    for label, tenant, conv_pk, user_pk, model, *figures in rows:
        for topic_pk in topics_of.get((label, conv_pk), ()):
            out[(label, tenant_scope(tenant), str(topic_pk))].add_row(conv_pk, user_pk, model, *figures)


def _count_started(
    conn: Connection,
    project_pk: int,
    start: datetime,
    end: datetime,
    tenant_id: str | None,
    out: dict[Key, Summary],
) -> None:
    day = bucket(conn, conversation.c.started_at, "day")
    conditions = [
        conversation.c.project_pk == project_pk,
        conversation.c.started_at >= start,
        conversation.c.started_at < end,
    ]
    if tenant_id is not None:
        conditions.append(conversation.c.tenant_id == tenant_id)
    rows = conn.execute(
        select(day, conversation.c.tenant_id, func.count()).where(*conditions).group_by(day, conversation.c.tenant_id)
    )
    for label, tenant, count in rows:
        out[(label, tenant_scope(tenant), "")].conversations_started += count


def _count_message_outcomes(
    conn: Connection, project_pk: int, start: datetime, end: datetime, by_dimension: dict[str, dict[Key, Summary]]
) -> None:
    """``_count_outcomes`` of ``none``, ``language`` and ``model`` at once, into ``by_dimension``: one scan
    of the messages of the conversations started in [start, end) instead of three (the rollup worker's
    day took 1.5x as long with three)."""
    day = bucket(conn, conversation.c.started_at, "day")
    rows = conn.execute(
        select(
            day,
            conversation.c.tenant_id,
            conversation.c.pk,
            conversation.c.outcome,
            message.c.language,
            message.c.model,
        )
        .select_from(
            conversation.join(message, and_(message.c.conversation_pk == conversation.c.pk, message.c.kind != "event"))
        )
        .where(
            conversation.c.project_pk == project_pk,
            conversation.c.started_at >= start,
            conversation.c.started_at < end,
            conversation.c.outcome.is_not(None),
        )
        .distinct()
    )
    seen: dict[str, set[tuple]] = {"none": set(), "language": set(), "model": set()}
    for label, tenant, conversation_pk, outcome, language, model in rows:
        scope = tenant_scope(tenant)
        for dimension, group in (("none", ""), ("language", language), ("model", model)):
            key = (label, scope, "" if group is None else str(group), outcome, conversation_pk)
            if key not in seen[dimension]:
                seen[dimension].add(key)
                figures = by_dimension[dimension][key[:3]]
                figures.outcomes[outcome] = figures.outcomes.get(outcome, 0) + 1


def _count_outcomes(
    conn: Connection,
    project_pk: int,
    start: datetime,
    end: datetime,
    dimension: str,
    tenant_id: str | None,
    out: dict[Key, Summary],
) -> None:
    """Conversations per outcome, by the day they started in [start, end), each once per group: the
    dimension's values among its messages (any day's: its outcome is the whole thread's), or its topics'."""
    day = bucket(conn, conversation.c.started_at, "day")
    conditions = [
        conversation.c.project_pk == project_pk,
        conversation.c.started_at >= start,
        conversation.c.started_at < end,
        conversation.c.outcome.is_not(None),
    ]
    if tenant_id is not None:
        conditions.append(conversation.c.tenant_id == tenant_id)
    source = conversation
    if dimension == "none":
        value: ColumnElement = literal("")
    elif dimension.startswith("metadata."):
        value = conversation.c.metadata[dimension[len("metadata.") :]].as_string()
    elif dimension in ("language", "model"):
        value = message.c.language if dimension == "language" else message.c.model
        source = conversation.join(
            message, and_(message.c.conversation_pk == conversation.c.pk, message.c.kind != "event")
        )
    elif dimension in ("topic", "category"):
        value = func.coalesce(topic.c.category_pk, 0) if dimension == "category" else message_topic.c.topic_pk
        source = conversation.join(message_topic, message_topic.c.conversation_pk == conversation.c.pk).join(
            topic, and_(topic.c.pk == message_topic.c.topic_pk, topic.c.status == "active")
        )
    else:
        raise ValueError(f"unknown dimension {dimension!r}")
    keys = (day, conversation.c.tenant_id, value, conversation.c.outcome)
    counted = func.count() if source is conversation else func.count(conversation.c.pk.distinct())
    rows = conn.execute(select(*keys, counted).select_from(source).where(*conditions).group_by(*keys))
    for label, tenant, group, outcome, count in rows:
        figures = out[(label, tenant_scope(tenant), "" if group is None else str(group))]
        figures.outcomes[outcome] = figures.outcomes.get(outcome, 0) + count


def with_all_tenants(summaries: dict[Key, Summary]) -> dict[Key, Summary]:
    """Adds the ``*`` scope: every tenant's figures of a (day, value) together."""
    merged: dict[Key, Summary] = defaultdict(Summary)
    for (label, _scope, value), figures in summaries.items():
        merged[(label, ALL_TENANTS, value)].add(figures)
    return {**summaries, **merged}


# -- marks: which days changed -----------------------------------------------------------------------


def mark(conn: Connection, project_pk: int, days: Iterable[str], now: datetime) -> None:
    """Record, in the caller's transaction, that these days of the project changed."""
    sql = Statements(conn)
    marked_at = sql.timestamp(now)
    rows = [(project_pk, day, marked_at) for day in sorted(set(days))]
    # Through the driver: every ingest transaction runs this.
    sql.executemany(
        f"INSERT INTO rollup_dirty (project_pk, day, marked_at) VALUES ({sql.mark}, {sql.mark}, {sql.mark})", rows
    )


def mark_statement(sql: Statements, project_pk: int, days: Iterable[str], now: datetime) -> tuple[str, tuple, bool]:
    """``mark``'s work as one statement ``(sql, params, plan_each_time)``, for a caller that sends it
    with others in one round trip (``Statements.execute_together``); ``days`` must not be empty."""
    marked_at = sql.timestamp(now)
    ordered = sorted(set(days))
    assert ordered, "no days to mark"
    values = ", ".join([sql.row_marks(3)] * len(ordered))
    params = tuple(value for day in ordered for value in (project_pk, day, marked_at))
    return f"INSERT INTO rollup_dirty (project_pk, day, marked_at) VALUES {values}", params, False


def mark_messages(conn: Connection, message_pks: list[int], now: datetime) -> None:
    """Mark the days of these messages (whatever projects they are in)."""
    if not message_pks:
        return
    label = bucket(conn, message.c.created_at, "day")
    pairs = conn.execute(
        select(message.c.project_pk, label).where(message.c.pk.in_(message_pks)).group_by(message.c.project_pk, label)
    ).all()
    by_project: dict[int, set[str]] = defaultdict(set)
    for project_pk, label_value in pairs:
        by_project[project_pk].add(label_value)
    for project_pk, days in by_project.items():
        mark(conn, project_pk, days, now)


def start_days(conn: Connection, conversation_pks: Iterable[int]) -> dict[int, set[str]]:
    """{project: the days these conversations started}: the days their outcome counts in, which a change
    of their outcome or of their topics must mark besides the days of the messages that changed."""
    keys = sorted(set(conversation_pks))
    label = bucket(conn, conversation.c.started_at, "day")
    by_project: dict[int, set[str]] = defaultdict(set)
    for start in range(0, len(keys), 500):
        for project_pk, day in conn.execute(
            select(conversation.c.project_pk, label)
            .where(conversation.c.pk.in_(keys[start : start + 500]), conversation.c.started_at.is_not(None))
            .distinct()
        ):
            by_project[project_pk].add(day)
    return by_project


def forget_topic(conn: Connection, project_pk: int, topic_pk: int, now: datetime) -> None:
    """A topic deleted or redefined: its rows go, and their days are marked so they are redone."""
    days = conn.execute(
        select(rollup.c.day)
        .where(rollup.c.project_pk == project_pk, rollup.c.dimension == "topic", rollup.c.value == str(topic_pk))
        .distinct()
    ).scalars()
    mark(conn, project_pk, days, now)
    conn.execute(
        delete(rollup).where(
            rollup.c.project_pk == project_pk, rollup.c.dimension == "topic", rollup.c.value == str(topic_pk)
        )
    )


def dirty_days(conn: Connection, project_pk: int, first: str, last: str) -> set[str]:
    """Days in [first, last] whose rollups are behind the base tables."""
    return set(
        conn.execute(
            select(rollup_dirty.c.day)
            .where(rollup_dirty.c.project_pk == project_pk, rollup_dirty.c.day >= first, rollup_dirty.c.day <= last)
            .distinct()
        ).scalars()
    )


# -- the worker's side: lease a marked day, recompute it, replace its rows -----------------------------


@dataclass(frozen=True)
class DueDay:
    project_pk: int
    day: str


def claim(
    conn: Connection,
    owner: str,
    now: datetime,
    *,
    settle: timedelta,
    lease: timedelta,
    limit: int = 4,
    rest: float = 5.0,
    project_pk: int | None = None,
) -> list[DueDay]:
    """Lease up to ``limit`` marked days whose first mark is older than ``settle`` (so a busy day is redone
    every few seconds, not after every batch) and which were not just recomputed at length: a day that
    took s seconds waits ``rest``·s before its next run, which bounds rollups to a sixth of a worker's time."""
    oldest = func.min(rollup_dirty.c.marked_at)
    candidates = conn.execute(
        select(rollup_dirty.c.project_pk, rollup_dirty.c.day, oldest)
        .where(*([rollup_dirty.c.project_pk == project_pk] if project_pk is not None else []))
        .group_by(rollup_dirty.c.project_pk, rollup_dirty.c.day)
        .having(oldest <= now - settle)
        .order_by(oldest)
        .limit(limit * 4)
    ).all()
    claimed: list[DueDay] = []
    for candidate_pk, day, _ in candidates:
        if len(claimed) >= limit:
            break
        conn.execute(
            insert_ignore(conn, rollup_state, ["project_pk", "day"]),
            {"project_pk": candidate_pk, "day": day, "refresh_seconds": 0.0},
        )
        state = rollup_state.c
        free = or_(state.lease_until.is_(None), state.lease_until < now)
        row = conn.execute(
            update(rollup_state)
            .where(state.project_pk == candidate_pk, state.day == day, free)
            .values(lease_owner=owner, lease_until=now + lease)
            .returning(state.refreshed_at, state.refresh_seconds)
        ).first()
        if row is None:
            continue
        refreshed_at, seconds = row
        if refreshed_at is not None and refreshed_at + timedelta(seconds=rest * (seconds or 0.0)) > now:
            conn.execute(
                update(rollup_state)
                .where(state.project_pk == candidate_pk, state.day == day, state.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )
            continue
        claimed.append(DueDay(candidate_pk, day))
    return claimed


@dataclass
class DayRollup:
    project_pk: int
    day: str
    rows: list[dict[str, Any]]
    marks: list[int]


def compute(conn: Connection, due: DueDay) -> DayRollup:
    """A day's rows from the base tables, and the marks this snapshot covers. ``conn`` must read one
    snapshot throughout (a SQLite read transaction; REPEATABLE READ on PostgreSQL)."""
    marks = list(
        conn.execute(
            select(rollup_dirty.c.pk).where(rollup_dirty.c.project_pk == due.project_pk, rollup_dirty.c.day == due.day)
        ).scalars()
    )
    start = day_start(due.day)
    end = start + timedelta(days=1)
    # Outcomes of topics in summarize; of the rest in one scan below.
    by_dimension = {
        d: summarize(conn, due.project_pk, start, end, d, with_outcomes=d == "topic") for d in DIMENSIONS if d != "none"
    }
    # Every message has exactly one language (or none, ""), so the day's totals are the languages'
    # summed and their member sets united: no fourth scan of the day.
    totals: dict[Key, Summary] = defaultdict(Summary)
    for (label, scope, _language), figures in by_dimension["language"].items():
        totals[(label, scope, "")].add(figures)
    _count_started(conn, due.project_pk, start, end, None, totals)
    by_dimension["none"] = totals
    _count_message_outcomes(conn, due.project_pk, start, end, by_dimension)
    rows = []
    for dimension in DIMENSIONS:
        summaries = with_all_tenants(by_dimension[dimension])
        for (label, scope, value), figures in summaries.items():
            rows.append(
                {
                    "project_pk": due.project_pk,
                    "scope": scope,
                    "dimension": dimension,
                    "day": label,
                    "value": value,
                    "messages": figures.messages,
                    "user_messages": figures.user_messages,
                    "sentiment_sum": figures.sentiment_sum,
                    "sentiment_count": figures.sentiment_count,
                    "ratings_up": figures.ratings_up,
                    "ratings_down": figures.ratings_down,
                    "rated": figures.rated,
                    "rating_sum": figures.rating_sum,
                    "conversations_started": figures.conversations_started,
                    "tokens": figures.tokens or None,
                    "outcomes": figures.outcomes or None,
                    "conversation_count": len(figures.conversations),
                    "user_count": len(figures.users),
                    "conversation_set": pack(figures.conversations),
                    "user_set": pack(figures.users),
                }
            )
    return DayRollup(due.project_pk, due.day, rows, marks)


def store(conn: Connection, owner: str, result: DayRollup, now: datetime, seconds: float) -> bool:
    """Replace the day's rows if ``owner`` still holds its lease; drop the marks the result covers."""
    state = rollup_state.c
    held = conn.execute(
        update(rollup_state)
        .where(state.project_pk == result.project_pk, state.day == result.day, state.lease_owner == owner)
        .values(lease_owner=None, lease_until=None, refreshed_at=now, refresh_seconds=seconds)
    ).rowcount
    if not held:
        return False
    conn.execute(delete(rollup).where(rollup.c.project_pk == result.project_pk, rollup.c.day == result.day))
    if result.rows:
        conn.execute(insert(rollup), result.rows)
    for start in range(0, len(result.marks), 500):
        conn.execute(delete(rollup_dirty).where(rollup_dirty.c.pk.in_(result.marks[start : start + 500])))
    return True


# -- the read side -----------------------------------------------------------------------------------


def stored(
    conn: Connection,
    project_pk: int,
    dimension: str,
    first: str,
    last: str,
    scope: str | None,
) -> list[tuple[str, str, str, Summary, int, int, bytes, bytes]]:
    """Stored rows of a dimension for days in [first, last]: one scope, or every tenant's (``None``).
    Member sets stay packed (most reads need only their sizes)."""
    r = rollup.c
    conditions = [r.project_pk == project_pk, r.dimension == dimension, r.day >= first, r.day <= last]
    conditions.append(r.scope == scope if scope is not None else r.scope != ALL_TENANTS)
    rows = conn.execute(
        select(
            r.day,
            r.scope,
            r.value,
            r.messages,
            r.user_messages,
            r.sentiment_sum,
            r.sentiment_count,
            r.ratings_up,
            r.ratings_down,
            r.rated,
            r.rating_sum,
            r.conversations_started,
            r.tokens,
            r.outcomes,
            r.conversation_count,
            r.user_count,
            r.conversation_set,
            r.user_set,
        ).where(and_(*conditions))
    )
    out = []
    for row in rows:
        figures = Summary(
            messages=row.messages,
            user_messages=row.user_messages,
            sentiment_sum=row.sentiment_sum,
            sentiment_count=row.sentiment_count,
            ratings_up=row.ratings_up,
            ratings_down=row.ratings_down,
            rated=row.rated,
            rating_sum=row.rating_sum,
            conversations_started=row.conversations_started,
            tokens={k: list(v) for k, v in (row.tokens or {}).items()},
            outcomes=dict(row.outcomes or {}),
        )
        out.append(
            (
                row.day,
                row.scope,
                row.value,
                figures,
                row.conversation_count,
                row.user_count,
                row.conversation_set,
                row.user_set,
            )
        )
    return out
