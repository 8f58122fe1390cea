"""A rule's metric over one window (an hour or a UTC day), read the way ``/api/v1/metrics`` reads it:
whole days from the rollups unless marked as changed, anything else summarized from the base tables by
the rollups' own function (store/metrics.py ``day_figures``). ``negative_share`` is counted from the
messages, since the rollups keep no sentiment labels, and ``backlog`` from the pending-message index.

A metadata filter (``metadata_key`` = ``metadata_value``) reads the base tables too: the rollups keep no
metadata, so the window's messages are summarized by the rollups' function with the conversation's
``metadata.<key>`` as the dimension, through the (project, created) index over the window only: at most a
day of messages per window (bench/alert_metadata.py measures it). Evaluation pass rates come from the
evaluations' tables and emerging topics from the topic links of the two weeks before the window's end.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, String, and_, case, cast, func, select

from convolens.alerts.conditions import Measurement
from convolens.enrich.prices import price_table
from convolens.store.evaluations import pass_counts
from convolens.store.metrics import JUDGED, day_figures, price_of
from convolens.store.rollups import Summary
from convolens.store.tables import (
    conversation,
    eval_run,
    message,
    message_topic,
    online_eval_result,
    online_eval_rule,
    test_set,
    topic,
)
from convolens.store.topic_figures import emerging

WINDOWS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
_TICK = timedelta(microseconds=1)


def window_start(at: datetime, window: str) -> datetime:
    """The start of the hour or UTC day ``at`` falls in."""
    start = at.replace(minute=0, second=0, microsecond=0, tzinfo=None)
    return start.replace(hour=0) if window == "day" else start


def measure(
    conn: Connection,
    project_pk: int,
    definition: dict,
    start: datetime,
    end: datetime,
    told: frozenset[int] = frozenset(),
) -> Measurement:
    """The rule's metric over [start, end); ``told``: the topics an emerging-topics rule told of before."""
    filters = {k: v for k, v in (definition.get("filter") or {}).items() if v is not None}
    tenant = filters.pop("tenant_id", None)
    metric = definition["metric"]
    if metric == "eval_pass_rate":
        return _eval_pass_rate(conn, project_pk, str(filters["test_set"]), start, end)
    if metric == "online_pass_rate":
        return _online_pass_rate(conn, project_pk, int(filters["online_eval_id"]), start, end)
    if metric == "emerging_topics":
        return _emerging_topics(conn, project_pk, end, told)
    key, value = filters.pop("metadata_key", None), filters.pop("metadata_value", None)
    dimensions = {"topic_id": "topic", "language": "language", "model": "model"}
    wanted = {dimensions[k]: str(v) for k, v in filters.items()}
    if key is not None:
        wanted[f"metadata.{key}"] = str(value)
    if metric == "negative_share":
        return _negative_share(conn, project_pk, wanted, tenant, start, end)
    if metric == "backlog":
        return _backlog(conn, project_pk, end)
    if metric == "new_suggested_topics":
        return _new_suggestions(conn, project_pk, start, end)
    if key is not None and len(wanted) == 1 and metric in SLICE_METRICS:
        return _metadata_slice(conn, project_pk, metric, key, str(value), tenant, start, end)
    dimension, value = next(iter(wanted.items()), ("none", ""))
    return summarized(conn, project_pk, metric, dimension, value, tenant, start, end)


def summarized(
    conn: Connection, project_pk: int, metric: str, dimension: str, value: str, tenant: str | None,
    start: datetime, end: datetime,
) -> Measurement:  # fmt: skip
    """``metric`` of the window's ``dimension`` = ``value`` (``none``: all) as ``/api/v1/metrics`` reads it."""
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
    return _from_summary(metric, figures, conversations, users)


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
    metadata = next(((k, v) for k, v in wanted.items() if k.startswith("metadata.")), None)
    if "topic" in wanted:
        source = message.join(
            message_topic,
            and_(message_topic.c.message_pk == message.c.pk, message_topic.c.topic_pk == int(wanted["topic"])),
        )
    if tenant is not None or metadata is not None:
        source = source.join(conversation, conversation.c.pk == message.c.conversation_pk)
    if tenant is not None:
        conditions.append(conversation.c.tenant_id == tenant)
    if metadata is not None:
        conditions.append(_metadata_is(metadata[0].removeprefix("metadata."), metadata[1]))
    labelled, negative = conn.execute(
        select(func.count(), func.sum(case((message.c.sentiment_label == "negative", 1), else_=0)))
        .select_from(source)
        .where(*conditions)
    ).one()
    return _share(int(negative or 0), int(labelled or 0))


def _eval_pass_rate(conn: Connection, project_pk: int, name: str, start: datetime, end: datetime) -> Measurement:
    """The pass rate of the latest run of test set ``name`` (any version) that finished in the window;
    no value when none did (the window is undecided: nothing fires or resolves). An item that errored
    counts as failed, as on the run's page."""
    run_pk = conn.execute(
        select(eval_run.c.pk)
        .join(test_set, test_set.c.pk == eval_run.c.test_set_pk)
        .where(eval_run.c.project_pk == project_pk, test_set.c.name == name, eval_run.c.finished_at >= start,
               eval_run.c.finished_at < end, eval_run.c.status.in_(("completed", "errored")))
        .order_by(eval_run.c.finished_at.desc(), eval_run.c.pk.desc())
        .limit(1)
    ).scalar()  # fmt: skip
    if run_pk is None:
        return Measurement(None, 0)
    done, passed = pass_counts(conn, [run_pk]).get(run_pk, (0, 0))
    return _share(passed, done)


