"""Product metrics over time, split by one dimension: conversations, messages, users, average user
sentiment, thumbs up/down and estimated cost, per bucket (day, week or month) and group; and Context's
volume, rating and sentiment series, which are the same figures unsplit.

Groups: ``none`` (one series), ``topic`` (a message counts once in each of its topics), ``category``
(once in each category of its topics, however many of a category's topics it is in), ``language``,
``model``, ``tenant`` or ``metadata.<key>`` (a key of the conversation's metadata). Distinct counts
(conversations, users) are exact per bucket and group.

Where the figures come from: whole days come from the rollups (``store/rollups.py``) unless a day is
marked as changed since; marked days, the partial days at the window's edges and metadata groups are
summarized from the base tables by the very function the rollups are made with, so both paths agree
to the unit. Categories are always summarized so: a rollup per topic cannot tell a message counted in
two topics of one category, and the categories change with each clustering run.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

import numpy as np
from sqlalchemy import Connection, select

from convolens.store import rollups
from convolens.store.categories import UNCATEGORISED
from convolens.store.conversation_reads import bucket_starts
from convolens.store.dialect import Period
from convolens.store.outcome_fields import OUTCOMES
from convolens.store.rollups import ALL_TENANTS, Summary
from convolens.store.tables import topic, topic_category

GROUPS = ("none", "topic", "language", "model", "tenant")
# The two levels of ``topic``: each topic, or each category of topics (``level=category`` on the API).
LEVELS = ("topic", "category")
_TICK = timedelta(microseconds=1)
# The outcomes that say whether a conversation helped; ``unknown`` says nothing either way.
JUDGED = ("resolved", "unresolved", "abandoned")


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

    def at_level(self, level: str) -> Grouping:
        """``topic`` grouped per topic (as is) or per ``category``; ValueError for another level, or a
        level other than ``topic`` on a grouping that is not by topic."""
        if level not in LEVELS:
            raise ValueError(f"must be one of {', '.join(LEVELS)}")
        if level == "topic":
            return self
        if self.kind != "topic":
            raise ValueError("level=category needs group_by=topic")
        return Grouping("category")

    @property
    def dimension(self) -> str:
        if self.kind == "metadata":
            return f"metadata.{self.metadata_key}"
        return "none" if self.kind == "tenant" else self.kind


# A member set as it arrives: packed bytes from a rollup row (with its size), or a set from a live summary.
Members = tuple[int, bytes] | set[int]


@dataclass
class _Cell:
    """One bucket of one group while its days are added up."""

    figures: Summary = field(default_factory=Summary)
    conversations: list[Members] = field(default_factory=list)
    users: list[Members] = field(default_factory=list)

    def add(self, figures: Summary, conversations: Members, users: Members) -> None:
        self.figures.add(figures)
        self.conversations.append(conversations)
        self.users.append(users)


def _distinct(parts: list[Members]) -> int:
    if len(parts) == 1:
        only = parts[0]
        return len(only) if isinstance(only, set) else only[0]
    arrays = [
        np.fromiter(p, dtype=np.int64, count=len(p)) if isinstance(p, set) else rollups.unpack(p[1]) for p in parts
    ]
    return int(rollups.sorted_unique(np.concatenate(arrays)).size) if arrays else 0


def _label(day: str, period: Period | Literal["all"]) -> str:
    if period == "all":
        return "all"
    if period == "day":
        return day
    value = date.fromisoformat(day)
    if period == "week":
        return (value - timedelta(days=value.weekday())).isoformat()
    return value.replace(day=1).isoformat()


def _live_ranges(start: datetime, end: datetime, full: tuple[str, str] | None, dirty: set[str]) -> list:
    """[lo, hi) ranges to summarize from the base tables: the window's partial edge days and the marked days."""
    end_x = end + _TICK
    if full is None:
        return [(start, end_x)]
    ranges = []
    first, last = rollups.day_start(full[0]), rollups.day_start(full[1]) + timedelta(days=1)
    if start < first:
        ranges.append((start, first))
    for day in sorted(dirty):
        lo = rollups.day_start(day)
        if ranges and ranges[-1][1] == lo:
            ranges[-1] = (ranges[-1][0], lo + timedelta(days=1))
        else:
            ranges.append((lo, lo + timedelta(days=1)))
    if last < end_x:
        if ranges and ranges[-1][1] == last:
            ranges[-1] = (ranges[-1][0], end_x)
        else:
            ranges.append((last, end_x))
    return ranges


def _full_days(start: datetime, end: datetime) -> tuple[str, str] | None:
    """The first and last whole UTC days inside [start, end], or None."""
    first = (
        start.date() if start == datetime.combine(start.date(), datetime.min.time()) else start.date() + timedelta(1)
    )
    last = (end + _TICK).date() - timedelta(days=1)
    return (first.isoformat(), last.isoformat()) if first <= last else None


