"""Retention: conversations whose last message is older than a cutoff are deleted with everything that
hangs off them, a bounded batch per transaction, so ingestion (which waits for SQLite's one writer)
is held up for one short batch at a time, never for the whole prune.

What goes with a conversation: its messages, their embeddings and topic links (foreign-key cascades),
and end users left without any conversation. The days it touched are marked for the rollups.
Callers run ``erasure.wipe_deleted`` once they are done, so the deleted text leaves SQLite's WAL too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, exists, func, select

from convolens.store import rollups
from convolens.store.dialect import bucket
from convolens.store.tables import conversation, end_user, message

BATCH_CONVERSATIONS = 500
_DURATION = re.compile(r"^\s*(\d{1,6})\s*([hdw])\s*$")


def parse_age(text: str) -> timedelta:
    """``90d``, ``12w`` or ``48h``; ValueError otherwise."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"expected an age such as 90d, 12w or 48h, got {text!r}")
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(hours=amount) if unit == "h" else timedelta(days=amount * (7 if unit == "w" else 1))


@dataclass
class Pruned:
    conversations: int = 0
    messages: int = 0
    end_users: int = 0

    def add(self, other: Pruned) -> None:
        self.conversations += other.conversations
        self.messages += other.messages
        self.end_users += other.end_users


def prune_batch(
    conn: Connection, project_pk: int, cutoff: datetime, now: datetime, limit: int = BATCH_CONVERSATIONS
) -> Pruned:
    """Delete up to ``limit`` of the project's conversations last active before ``cutoff``."""
    pks = list(
        conn.execute(
            select(conversation.c.pk)
            .where(conversation.c.project_pk == project_pk, conversation.c.last_message_at < cutoff)
            .order_by(conversation.c.last_message_at)
            .limit(limit)
        ).scalars()
    )
    if not pks:
        return Pruned()
    users = set(
        conn.execute(
            select(conversation.c.end_user_pk).where(
                conversation.c.pk.in_(pks), conversation.c.end_user_pk.is_not(None)
            )
        ).scalars()
    )
    day = bucket(conn, message.c.created_at, "day")
    days = set(conn.execute(select(day).where(message.c.conversation_pk.in_(pks)).distinct()).scalars())
    days |= set(
        conn.execute(select(bucket(conn, conversation.c.started_at, "day")).where(conversation.c.pk.in_(pks))).scalars()
    )
    rollups.mark(conn, project_pk, days, now)
    messages = conn.execute(delete(message).where(message.c.conversation_pk.in_(pks))).rowcount
    conversations = conn.execute(delete(conversation).where(conversation.c.pk.in_(pks))).rowcount
    orphans = 0
    if users:
        still_active = exists().where(conversation.c.end_user_pk == end_user.c.pk)
        orphans = conn.execute(delete(end_user).where(end_user.c.pk.in_(users), ~still_active)).rowcount
    return Pruned(conversations, messages, orphans)


def stale_count(conn: Connection, project_pk: int, cutoff: datetime) -> int:
    return conn.execute(
        select(func.count())
        .select_from(conversation)
        .where(conversation.c.project_pk == project_pk, conversation.c.last_message_at < cutoff)
    ).scalar_one()