def _online_pass_rate(conn: Connection, project_pk: int, rule_pk: int, start: datetime, end: datetime) -> Measurement:
    """Positive verdicts among the replies the online evaluation judged in the window (replies' times),
    through its (rule, created) index; the rule must be the project's."""
    judged, positive = conn.execute(
        select(func.count(), func.sum(case((online_eval_result.c.outcome == "positive", 1), else_=0)))
        .select_from(online_eval_result.join(online_eval_rule, online_eval_rule.c.pk == online_eval_result.c.rule_pk))
        .where(online_eval_rule.c.project_pk == project_pk, online_eval_result.c.rule_pk == rule_pk,
               online_eval_result.c.created_at >= start, online_eval_result.c.created_at < end)
    ).one()  # fmt: skip
    return _share(int(positive or 0), int(judged or 0))


WEEK = timedelta(days=7)


def _emerging_topics(conn: Connection, project_pk: int, end: datetime, told: frozenset[int]) -> Measurement:
    """The topics (defined or suggested) emerging as of ``end`` — the topics page's flag over the 7 days to
    ``end`` against the 7 before (store/topic_figures.py ``emerging``) — that the rule has not told of:
    each topic is news once. The value is how many, and ``topics`` names them."""
    this_week = func.sum(case((message_topic.c.created_at >= end - WEEK, 1), else_=0))
    rows = conn.execute(
        select(topic.c.pk, topic.c.name, this_week, func.count())
        .select_from(message_topic.join(topic, topic.c.pk == message_topic.c.topic_pk))
        .where(topic.c.project_pk == project_pk, topic.c.status.in_(("active", "suggested")),
               message_topic.c.created_at >= end - 2 * WEEK, message_topic.c.created_at < end)
        .group_by(topic.c.pk, topic.c.name)
    ).all()  # fmt: skip
    # As on the topics page: in a project with no messages before the last 7 days every topic is "new".
    history = (
        conn.execute(
            select(message.c.pk).where(message.c.project_pk == project_pk, message.c.created_at < end - WEEK).limit(1)
        ).first()
        is not None
    )
    found = sorted(
        (name, pk)
        for pk, name, recent, both in rows
        if pk not in told and emerging(int(recent or 0), int(both) - int(recent or 0), history)
    )
    return Measurement(float(len(found)), len(found), tuple((pk, name) for name, pk in found))


# What a metadata slice is measured for in one pass over the window's messages (the rest, outcome shares,
# go through the rollups' summary, whose outcome counting is its own).
SLICE_METRICS = frozenset({"messages", "conversations", "active_users", "avg_sentiment", "thumbs_down_share",
                           "cost", "cost_per_user"})  # fmt: skip


def _metadata_is(key: str, value: str) -> ColumnElement[bool]:
    """The conversation's metadata ``key`` equals ``value`` as text (a number 3 is "3" on both backends:
    SQLite's json_extract gives the number, which must be cast to compare with text)."""
    return cast(conversation.c.metadata[key].as_string(), String) == value


def _metadata_slice(
    conn: Connection, project_pk: int, metric: str, key: str, value: str, tenant: str | None, start: datetime,
    end: datetime,
) -> Measurement:  # fmt: skip
    """The window's figures of the conversations whose metadata ``key`` is ``value``, from the base tables:
    the same figures as the rollups' summary (store/rollups.py ``summarize``: messages that are not custom
    events, user sentiment, ratings, tokens per model, distinct conversations and users), in one aggregate
    statement instead of its rows per conversation, user and model (tests/test_alert_sources.py checks
    both agree)."""
    conditions = [
        message.c.project_pk == project_pk, message.c.created_at >= start, message.c.created_at < end,
        message.c.kind != "event", _metadata_is(key, value),
    ]  # fmt: skip
    if tenant is not None:
        conditions.append(conversation.c.tenant_id == tenant)
    source = message.join(conversation, conversation.c.pk == message.c.conversation_pk)
    user_sentiment = case((message.c.role == "user", message.c.sentiment))
    row = conn.execute(
        select(
            func.count(), func.count(func.distinct(message.c.conversation_pk)),
            func.count(func.distinct(conversation.c.end_user_pk)), func.sum(user_sentiment),
            func.count(user_sentiment), func.sum(case((message.c.rating > 0, 1), else_=0)),
            func.sum(case((message.c.rating < 0, 1), else_=0)),
        ).select_from(source).where(*conditions)
    ).one()  # fmt: skip
    figures = Summary(
        messages=int(row[0]), sentiment_sum=float(row[3] or 0.0), sentiment_count=int(row[4]),
        ratings_up=int(row[5] or 0), ratings_down=int(row[6] or 0),
    )  # fmt: skip
    if metric in ("cost", "cost_per_user"):
        for model, tokens_in, tokens_out in conn.execute(
            select(message.c.model, func.sum(message.c.input_tokens), func.sum(message.c.output_tokens))
            .select_from(source)
            .where(*conditions, message.c.model.is_not(None))
            .group_by(message.c.model)
        ):
            figures.tokens[model] = [int(tokens_in or 0), int(tokens_out or 0)]
    return _from_summary(metric, figures, int(row[1]), int(row[2]))