def day_figures(
    conn: Connection,
    project_pk: int,
    *,
    start: datetime,
    end: datetime,
    dimension: str,
    tenant_id: str | None = None,
    by_tenant: bool = False,
    use_rollups: bool = True,
) -> Iterator[tuple[str, str, Summary, Members, Members]]:
    """(day, group, additive figures, conversations, users) for every day and group with data in
    [start, end]. The group is the dimension's value, or with ``by_tenant`` the tenant scope."""
    full = _full_days(start, end) if use_rollups and dimension in rollups.DIMENSIONS else None
    dirty = rollups.dirty_days(conn, project_pk, *full) if full else set()
    if full:
        scope = rollups.tenant_scope(tenant_id) if tenant_id is not None else (None if by_tenant else ALL_TENANTS)
        for day, row_scope, value, figures, n_conv, n_users, conv_set, user_set in rollups.stored(
            conn, project_pk, dimension, full[0], full[1], scope
        ):
            if day not in dirty:
                yield day, row_scope if by_tenant else value, figures, (n_conv, conv_set), (n_users, user_set)
    for lo, hi in _live_ranges(start, end, full, dirty):
        summaries = rollups.summarize(conn, project_pk, lo, hi, dimension, tenant_id)
        if not by_tenant:
            summaries = {k: v for k, v in rollups.with_all_tenants(summaries).items() if k[1] == ALL_TENANTS}
        for (day, scope, value), figures in summaries.items():
            yield day, scope if by_tenant else value, figures, figures.conversations, figures.users


def _buckets(
    conn: Connection,
    project_pk: int,
    *,
    start: datetime,
    end: datetime,
    period: Period | Literal["all"],
    dimension: str,
    tenant_id: str | None,
    by_tenant: bool = False,
    use_rollups: bool = True,
) -> dict[str, dict[str, _Cell]]:
    cells: dict[str, dict[str, _Cell]] = defaultdict(lambda: defaultdict(_Cell))
    for day, group, figures, conversations, users in day_figures(
        conn,
        project_pk,
        start=start,
        end=end,
        dimension=dimension,
        tenant_id=tenant_id,
        by_tenant=by_tenant,
        use_rollups=use_rollups,
    ):
        cells[group][_label(day, period)].add(figures, conversations, users)
    return cells


