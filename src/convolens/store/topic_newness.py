"""What new and returning users ask about: per active topic, its links (matched messages) sent in their
user's first week (``NEW_USER_DAYS`` from first seen) and those of returning users, for the users page.

Joining the window's topic links to their users at every view grew with the window's traffic (about
250 ms of the users page at 5 million messages, 30 days). So the rollup worker keeps the figures per
(project, day, topic) in ``topic_day_newness``: when it redoes a marked day it counts that day's links
from the base tables in the same snapshot as the day's rollups (``count_links``) and replaces the day's
rows in the transaction that stores them (``replace_day``). Whatever changes a day's links (enrichment,
a topic's backfill, erasure, retention) marks the day, and a topic redefined marks the days it had rows
in (``rollups.forget_topic``); a removed topic's rows go with it (foreign key). A read (``window``) takes
whole clean days from the table and counts marked days and partial edge days live, with the same
function, as ``store/metrics.py`` does, so a figure is never stale.

One case is not followed: a user's first seen moving earlier (history ingested after newer messages)
changes which of their links count as new on days that were not marked; those days keep the old split
until something else marks them or ``convolens reenrich`` (``user_figures.rebuild``) redoes every day.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import Connection, case, delete, func, insert, select

from convolens.store import rollups
from convolens.store.dialect import bucket, plus_days
from convolens.store.tables import conversation, end_user, message_topic, topic, topic_day_newness

NEW_USER_DAYS = 7
_TICK = timedelta(microseconds=1)

# (day, topic key) -> [links from new users, links from returning users]
Counts = dict[tuple[str, int], list[int]]


def count_links(conn: Connection, project_pk: int, start: datetime, end: datetime) -> Counts:
    """The active topics' links created in ``[start, end)``, by day and topic, split by whether the
    message came in its user's first week; from the base tables (links of conversations without a user
    are not counted)."""
    is_new = case((message_topic.c.created_at < plus_days(conn, end_user.c.first_seen, NEW_USER_DAYS), 1), else_=0)
    day = bucket(conn, message_topic.c.created_at, "day")
    rows = conn.execute(
        select(day, message_topic.c.topic_pk, func.sum(is_new), func.count())
        .select_from(
            message_topic.join(topic, topic.c.pk == message_topic.c.topic_pk)
            .join(conversation, conversation.c.pk == message_topic.c.conversation_pk)
            .join(end_user, end_user.c.pk == conversation.c.end_user_pk)
        )
        .where(
            message_topic.c.project_pk == project_pk,
            topic.c.status == "active",
            message_topic.c.created_at >= start,
            message_topic.c.created_at < end,
        )
        .group_by(day, message_topic.c.topic_pk)
    )
    return {(label, topic_pk): [int(new or 0), int(n) - int(new or 0)] for label, topic_pk, new, n in rows}


def count_day(conn: Connection, project_pk: int, day: str) -> Counts:
    """``count_links`` of one UTC day (the worker's, in the snapshot it computes the day's rollups in)."""
    start = rollups.day_start(day)
    return count_links(conn, project_pk, start, start + timedelta(days=1))


def replace_day(conn: Connection, project_pk: int, day: str, counts: Counts) -> None:
    """Make ``counts`` (``count_links`` of the day) the day's stored rows. Run in the transaction that
    stores the day's rollups, after the worker's lease on the day was checked."""
    t = topic_day_newness.c
    conn.execute(delete(topic_day_newness).where(t.project_pk == project_pk, t.day == day))
    # A topic removed since the snapshot has no row to point at (its rows went with it).
    alive = set(conn.execute(select(topic.c.pk).where(topic.c.project_pk == project_pk)).scalars())
    rows = [
        {"project_pk": project_pk, "day": label, "topic_pk": topic_pk, "new_links": new, "returning_links": old}
        for (label, topic_pk), (new, old) in counts.items()
        if label == day and topic_pk in alive
    ]
    if rows:
        conn.execute(insert(topic_day_newness), rows)


def _whole_days(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[first, last) of the whole UTC days inside [start, end] (first >= last when there is none)."""
    midnight = datetime.combine(start.date(), datetime.min.time())
    first = midnight if start == midnight else midnight + timedelta(days=1)
    last = datetime.combine((end + _TICK).date(), datetime.min.time())
    return first, last


def window(conn: Connection, project_pk: int, start: datetime, end: datetime, limit: int = 10) -> list:
    """(topic name, links from new users, links from returning users) of the active topics over
    [start, end], busiest first (ties by name); topics with one name are counted together."""
    first, last = _whole_days(start, end)
    by_topic: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    live: list[tuple[datetime, datetime]] = []
    if first < last:
        first_day, last_day = first.date().isoformat(), (last - timedelta(days=1)).date().isoformat()
        dirty = rollups.dirty_days(conn, project_pk, first_day, last_day)
        t = topic_day_newness.c
        stored = (
            select(t.topic_pk, func.sum(t.new_links), func.sum(t.returning_links))
            .where(t.project_pk == project_pk, t.day >= first_day, t.day <= last_day)
            .group_by(t.topic_pk)
        )
        if dirty:
            stored = stored.where(t.day.not_in(sorted(dirty)))
        for topic_pk, new, old in conn.execute(stored):
            by_topic[topic_pk][0] += int(new or 0)
            by_topic[topic_pk][1] += int(old or 0)
        live = [(rollups.day_start(d), rollups.day_start(d) + timedelta(days=1)) for d in sorted(dirty)]
        if start < first:
            live.append((start, first))
        if last < end + _TICK:
            live.append((last, end + _TICK))
    else:
        live.append((start, end + _TICK))
    for lo, hi in live:
        for (_day, topic_pk), (new, old) in count_links(conn, project_pk, lo, hi).items():
            by_topic[topic_pk][0] += new
            by_topic[topic_pk][1] += old
    active = select(topic.c.pk, topic.c.name).where(topic.c.project_pk == project_pk, topic.c.status == "active")
    names = dict(conn.execute(active).all())
    by_name: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for topic_pk, (new, old) in by_topic.items():
        if topic_pk in names:
            by_name[names[topic_pk]][0] += new
            by_name[names[topic_pk]][1] += old
    ordered = sorted(by_name.items(), key=lambda item: (-(item[1][0] + item[1][1]), item[0]))
    return [(name, new, old) for name, (new, old) in ordered[:limit] if new + old]
