"""Product metrics over time, split by one dimension: conversations, messages, users, average user
sentiment, thumbs up/down and estimated cost, per bucket (day, week or month) and group.

Groups: ``none`` (one series), ``topic`` (a message counts once in each of its topics), ``language``,
``model``, ``tenant`` or ``metadata.<key>`` (a key of the conversation's metadata). Distinct counts
(conversations, users) are exact per bucket and group. Costs come from summed tokens per model and a
price table (``PriceTable``) the caller passes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, distinct, func, literal, select
from sqlalchemy.sql.elements import ColumnElement

from convolens.store.dialect import Period, bucket
from convolens.store.tables import conversation, message, message_topic, topic

GROUPS = ("none", "topic", "language", "model", "tenant")


@dataclass(frozen=True)
class Grouping:
    kind: str
    metadata_key: str | None = None

    @classmethod
    def parse(cls, value: str) -> Grouping:
        """``none``, one of ``GROUPS`` or ``metadata.<key>``; ValueError otherwise."""
        if value in GROUPS:
            return cls(value)
        key = value[len("metadata.") :] if value.startswith("metadata.") else ""
        # A JSON path segment on SQLite: quotes, backslashes and control characters cannot be in it.
        if 0 < len(key) <= 128 and not any(ch in key for ch in '"\\') and key.isprintable():
            return cls("metadata", key)
        raise ValueError(f"must be one of {', '.join(GROUPS)} or metadata.<key> (a printable key without quotes)")


def _group_expression(grouping: Grouping) -> ColumnElement:
    if grouping.kind == "none":
        return literal("all")
    if grouping.kind == "language":
        return message.c.language
    if grouping.kind == "model":
        return message.c.model
    if grouping.kind == "tenant":
        return conversation.c.tenant_id
    if grouping.kind == "topic":
        return topic.c.name
    return conversation.c.metadata[grouping.metadata_key].as_string()  # a bound JSON path on both backends


def metrics(
    conn: Connection,
    project_pk: int,
    *,
    start: datetime,
    end: datetime,
    period: Period,
    grouping: Grouping,
    prices: dict[str, tuple[float, float]],
    tenant_id: str | None = None,
    max_groups: int = 50,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{group: {bucket: figures}}`` for the window; the ``max_groups`` largest groups by messages."""
    label = bucket(conn, message.c.created_at, period)
    group = _group_expression(grouping)
    source = message.join(conversation, conversation.c.pk == message.c.conversation_pk)
    conditions = [
        message.c.project_pk == project_pk,
        message.c.created_at >= start,
        message.c.created_at <= end,
        message.c.kind != "event",
    ]
    if grouping.kind == "topic":
        source = source.join(message_topic, message_topic.c.message_pk == message.c.pk).join(
            topic, topic.c.pk == message_topic.c.topic_pk
        )
        conditions.append(topic.c.status == "active")
    if tenant_id is not None:
        conditions.append(conversation.c.tenant_id == tenant_id)
    user_sentiment = case((message.c.role == "user", message.c.sentiment))
    rows = conn.execute(
        select(
            label.label("bucket"),
            group.label("group"),
            func.count().label("messages"),
            func.sum(case((message.c.role == "user", 1), else_=0)).label("user_messages"),
            func.count(distinct(message.c.conversation_pk)).label("conversations"),
            func.count(distinct(conversation.c.end_user_pk)).label("users"),
            func.avg(user_sentiment).label("avg_sentiment"),
            func.sum(case((message.c.rating > 0, 1), else_=0)).label("ratings_up"),
            func.sum(case((message.c.rating < 0, 1), else_=0)).label("ratings_down"),
        )
        .select_from(source)
        .where(*conditions)
        .group_by(label, group)
    ).all()
    costs = conn.execute(
        select(
            label,
            group,
            message.c.model,
            func.coalesce(func.sum(message.c.input_tokens), 0),
            func.coalesce(func.sum(message.c.output_tokens), 0),
        )
        .select_from(source)
        .where(*conditions, message.c.model.is_not(None))
        .group_by(label, group, message.c.model)
    ).all()
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        rated = int(r.ratings_up or 0) + int(r.ratings_down or 0)
        out[_name(r.group)][r.bucket] = {
            "conversations": int(r.conversations),
            "messages": int(r.messages),
            "user_messages": int(r.user_messages or 0),
            "users": int(r.users),
            "avg_sentiment": None if r.avg_sentiment is None else round(float(r.avg_sentiment), 4),
            "ratings_up": int(r.ratings_up or 0),
            "ratings_down": int(r.ratings_down or 0),
            "rating_share_up": round(int(r.ratings_up or 0) / rated, 4) if rated else None,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": 0.0,
            "unpriced_models": [],
        }
    for label_value, group_value, model, tokens_in, tokens_out in costs:
        figures = out[_name(group_value)].get(label_value)
        if figures is None:
            continue
        figures["input_tokens"] += int(tokens_in)
        figures["output_tokens"] += int(tokens_out)
        price = price_of(prices, model)
        if price is None:
            figures["unpriced_models"].append(model)
        else:
            figures["cost_usd"] = round(figures["cost_usd"] + (tokens_in * price[0] + tokens_out * price[1]) / 1e6, 6)
    largest = sorted(out, key=lambda g: -sum(b["messages"] for b in out[g].values()))[:max_groups]
    return {g: out[g] for g in largest}


def _name(value: object) -> str:
    return "(none)" if value is None else str(value)


def price_of(prices: dict[str, tuple[float, float]], model: str) -> tuple[float, float] | None:
    """USD per million (input, output) tokens: the exact model, else the longest known prefix
    (``gpt-4o-mini-2024-07-18`` is priced as ``gpt-4o-mini``)."""
    if model in prices:
        return prices[model]
    known = [name for name in prices if model.startswith(name)]
    return prices[max(known, key=len)] if known else None
