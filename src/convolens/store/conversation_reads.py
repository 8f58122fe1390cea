"""Reads: conversations with their messages, and the bucket labels of time series. Every query is scoped
to one project."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from convolens.store import search
from convolens.store.dialect import Period, mostly_true
from convolens.store.outcome_fields import BITS
from convolens.store.tables import conversation, end_user, message, message_topic, topic


@dataclass
class MessageView:
    id: str
    position: int
    role: str
    kind: str
    name: str | None
    content: str
    created_at: datetime
    metadata: dict[str, Any] | None
    extra: dict[str, Any] | None
    rating: int | None
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    latency_ms: float | None
    error: str | None
    language: str | None
    translation: str | None
    sentiment: float | None
    sentiment_label: str | None
    pk: int = 0
    topics: list[dict[str, str]] = field(default_factory=list)
    suggested_topics: list[dict[str, str]] = field(default_factory=list)


@dataclass
class ConversationView:
    pk: int
    id: str
    tenant_id: str | None
    user_id: str | None
    metadata: dict[str, Any] | None
    feedback: str | None
    started_at: datetime
    last_message_at: datetime
    message_count: int
    sentiment_trend: str | None
    outcome: str | None = None
    outcome_signals: int | None = None  # a bitmask: outcome_fields.from_mask gives the names
    outcome_by: str | None = None  # rules, judging (an LLM judge is reading it) or llm
    outcome_reason: str | None = None  # the LLM judge's, where it gave the outcome
    messages: list[MessageView] = field(default_factory=list)

    def _distinct(self, attribute: str) -> list[dict[str, str]]:
        seen: dict[str, dict[str, str]] = {}
        for m in self.messages:
            for t in getattr(m, attribute):
                seen.setdefault(t["id"], t)
        return list(seen.values())

    @property
    def topics(self) -> list[dict[str, str]]:
        return self._distinct("topics")

    @property
    def suggested_topics(self) -> list[dict[str, str]]:
        return self._distinct("suggested_topics")

    @property
    def languages(self) -> list[str]:
        """The languages of its messages, most used first."""
        counts: dict[str, int] = defaultdict(int)
        for m in self.messages:
            if m.language:
                counts[m.language] += 1
        return sorted(counts, key=lambda lang: -counts[lang])


@dataclass
class Page:
    items: list[ConversationView]
    total: int
    page: int
    per_page: int

    @property
    def page_count(self) -> int:
        return (self.total + self.per_page - 1) // self.per_page


CONVERSATION_COLUMNS = (
    conversation.c.pk,
    conversation.c.id,
    conversation.c.tenant_id,
    end_user.c.external_id.label("user_id"),
    conversation.c.metadata,
    conversation.c.feedback,
    conversation.c.started_at,
    conversation.c.last_message_at,
    conversation.c.message_count,
    conversation.c.sentiment_trend,
    conversation.c.outcome,
    conversation.c.outcome_signals,
    conversation.c.outcome_by,
    conversation.c.outcome_reason,
)

_MESSAGE_COLUMNS = (
    *tuple(getattr(message.c, name) for name in MessageView.__dataclass_fields__ if "topics" not in name),
    message.c.conversation_pk,
)


def _window(conn: Connection, start: datetime, end: datetime, tenant_id: str | None, project_pk: int) -> list:
    """Conversations active in [start, end]: their span overlaps the window."""
    conditions = [
        conversation.c.project_pk == project_pk,
        conversation.c.last_message_at >= start,
        mostly_true(conn, conversation.c.started_at <= end),
    ]
    if tenant_id is not None:
        conditions.append(conversation.c.tenant_id == tenant_id)
    return conditions


def outcome_conditions(outcome: str | None, signal: str | None) -> list:
    """Filters by outcome and by signal (names checked by the caller: ``signal`` must be in ``BITS``)."""
    conditions = []
    if outcome is not None:
        conditions.append(conversation.c.outcome == outcome)
    if signal is not None:
        conditions.append(conversation.c.outcome_signals.op("&")(BITS[signal]) != 0)
    return conditions


def list_conversations(
    conn: Connection,
    project_pk: int,
    *,
    start: datetime,
    end: datetime,
    page: int = 1,
    per_page: int = 20,
    tenant_id: str | None = None,
    outcome: str | None = None,
    signal: str | None = None,
    text: str | None = None,
    order: str = "time",
) -> Page:
    """``outcome``, ``signal``: only conversations with that outcome / that signal among theirs; ``text``:
    those with a message matching the search (store/search.py), newest first or best match first."""
    conditions = _window(conn, start, end, tenant_id, project_pk)
    conditions += outcome_conditions(outcome, signal)
    source = conversation.outerjoin(end_user, end_user.c.pk == conversation.c.end_user_pk)
    ordering = [conversation.c.last_message_at.desc(), conversation.c.pk.desc()]
    if text:
        query = search.parse(text)
        common = search.is_common(conn, query)
        conditions[0] = search.project_condition(conn, project_pk, query, common)
        conditions.append(search.condition(conn, project_pk, query, common))
        hits = search.ranked(conn, project_pk, query) if order == "relevance" else None
        if hits is not None:
            source = source.join(hits, hits.c.conversation_pk == conversation.c.pk)
            ordering.insert(0, hits.c.score.asc())
    total = conn.execute(select(func.count()).select_from(conversation).where(*conditions)).scalar_one()
    rows = conn.execute(
        select(*CONVERSATION_COLUMNS)
        .select_from(source)
        .where(*conditions)
        .order_by(*ordering)
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    items = [ConversationView(**row._mapping) for row in rows]
    attach_messages(conn, items)
    return Page(items=items, total=total, page=page, per_page=per_page)


def get_conversation(conn: Connection, project_pk: int, conversation_id: str) -> ConversationView | None:
    row = conn.execute(
        select(*CONVERSATION_COLUMNS)
        .select_from(conversation.outerjoin(end_user, end_user.c.pk == conversation.c.end_user_pk))
        .where(conversation.c.project_pk == project_pk, conversation.c.id == conversation_id)
    ).first()
    if row is None:
        return None
    view = ConversationView(**row._mapping)
    attach_messages(conn, [view])
    return view


def attach_messages(conn: Connection, conversations: list[ConversationView]) -> None:
    if not conversations:
        return
    by_pk = {c.pk: c for c in conversations}
    rows = conn.execute(
        select(*_MESSAGE_COLUMNS)
        .where(message.c.conversation_pk.in_(list(by_pk)))
        .order_by(message.c.conversation_pk, message.c.position)
    )
    by_message: dict[int, MessageView] = {}
    for row in rows:
        values = dict(row._mapping)
        conversation_pk = values.pop("conversation_pk")
        view = MessageView(**values)
        by_pk[conversation_pk].messages.append(view)
        by_message[view.pk] = view
    _attach_topics(conn, list(by_pk), by_message)


def _attach_topics(conn: Connection, conversation_pks: list[int], by_message: dict[int, MessageView]) -> None:
    """Each message's topics (``active``) and suggested topics, as Context's ``{id, name}`` pairs."""
    rows = conn.execute(
        select(message_topic.c.message_pk, topic.c.pk, topic.c.name, topic.c.status)
        .select_from(message_topic.join(topic, topic.c.pk == message_topic.c.topic_pk))
        .where(message_topic.c.conversation_pk.in_(conversation_pks), topic.c.status.in_(("active", "suggested")))
        .order_by(message_topic.c.message_pk, topic.c.name)
    )
    for message_pk, topic_pk, name, status in rows:
        view = by_message.get(message_pk)
        if view is not None:
            (view.topics if status == "active" else view.suggested_topics).append({"id": str(topic_pk), "name": name})


def message_ids_at_positions(conn: Connection, project_pk: int, conversation_id: str) -> list[str] | None:
    """The ids of a conversation's messages in transcript order, or None if it does not exist."""
    pk = conn.execute(
        select(conversation.c.pk).where(conversation.c.project_pk == project_pk, conversation.c.id == conversation_id)
    ).scalar()
    if pk is None:
        return None
    return list(
        conn.execute(
            select(message.c.id)
            .where(message.c.conversation_pk == pk, message.c.kind != "event")
            .order_by(message.c.position)
        ).scalars()
    )


# -- time series ---------------------------------------------------------------------------------


def bucket_starts(start: datetime, end: datetime, period: Period) -> list[str]:
    """Every bucket label between start and end, so that quiet periods show as zero, not as gaps."""
    day = start.date()
    if period == "week":
        day -= timedelta(days=day.weekday())
    elif period == "month":
        day = day.replace(day=1)
    labels = []
    while day <= end.date():
        labels.append(day.isoformat())
        if period == "day":
            day += timedelta(days=1)
        elif period == "week":
            day += timedelta(weeks=1)
        else:
            day = date(day.year + (day.month == 12), day.month % 12 + 1, 1)
    return labels


def project_totals(conn: Connection, project_pk: int) -> dict[str, int]:
    conversations = conn.execute(
        select(func.count()).select_from(conversation).where(conversation.c.project_pk == project_pk)
    ).scalar_one()
    messages = conn.execute(
        select(func.count()).select_from(message).where(message.c.project_pk == project_pk)
    ).scalar_one()
    return {"conversations": conversations, "messages": messages}
