"""A rule's metric over one window (an hour or a UTC day), read the way ``/api/v1/metrics`` reads it:
whole days from the rollups unless marked as changed, anything else summarized from the base tables by
the rollups' own function (store/metrics.py ``day_figures``). ``negative_share`` is counted from the
messages, since the rollups keep no sentiment labels, and ``backlog`` from the pending-message index.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, case, func, select

from convolens.alerts.conditions import Measurement
from convolens.enrich.prices import price_table
from convolens.store.metrics import JUDGED, day_figures, price_of
from convolens.store.rollups import Summary
from convolens.store.tables import conversation, message, message_topic, topic

WINDOWS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
_TICK = timedelta(microseconds=1)


def window_start(at: datetime, window: str) -> datetime:
    """The start of the hour or UTC day ``at`` falls in."""
    start = at.replace(minute=0, second=0, microsecond=0, tzinfo=None)
    return start.replace(hour=0) if window == "day" else start


def measure(conn: Connection, project_pk: int, definition: dict, start: datetime, end: datetime) -> Measurement:
    """The rule's metric over [start, end)."""
    filters = {k: v for k, v in (definition.get("filter") or {}).items() if v is not None}
    tenant = filters.pop("tenant_id", None)
    dimensions = {"topic_id": "topic", "language": "language", "model": "model"}
    wanted = {dimensions[k]: str(v) for k, v in filters.items()}
    if definition["metric"] == "negative_share":
        return _negative_share(conn, project_pk, wanted, tenant, start, end)
    if definition["metric"] == "backlog":
        return _backlog(conn, project_pk, end)
    if definition["metric"] == "new_suggested_topics":
        return _new_suggestions(conn, project_pk, start, end)
    dimension, value = next(iter(wanted.items()), ("none", ""))
    figures, conversations, users = Summary(), 0, 0
    for _day, group, summary, convs, members in day_figures(
        conn, project_pk, start=start, end=end - _TICK, dimension=dimension, tenant_id=tenant
    ):
        if group != value:
            continue
        # One row per day and group, and a window is at most one day: the counts are distinct already.
        figures.add(summary)
        conversations += convs[0] if isinstance(convs, tuple) else len(convs)
        users += members[0] if isinstance(members, tuple) else len(members)
    return _from_summary(definition["metric"], figures, conversations, users)


def _share(part: int, whole: int) -> Measurement:
    return Measurement(part / whole if whole else None, whole)


def _cost(f: Summary) -> float:
    """Estimated USD of the window's tokens; a model without a price counts as nothing (as on the overview,
    which names such models)."""
    prices, total = price_table(), 0.0
    for model, (tokens_in, tokens_out) in f.tokens.items():
        price = price_of(prices, model)
        if price is not None:
            total += (tokens_in * price[0] + tokens_out * price[1]) / 1e6
    return total


def _from_summary(metric: str, f: Summary, conversations: int, users: int) -> Measurement:
    if metric == "cost":
        return Measurement(_cost(f), f.messages)
    if metric == "cost_per_user":
        return Measurement(_cost(f) / users if users else None, users)
    if metric == "conversations":
        return Measurement(float(conversations), conversations)
    if metric == "messages":
        return Measurement(float(f.messages), f.messages)
    if metric == "active_users":
        return Measurement(float(users), users)
    if metric == "avg_sentiment":
        return Measurement(f.sentiment_sum / f.sentiment_count if f.sentiment_count else None, f.sentiment_count)
    if metric == "thumbs_down_share":
        return _share(f.ratings_down, f.ratings_up + f.ratings_down)
    judged = sum(f.outcomes.get(o, 0) for o in JUDGED)
    if metric == "resolved_share":
        return _share(f.outcomes.get("resolved", 0), judged)
    if metric == "unresolved_share":
        return _share(f.outcomes.get("unresolved", 0), judged)
    raise ValueError(f"unknown metric {metric!r}")


def _backlog(conn: Connection, project_pk: int, end: datetime) -> Measurement:
    """Messages logged before ``end`` and not enriched yet, counted now: when the worker decides the window
    (5 minutes after it ends), the backlog then. Replayed later (the preview) it can only say what is
    still waiting today from before each window's end. Read through the pending-only index."""
    waiting = conn.execute(
        select(func.count())
        .select_from(message)
        .where(message.c.project_pk == project_pk, message.c.enriched_version.is_(None), message.c.created_at < end)
    ).scalar_one()
    return Measurement(float(waiting), int(waiting))


def _new_suggestions(conn: Connection, project_pk: int, start: datetime, end: datetime) -> Measurement:
    """Suggested topics first found in the window (a later run keeps a suggestion it matches, with its
    creation time; one since dismissed still counts, one dropped by a later run no longer does)."""
    found = conn.execute(
        select(func.count()).select_from(topic).where(
            topic.c.project_pk == project_pk, topic.c.kind == "suggested", topic.c.created_at >= start,
            topic.c.created_at < end,
        )
    ).scalar_one()  # fmt: skip
    return Measurement(float(found), found)


def _negative_share(
    conn: Connection, project_pk: int, wanted: dict[str, str], tenant: str | None, start: datetime, end: datetime
) -> Measurement:
    """Negative among the user messages of the window that have a sentiment label."""
    conditions = [
        message.c.project_pk == project_pk,
        message.c.created_at >= start,
        message.c.created_at < end,
        message.c.role == "user",
        message.c.kind != "event",
        message.c.sentiment_label.is_not(None),
    ]
    if "language" in wanted:
        conditions.append(message.c.language == wanted["language"])
    if "model" in wanted:
        conditions.append(message.c.model == wanted["model"])
    source = message
    if "topic" in wanted:
        source = message.join(
            message_topic,
            and_(message_topic.c.message_pk == message.c.pk, message_topic.c.topic_pk == int(wanted["topic"])),
        )
    if tenant is not None:
        source = source.join(conversation, conversation.c.pk == message.c.conversation_pk)
        conditions.append(conversation.c.tenant_id == tenant)
    labelled, negative = conn.execute(
        select(func.count(), func.sum(case((message.c.sentiment_label == "negative", 1), else_=0)))
        .select_from(source)
        .where(*conditions)
    ).one()
    return _share(int(negative or 0), int(labelled or 0))