def metrics(
    conn: Connection,
    project_pk: int,
    *,
    start: datetime,
    end: datetime,
    period: Period | Literal["all"],
    grouping: Grouping,
    prices: dict[str, tuple[float, float]],
    tenant_id: str | None = None,
    max_groups: int = 50,
    use_rollups: bool = True,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{group: {bucket: figures}}`` for the window; the ``max_groups`` largest groups by messages."""
    cells = _buckets(
        conn,
        project_pk,
        start=start,
        end=end,
        period=period,
        dimension=grouping.dimension,
        tenant_id=tenant_id,
        by_tenant=grouping.kind == "tenant",
        use_rollups=use_rollups,
    )
    names = _group_names(conn, project_pk, grouping)
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for group, buckets in cells.items():
        name = names(group)
        if name is None:
            continue
        for label, cell in sorted(buckets.items()):
            if name in out and label in out[name]:  # two values with one name (topics renamed alike)
                continue
            out[name][label] = _figures(cell, prices)
    largest = sorted(out, key=lambda g: -sum(b["messages"] for b in out[g].values()))[:max_groups]
    return {g: out[g] for g in largest}


def window_totals(
    conn: Connection,
    project_pk: int,
    *,
    start: datetime,
    end: datetime,
    grouping: Grouping,
    prices: dict[str, tuple[float, float]],
    tenant_id: str | None = None,
) -> dict[str, dict[str, Any]]:
    """``{group: figures}`` for the whole window as one bucket (distinct users over the window, not summed),
    largest group first."""
    by_group = metrics(
        conn, project_pk, start=start, end=end, period="all", grouping=grouping, prices=prices,
        tenant_id=tenant_id, max_groups=sys.maxsize,
    )  # fmt: skip
    return {group: buckets["all"] for group, buckets in by_group.items()}


def _group_names(conn: Connection, project_pk: int, grouping: Grouping):  # type: ignore[no-untyped-def]
    """How a stored group value is shown: a topic's name (None: not an active topic), a tenant id, …"""
    if grouping.kind == "topic":
        active = dict(
            conn.execute(
                select(topic.c.pk, topic.c.name).where(topic.c.project_pk == project_pk, topic.c.status == "active")
            ).all()
        )
        return lambda value: active.get(int(value)) if value.isdigit() else None
    if grouping.kind == "category":
        named = dict(
            conn.execute(
                select(topic_category.c.pk, topic_category.c.name).where(topic_category.c.project_pk == project_pk)
            ).all()
        )
        named[0] = UNCATEGORISED
        return lambda value: named.get(int(value)) if value.isdigit() else None
    if grouping.kind == "tenant":
        return lambda scope: _name(rollups.scope_tenant(scope))
    if grouping.kind == "none":
        return lambda _value: "all"
    return lambda value: _name(value or None)


def _figures(cell: _Cell, prices: dict[str, tuple[float, float]]) -> dict[str, Any]:
    f = cell.figures
    rated = f.ratings_up + f.ratings_down
    cost = 0.0
    unpriced = []
    for model, (tokens_in, tokens_out) in sorted(f.tokens.items()):
        price = price_of(prices, model)
        if price is None:
            unpriced.append(model)
        else:
            cost += (tokens_in * price[0] + tokens_out * price[1]) / 1e6
    return {
        "conversations": _distinct(cell.conversations),
        "messages": f.messages,
        "user_messages": f.user_messages,
        "users": _distinct(cell.users),
        "avg_sentiment": round(f.sentiment_sum / f.sentiment_count, 4) if f.sentiment_count else None,
        "ratings_up": f.ratings_up,
        "ratings_down": f.ratings_down,
        "rating_share_up": round(f.ratings_up / rated, 4) if rated else None,
        "input_tokens": sum(t[0] for t in f.tokens.values()),
        "output_tokens": sum(t[1] for t in f.tokens.values()),
        "cost_usd": round(cost, 6),
        "unpriced_models": unpriced,
        # Conversations that started in the bucket, each in its latest outcome (store/rollups.py).
        "outcomes": {outcome: f.outcomes.get(outcome, 0) for outcome in OUTCOMES},
        "resolved_share": resolved_share(f.outcomes),
    }


def resolved_share(outcomes: dict[str, int]) -> float | None:
    """Resolved among the conversations with a verdict (resolved, unresolved, abandoned): ``unknown``
    (too short to tell, e.g. one question and its answer) and not yet enriched ones stay out, so a quiet
    week of one-line chats does not read as a failing one. None without a verdict."""
    judged = sum(outcomes.get(o, 0) for o in JUDGED)
    return round(outcomes.get("resolved", 0) / judged, 4) if judged else None


def _name(value: object) -> str:
    return "(none)" if value is None else str(value)


def price_of(prices: dict[str, tuple[float, float]], model: str) -> tuple[float, float] | None:
    """USD per million (input, output) tokens: the exact model, else the longest known prefix
    (``gpt-4o-mini-2024-07-18`` is priced as ``gpt-4o-mini``)."""
    if model in prices:
        return prices[model]
    known = [name for name in prices if model.startswith(name)]
    return prices[max(known, key=len)] if known else None


# -- Context's series ---------------------------------------------------------------------------------

# ``outcome`` is ours (Context has the first three; a Context client ignores a series it does not ask for).
SERIES = ("sentiment", "rating", "volume", "outcome")


def context_series(
    conn: Connection,
    project_pk: int,
    name: str,
    *,
    start: datetime,
    end: datetime,
    period: Period,
    tenant_id: str | None = None,
) -> dict[str, dict[str, float]]:
    """Context's series ``name``: ``volume`` (conversations by start, messages by time; every bucket),
    ``rating`` (thumbs up and down, every bucket; the average rating where there are ratings) or
    ``sentiment`` (the average of scored user messages, where there are some) or ``outcome`` (conversations
    by the day they started, each in its latest outcome, every bucket; ``resolved_share`` where some has a
    verdict, as ``/api/v1/metrics`` counts them)."""
    labels = bucket_starts(start, end, period)
    cells = _buckets(conn, project_pk, start=start, end=end, period=period, dimension="none", tenant_id=tenant_id)
    totals = {label: cell.figures for label, cell in cells.get("", {}).items() if label in labels}
    every = [totals.get(label, Summary()) for label in labels]
    if name == "volume":
        return {
            "conversations": {label: float(f.conversations_started) for label, f in zip(labels, every, strict=True)},
            "messages": {label: float(f.messages) for label, f in zip(labels, every, strict=True)},
        }
    if name == "rating":
        return {
            "positive": {label: float(f.ratings_up) for label, f in zip(labels, every, strict=True)},
            "negative": {label: float(f.ratings_down) for label, f in zip(labels, every, strict=True)},
            "average": {label: round(f.rating_sum / f.rated, 4) for label, f in sorted(totals.items()) if f.rated},
        }
    if name == "sentiment":
        return {
            "average": {
                label: round(f.sentiment_sum / f.sentiment_count, 4)
                for label, f in sorted(totals.items())
                if f.sentiment_count
            }
        }
    if name == "outcome":
        counts = {
            outcome: {label: float(f.outcomes.get(outcome, 0)) for label, f in zip(labels, every, strict=True)}
            for outcome in OUTCOMES
        }
        shares = {label: resolved_share(f.outcomes) for label, f in sorted(totals.items())}
        return {**counts, "resolved_share": {label: share for label, share in shares.items() if share is not None}}
    raise ValueError(f"series must be one of {', '.join(SERIES)}")
