"""Each end user's running figures (conversations, messages, sentiment and rating sums, conversations by
outcome) for the users page.

Kept by the rollup worker, with the same marks: when it redoes a day (store/rollups.py), it computes each
user's figures of that day from the base tables in the same snapshot (``day_figures``), and in the
transaction that stores the day's rollups adds the difference to what it had stored for that day before
(``apply``). Additions commute, so two workers redoing two days of one user never lose an update, and
a day is only redone by the worker holding its lease. Whatever changes a day (ingest, enrichment, a
rating, erasure, retention) marks it, so the totals follow; erasing a user deletes their rows outright.

Conversations are counted on the day they started; messages exclude custom events.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta

from sqlalchemy import Connection, Float, Integer, bindparam, case, cast, delete, func, select, update

from convolens.store import rollups
from convolens.store.dialect import bucket, insert_ignore
from convolens.store.tables import conversation, end_user, message, user_day_figures, user_figures


@dataclass
class Figures:
    conversations: int = 0
    messages: int = 0
    sentiment_sum: float = 0.0
    sentiment_count: int = 0
    rated: int = 0
    rating_sum: int = 0
    # Conversations by latest outcome, on the day they started (as the rollups count them).
    resolved: int = 0
    unresolved: int = 0
    abandoned: int = 0

    def minus(self, other: Figures) -> Figures:
        return Figures(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def is_zero(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))


NAMES = tuple(f.name for f in fields(Figures))
OUTCOMES = ("resolved", "unresolved", "abandoned")


def day_figures(conn: Connection, project_pk: int, day: str) -> dict[int, Figures]:
    """Each user's figures of one UTC day, from the base tables."""
    start = rollups.day_start(day)
    end = start + timedelta(days=1)
    out: dict[int, Figures] = {}
    is_user = message.c.role == "user"
    user_sentiment = case((is_user, message.c.sentiment))
    rows = conn.execute(
        select(
            conversation.c.end_user_pk,
            func.count(),
            func.sum(user_sentiment),
            func.count(user_sentiment),
            func.count(message.c.rating),
            func.sum(message.c.rating),
        )
        .select_from(message.join(conversation, conversation.c.pk == message.c.conversation_pk))
        .where(
            message.c.project_pk == project_pk,
            message.c.created_at >= start,
            message.c.created_at < end,
            message.c.kind != "event",
            conversation.c.end_user_pk.is_not(None),
        )
        .group_by(conversation.c.end_user_pk)
    )
    for user_pk, n, s_sum, s_n, rated, r_sum in rows:
        out[user_pk] = Figures(0, int(n), float(s_sum or 0.0), int(s_n), int(rated), int(r_sum or 0))
    started = conn.execute(
        select(conversation.c.end_user_pk, conversation.c.outcome, func.count())
        .where(
            conversation.c.project_pk == project_pk,
            conversation.c.started_at >= start,
            conversation.c.started_at < end,
            conversation.c.end_user_pk.is_not(None),
        )
        .group_by(conversation.c.end_user_pk, conversation.c.outcome)
    )
    for user_pk, outcome, n in started:
        figures = out.setdefault(user_pk, Figures())
        figures.conversations += int(n)
        if outcome in OUTCOMES:
            setattr(figures, outcome, getattr(figures, outcome) + int(n))
    return out


def apply(conn: Connection, project_pk: int, day: str, figures: dict[int, Figures]) -> None:
    """Make ``figures`` the users' figures of ``day``: add their difference to the stored ones to the
    users' totals and keep them as the day's rows. Run in the transaction that stores the day's rollups."""
    d = user_day_figures.c
    before = {
        row.end_user_pk: Figures(*(getattr(row, name) for name in NAMES))
        for row in conn.execute(
            select(d.end_user_pk, *(d[n] for n in NAMES)).where(d.project_pk == project_pk, d.day == day)
        )
    }
    # A user erased since the day's snapshot has no row to add to (and must not get one back).
    wanted = set(figures) | set(before)
    alive = set()
    pks = sorted(wanted)
    for start in range(0, len(pks), 500):
        chunk = pks[start : start + 500]
        alive.update(conn.execute(select(end_user.c.pk).where(end_user.c.pk.in_(chunk))).scalars())
    changes = []
    for user_pk in sorted(alive):
        change = figures.get(user_pk, Figures()).minus(before.get(user_pk, Figures()))
        if not change.is_zero():
            changes.append((user_pk, change))
    if changes:
        conn.execute(
            insert_ignore(conn, user_figures, ["end_user_pk"]),
            [{"end_user_pk": pk, "project_pk": project_pk, **dict.fromkeys(NAMES, 0)} for pk, _ in changes],
        )
        t = user_figures.c
        new = {n: t[n] + bindparam(f"d_{n}", type_=Float if n == "sentiment_sum" else Integer) for n in NAMES}
        conn.execute(
            update(user_figures)
            .where(t.end_user_pk == bindparam("pk"))
            .values(
                **new,
                # From the new sums, in the same statement (SET reads the row as it was).
                avg_sentiment=case((new["sentiment_count"] > 0, new["sentiment_sum"] / new["sentiment_count"])),
                avg_rating=case((new["rated"] > 0, cast(new["rating_sum"], Float) / new["rated"])),
            ),
            [{"pk": pk, **{f"d_{n}": getattr(change, n) for n in NAMES}} for pk, change in changes],
        )
    conn.execute(delete(user_day_figures).where(d.project_pk == project_pk, d.day == day))
    kept = [
        {"project_pk": project_pk, "day": day, "end_user_pk": pk, **{n: getattr(f, n) for n in NAMES}}
        for pk, f in figures.items()
        if pk in alive and not f.is_zero()
    ]
    if kept:
        conn.execute(user_day_figures.insert(), kept)


def forget_user(conn: Connection, user_pk: int) -> None:
    """An erased user's figures go with them (the foreign keys cascade too; this does not rely on it)."""
    conn.execute(delete(user_day_figures).where(user_day_figures.c.end_user_pk == user_pk))
    conn.execute(delete(user_figures).where(user_figures.c.end_user_pk == user_pk))


def rebuild(conn: Connection, project_pk: int | None, now: datetime) -> int:
    """Drop the projects' user figures and mark every day that has messages, so that the worker computes
    them again from the base tables (``convolens reenrich``); returns how many days were marked."""
    project_pks: Iterable[int]
    if project_pk is None:
        project_pks = list(conn.execute(select(message.c.project_pk).distinct()).scalars())
    else:
        project_pks = [project_pk]
    marked = 0
    for pk in project_pks:
        conn.execute(delete(user_day_figures).where(user_day_figures.c.project_pk == pk))
        conn.execute(delete(user_figures).where(user_figures.c.project_pk == pk))
        label = bucket(conn, message.c.created_at, "day")
        days = set(conn.execute(select(label).where(message.c.project_pk == pk).distinct()).scalars())
        started = bucket(conn, conversation.c.started_at, "day")
        days |= set(conn.execute(select(started).where(conversation.c.project_pk == pk).distinct()).scalars())
        rollups.mark(conn, pk, days, now)
        marked += len(days)
    return marked
