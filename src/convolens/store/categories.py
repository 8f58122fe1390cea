"""Categories of topics: the upper level of a project's topic map.

The clustering run groups its suggested topics into categories (``enrich.suggest.categorise``) and
``place`` stores them so that a category keeps its pk while most of its topics stay: an earlier
category whose suggested topics are at least half in a new one *is* that one (the largest overlap
first, each earlier category matched once), and keeps its id and its name. A category no new one
matches goes, unless a topic an admin put in it still is (those stay where the admin put them).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import Connection, delete, func, insert, select, update

from convolens.store.tables import message_topic, topic, topic_category

UNCATEGORISED = "Uncategorised"


@dataclass(frozen=True)
class CategoryRow:
    pk: int
    name: str


@dataclass
class Found:
    """A category of this run: its name, centre and the pks of its (stored) suggested topics."""

    name: str
    centroid: np.ndarray
    topic_pks: list[int]


def list_categories(conn: Connection, project_pk: int) -> list[CategoryRow]:
    rows = conn.execute(
        select(topic_category.c.pk, topic_category.c.name)
        .where(topic_category.c.project_pk == project_pk)
        .order_by(topic_category.c.pk)
    )
    return [CategoryRow(pk, name) for pk, name in rows]


def get(conn: Connection, project_pk: int, category_pk: int) -> CategoryRow | None:
    row = conn.execute(
        select(topic_category.c.pk, topic_category.c.name).where(
            topic_category.c.project_pk == project_pk, topic_category.c.pk == category_pk
        )
    ).first()
    return CategoryRow(*row) if row else None


def assign(conn: Connection, project_pk: int, topic_pk: int, category_pk: int | None) -> None:
    """Put a topic in a category (None: uncategorised); the caller checked the category is the project's."""
    conn.execute(
        update(topic).where(topic.c.project_pk == project_pk, topic.c.pk == topic_pk).values(category_pk=category_pk)
    )


def place(conn: Connection, project_pk: int, found: list[Found], now: datetime) -> dict[str, int]:
    """Store this run's categories over the suggested topics; returns how many were new, kept and dropped."""
    members: dict[int, set[int]] = defaultdict(set)
    for topic_pk, category_pk in conn.execute(
        select(topic.c.pk, topic.c.category_pk).where(
            topic.c.project_pk == project_pk, topic.c.kind == "suggested", topic.c.category_pk.is_not(None)
        )
    ):
        members[category_pk].add(topic_pk)
    earlier = [c.pk for c in list_categories(conn, project_pk)]
    # Candidate pairs by overlap, largest first: a category split in two keeps its id in the larger half.
    pairs = sorted(
        (
            (len(members[old] & set(new.topic_pks)), -old, i)
            for i, new in enumerate(found)
            for old in earlier
            if members[old] and 2 * len(members[old] & set(new.topic_pks)) >= len(members[old])
        ),
        reverse=True,
    )
    matched: dict[int, int] = {}  # index in found -> earlier pk
    for overlap, negative_old, i in pairs:
        if overlap and i not in matched and -negative_old not in matched.values():
            matched[i] = -negative_old
    counts = {"categories_new": 0, "categories_kept": 0, "categories_dropped": 0}
    for i, new in enumerate(found):
        centroid = np.asarray(new.centroid, dtype=np.float16).tobytes()
        if i in matched:
            pk = matched[i]
            conn.execute(
                update(topic_category).where(topic_category.c.pk == pk).values(centroid=centroid, updated_at=now)
            )
            counts["categories_kept"] += 1
        else:
            pk = conn.execute(
                insert(topic_category)
                .values(project_pk=project_pk, name=new.name[:128], centroid=centroid, created_at=now, updated_at=now)
                .returning(topic_category.c.pk)
            ).scalar_one()
            counts["categories_new"] += 1
        if new.topic_pks:
            conn.execute(
                update(topic)
                .where(topic.c.project_pk == project_pk, topic.c.pk.in_(new.topic_pks))
                .values(category_pk=pk)
            )
    still_used = set(
        conn.execute(
            select(topic.c.category_pk).where(topic.c.project_pk == project_pk, topic.c.category_pk.is_not(None))
        ).scalars()
    )
    gone = [pk for pk in earlier if pk not in matched.values() and pk not in still_used]
    if gone:
        conn.execute(delete(topic_category).where(topic_category.c.pk.in_(gone)))
        counts["categories_dropped"] = len(gone)
    return counts


def volumes(conn: Connection, project_pk: int, start: datetime, end: datetime) -> dict[int, int]:
    """User messages in ``[start, end)`` per category of their topics (active or suggested), each message
    once in a category however many of its topics it is in; 0 for topics in no category. One grouped
    count over the window's topic links (the (topic, created_at) index)."""
    links = (
        select(message_topic.c.message_pk, func.coalesce(topic.c.category_pk, 0).label("category_pk"))
        .join(topic, topic.c.pk == message_topic.c.topic_pk)
        .where(
            topic.c.project_pk == project_pk,
            topic.c.status.in_(("active", "suggested")),
            message_topic.c.created_at >= start,
            message_topic.c.created_at < end,
        )
        .distinct()
        .subquery()
    )
    rows = conn.execute(select(links.c.category_pk, func.count()).group_by(links.c.category_pk))
    return {int(pk): n for pk, n in rows}
