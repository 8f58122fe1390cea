"""The dashboard's conversation explorer: filters over conversations and their messages, a page of them,
and a streamed export of every match (keyset pages, so memory stays flat however many there are)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, exists, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from convolens.store import conversation_reads, search
from convolens.store.conversation_reads import ConversationView
from convolens.store.dialect import mostly_true
from convolens.store.tables import conversation, end_user, message, message_topic, rollup

PREVIEW_CHARS = 160
SENTIMENTS = ("negative", "neutral", "positive")
RATINGS = ("up", "down", "unrated")


@dataclass(frozen=True)
class ConversationFilter:
    start: datetime
    end: datetime
    user: str | None = None
    tenant: str | None = None
    topic: int | None = None
    sentiment: str | None = None  # a user message of that label
    rating: str | None = None  # up / down: a reply rated so; unrated: no rating at all
    language: str | None = None
    model: str | None = None
    metadata_key: str | None = None
    metadata_value: str | None = None
    text: str | None = None  # words and "phrases" in one message, case-insensitive (store/search.py)
    outcome: str | None = None  # outcome_fields.OUTCOMES
    signal: str | None = None  # outcome_fields.SIGNALS
    # Only conversations that started in the range (not merely active in it): the cohort the overview's
    # outcome counts are made of, so a link from a count lists exactly the conversations it counted.
    started_in_range: bool = False
    order: str = "time"  # or "relevance", with a text search (search.ORDERS)


def _has_message(*conditions: ColumnElement) -> ColumnElement:
    return exists().where(message.c.conversation_pk == conversation.c.pk, *conditions)


def conditions(conn: Connection, project_pk: int, f: ConversationFilter) -> list[ColumnElement]:
    query = search.parse(f.text) if f.text else None
    common = query is not None and search.is_common(conn, query)
    where: list[ColumnElement] = [
        search.project_condition(conn, project_pk, query, common) if query else conversation.c.project_pk == project_pk,
        conversation.c.last_message_at >= f.start,
        mostly_true(conn, conversation.c.started_at <= f.end),
    ]
    if f.started_in_range:
        where += [conversation.c.started_at >= f.start, conversation.c.started_at <= f.end]
    if f.user is not None:
        where.append(
            conversation.c.end_user_pk
            == select(end_user.c.pk)
            .where(end_user.c.project_pk == project_pk, end_user.c.external_id == f.user)
            .scalar_subquery()
        )
    if f.tenant is not None:
        where.append(conversation.c.tenant_id == f.tenant)
    if f.topic is not None:
        where.append(
            exists().where(message_topic.c.conversation_pk == conversation.c.pk, message_topic.c.topic_pk == f.topic)
        )
    if f.sentiment is not None:
        where.append(_has_message(message.c.role == "user", message.c.sentiment_label == f.sentiment))
    if f.rating == "up":
        where.append(_has_message(message.c.rating > 0))
    elif f.rating == "down":
        where.append(_has_message(message.c.rating < 0))
    elif f.rating == "unrated":
        where.append(~_has_message(message.c.rating.is_not(None)))
    if f.language is not None:
        where.append(_has_message(message.c.language == f.language))
    if f.model is not None:
        where.append(_has_message(message.c.model == f.model))
    if f.metadata_key and f.metadata_value is not None:
        where.append(conversation.c.metadata[f.metadata_key].as_string() == f.metadata_value)
    if query:
        where.append(search.condition(conn, project_pk, query, common))
    where += conversation_reads.outcome_conditions(f.outcome, f.signal)
    return where


@dataclass
class Row:
    view: ConversationView
    preview: str
    user_messages: int
    # The first user message's translation into the project's language, where it has one.
    preview_translation: str | None = None


def page(
    conn: Connection, project_pk: int, f: ConversationFilter, page_number: int, per_page: int
) -> tuple[list[Row], int]:
    """One page of matching conversations, newest activity first, and how many match in all."""
    where = conditions(conn, project_pk, f)
    if f.text and search.is_common(conn, search.parse(f.text)):
        # Counted up to a cap: the dashboard shows "1,000+" rather than checking every conversation. In the
        # page's order, so that PostgreSQL too checks the newest first (unordered, it hashed every match).
        newest = conversation.c.last_message_at.desc()
        matches = select(conversation.c.pk).where(*where).order_by(newest).limit(search.COUNT_CAP + 1).subquery()
        total = conn.execute(select(func.count()).select_from(matches)).scalar_one()
    else:
        total = conn.execute(select(func.count()).select_from(conversation).where(*where)).scalar_one()
    source = conversation.outerjoin(end_user, end_user.c.pk == conversation.c.end_user_pk)
    order = [conversation.c.last_message_at.desc(), conversation.c.pk.desc()]
    hits = search.ranked(conn, project_pk, search.parse(f.text)) if f.text and f.order == "relevance" else None
    if hits is not None:
        source = source.join(hits, hits.c.conversation_pk == conversation.c.pk)
        order.insert(0, hits.c.score.asc())
    rows = conn.execute(
        select(*conversation_reads.CONVERSATION_COLUMNS)
        .select_from(source)
        .where(*where)
        .order_by(*order)
        .limit(per_page)
        .offset((page_number - 1) * per_page)
    ).all()
    views = [ConversationView(**row._mapping) for row in rows]
    previews: dict[int, tuple[str, str | None, int]] = {}
    if views:
        firsts = conn.execute(
            select(message.c.conversation_pk, message.c.content, message.c.translation)
            .where(
                message.c.conversation_pk.in_([v.pk for v in views]),
                message.c.role == "user",
                message.c.kind == "message",
            )
            .order_by(message.c.conversation_pk, message.c.position)
        )
        for conversation_pk, content, translation in firsts:
            text, translated, count = previews.get(conversation_pk, (content, translation, 0))
            previews[conversation_pk] = (text, translated, count + 1)
    matches = _matching_messages(conn, [v.pk for v in views], search.parse(f.text)) if f.text and views else {}
    rows = []
    for v in views:
        text, translated, count = previews.get(v.pk, ("", None, 0))
        if v.pk in matches:  # a search shows the message it found, around the first term
            text, translated = matches[v.pk], None
        rows.append(Row(v, text[:PREVIEW_CHARS], count, translated[:PREVIEW_CHARS] if translated else None))
    return rows, total


def _matching_messages(conn: Connection, conversation_pks: list[int], q: search.Query) -> dict[int, str]:
    """The first message of each conversation holding every term (from shortly before the first term if
    that would be past the preview)."""
    terms = [t.casefold() for t in q.terms]
    out: dict[int, str] = {}
    for conversation_pk, content in conn.execute(
        select(message.c.conversation_pk, message.c.content)
        .where(message.c.conversation_pk.in_(conversation_pks), message.c.kind != "event")
        .order_by(message.c.conversation_pk, message.c.position)
    ):
        if conversation_pk in out:
            continue
        folded = content.casefold()
        if terms and all(t in folded for t in terms):
            # Cut only where the match would fall past the preview's 160 characters.
            at = folded.find(terms[0])
            late = at + len(terms[0]) > PREVIEW_CHARS - 20 and len(folded) == len(content)  # casefold: ß → ss
            start = at - 40 if late else 0
            out[conversation_pk] = ("…" if start else "") + content[start:]
    return out


def stream(conn: Connection, project_pk: int, f: ConversationFilter, chunk: int = 500) -> Iterator[ConversationView]:
    """Every matching conversation with its messages, in keyset pages of ``chunk``."""
    where = conditions(conn, project_pk, f)
    after: tuple[datetime, int] | None = None
    while True:
        query = (
            select(*conversation_reads.CONVERSATION_COLUMNS)
            .select_from(conversation.outerjoin(end_user, end_user.c.pk == conversation.c.end_user_pk))
            .where(*where)
            .order_by(conversation.c.last_message_at.desc(), conversation.c.pk.desc())
            .limit(chunk)
        )
        if after is not None:
            last_at, last_pk = after
            query = query.where(
                or_(
                    conversation.c.last_message_at < last_at,
                    and_(conversation.c.last_message_at == last_at, conversation.c.pk < last_pk),
                )
            )
        views = [ConversationView(**row._mapping) for row in conn.execute(query)]
        if not views:
            return
        conversation_reads.attach_messages(conn, views)
        yield from views
        after = (views[-1].last_message_at, views[-1].pk)


def known_values(conn: Connection, project_pk: int, dimension: str) -> list[str]:
    """Values a filter can take (``language``, ``model``, or ``tenant``), from the rollups: cheap at any size,
    and at most a few seconds behind."""
    if dimension == "tenant":
        query = select(rollup.c.scope).where(
            rollup.c.project_pk == project_pk, rollup.c.dimension == "none", rollup.c.scope.like("t:%")
        )
        return sorted({scope[2:] for (scope,) in conn.execute(query.distinct())})
    query = select(rollup.c.value).where(
        rollup.c.project_pk == project_pk, rollup.c.dimension == dimension, rollup.c.scope == "*", rollup.c.value != ""
    )
    return sorted(value for (value,) in conn.execute(query.distinct()))
