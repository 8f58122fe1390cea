"""The dashboard's view of end users: a sortable table, new users over time, weekly cohort retention,
and what new and returning users ask about."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np
from sqlalchemy import Connection, func, select

from convolens.store import metrics, rollups, topic_newness
from convolens.store.dialect import Period, bucket, like_pattern
from convolens.store.tables import conversation, end_user, user_figures
from convolens.store.user_figures import OUTCOMES as COUNTED_OUTCOMES

SORTS = ("last_seen", "first_seen", "conversations", "messages", "avg_sentiment", "avg_rating", "user_id")


@dataclass
class UserRow:
    user_id: str
    conversations: int
    messages: int
    first_seen: datetime
    last_seen: datetime
    avg_sentiment: float | None = None
    avg_rating: float | None = None
    # {outcome: conversations} of all the user's conversations, each in its latest outcome.
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def unresolved_share(self) -> float | None:
        """Unresolved among the user's conversations with a verdict (resolved, unresolved, abandoned)."""
        judged = sum(self.outcomes.get(o, 0) for o in metrics.JUDGED)
        return self.outcomes.get("unresolved", 0) / judged if judged else None


def users_page(
    conn: Connection, project_pk: int, *, search: str | None, sort: str, descending: bool, page: int, per_page: int
) -> tuple[list[UserRow], int]:
    """A page of the project's end users with their running figures (store/user_figures.py: one row per
    user, a few seconds behind the messages), sorted by any column.

    Before those figures the page averaged every message of its users: 1.5 s (PostgreSQL) and 2.9 s
    (SQLite) at 5 million messages. Users without a figure yet (or without any sentiment or rating) sort
    last either way."""
    where = [end_user.c.project_pk == project_pk]
    if search:
        where.append(end_user.c.external_id.ilike(like_pattern(search), escape="\\"))
    total = conn.execute(select(func.count()).select_from(end_user).where(*where)).scalar_one()
    f = user_figures.c
    columns = {
        "last_seen": end_user.c.last_seen,
        "first_seen": end_user.c.first_seen,
        "user_id": end_user.c.external_id,
        "conversations": f.conversations,
        "messages": f.messages,
        "avg_sentiment": f.avg_sentiment,
        "avg_rating": f.avg_rating,
    }
    order = columns[sort]
    ordered = order.desc() if descending else order.asc()
    rows = conn.execute(
        select(
            end_user.c.external_id,
            func.coalesce(f.conversations, 0),
            func.coalesce(f.messages, 0),
            end_user.c.first_seen,
            end_user.c.last_seen,
            f.avg_sentiment,
            f.avg_rating,
            *(func.coalesce(f[o], 0) for o in COUNTED_OUTCOMES),
        )
        .select_from(end_user.outerjoin(user_figures, f.end_user_pk == end_user.c.pk))
        .where(*where)
        .order_by(ordered.nulls_last(), end_user.c.pk)
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    users = []
    for uid, conversations, messages, first, last, sentiment, rating, *outcomes in rows:
        user = UserRow(
            uid,
            int(conversations),
            int(messages),
            first,
            last,
            None if sentiment is None else round(float(sentiment), 3),
            None if rating is None else round(float(rating), 3),
        )
        # Running counts (each conversation in its latest outcome): counting a listed user's conversations
        # here took 0.7-1.9 s at 5M messages for a user with half a million of them.
        user.outcomes = {o: int(n) for o, n in zip(COUNTED_OUTCOMES, outcomes, strict=True) if n}
        users.append(user)
    return users, total


def new_users(conn: Connection, project_pk: int, start: datetime, end: datetime, period: Period) -> dict[str, int]:
    """Users first seen in each bucket."""
    label = bucket(conn, end_user.c.first_seen, period)
    rows = conn.execute(
        select(label, func.count())
        .where(end_user.c.project_pk == project_pk, end_user.c.first_seen >= start, end_user.c.first_seen <= end)
        .group_by(label)
    )
    return {str(k): int(v) for k, v in rows}


@dataclass
class Cohort:
    week: str
    size: int
    retention: list[float | None]  # share still active 0, 1, 2, … weeks after their first week


def weekly_cohorts(conn: Connection, project_pk: int, weeks: int, today: date) -> list[Cohort]:
    """Users by the week they were first seen, and the share of each cohort active in each later week
    (active: in a conversation with a message that week), for the last ``weeks`` weeks."""
    first_monday = today - timedelta(days=today.weekday(), weeks=weeks - 1)
    start = datetime.combine(first_monday, datetime.min.time())
    end = datetime.combine(today, datetime.max.time())
    week_of = bucket(conn, end_user.c.first_seen, "week")
    members: dict[str, list[int]] = {}
    for label, pk in conn.execute(
        select(week_of, end_user.c.pk).where(
            end_user.c.project_pk == project_pk, end_user.c.first_seen >= start, end_user.c.first_seen <= end
        )
    ):
        members.setdefault(str(label), []).append(pk)
    active: dict[str, list[np.ndarray]] = {}
    for day, _group, _figures, _conversations, users in metrics.day_figures(
        conn, project_pk, start=start, end=end, dimension="none"
    ):
        monday = (date.fromisoformat(day) - timedelta(days=date.fromisoformat(day).weekday())).isoformat()
        part = np.fromiter(users, dtype=np.int64) if isinstance(users, set) else rollups.unpack(users[1])
        active.setdefault(monday, []).append(part)
    active_sets = {week: rollups.sorted_unique(np.concatenate(parts)) for week, parts in active.items()}
    labels = [(first_monday + timedelta(weeks=i)).isoformat() for i in range(weeks)]
    cohorts = []
    for i, week in enumerate(labels):
        cohort = np.array(sorted(members.get(week, [])), dtype=np.int64)
        shares: list[float | None] = []
        for later in labels[i:]:
            if not len(cohort):
                shares.append(None)
                continue
            seen = active_sets.get(later, np.empty(0, dtype=np.int64))
            shares.append(round(len(np.intersect1d(cohort, seen, assume_unique=True)) / len(cohort), 3))
        cohorts.append(Cohort(week, len(cohort), shares))
    return cohorts


def topics_by_newness(conn: Connection, project_pk: int, start: datetime, end: datetime, limit: int = 10) -> list:
    """(topic, messages sent in their user's first week, messages of returning users), busiest first:
    kept per day by the rollup worker (store/topic_newness.py), so the page reads O(days x topics) rows."""
    return topic_newness.window(conn, project_pk, start, end, limit)


def first_seen(conn: Connection, project_pk: int, user_id: str) -> datetime | None:
    return conn.execute(
        select(end_user.c.first_seen).where(end_user.c.project_pk == project_pk, end_user.c.external_id == user_id)
    ).scalar()


def conversations_per_week(conn: Connection, project_pk: int, user_id: str) -> dict[str, int]:
    """Conversations the user started, by week."""
    label = bucket(conn, conversation.c.started_at, "week")
    user_pk = (
        select(end_user.c.pk)
        .where(end_user.c.project_pk == project_pk, end_user.c.external_id == user_id)
        .scalar_subquery()
    )
    rows = conn.execute(
        select(label, func.count())
        .where(conversation.c.project_pk == project_pk, conversation.c.end_user_pk == user_pk)
        .group_by(label)
    )
    return {str(k): int(v) for k, v in rows}
