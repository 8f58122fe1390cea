"""The first and last messages of some conversations, in one query: what a door that receives a
conversation's whole history again (OpenTelemetry spans) compares with to append only what is new;
and the lock that makes two such writes to one conversation take turns on PostgreSQL."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Connection, or_, select, text

from convolens.store.tables import conversation, message

# The first key of the advisory locks on (project, conversation id) taken by ``lock``.
_LOCK_SPACE = 7302


def lock(conn: Connection, project_pk: int, conversation_ids: Collection[str]) -> None:
    """Until the commit, one writer at a time for these conversations (PostgreSQL; SQLite has one writer
    anyway). Two requests with turns of one session, read at once under READ COMMITTED, would each take
    the other's resent history for new. Conversations not stored yet are locked too (by id, not row)."""
    if conn.dialect.name != "postgresql" or not conversation_ids:
        return
    conn.execute(
        text(
            "SELECT pg_advisory_xact_lock(:space, k) FROM (SELECT DISTINCT"
            " hashtext(CAST(:project AS text) || ':' || id) AS k"
            " FROM unnest(CAST(:ids AS text[])) AS id ORDER BY k) AS ordered"
        ),
        {"space": _LOCK_SPACE, "project": str(project_pk), "ids": sorted(conversation_ids)},
    )


def conversation_ends(
    conn: Connection, project_pk: int, conversation_ids: Collection[str], first: int, last: int
) -> dict[str, list[tuple[str, str, str, datetime]]]:
    """{conversation id: [(message id, role, content, created_at)]}: each conversation's first ``first``
    and last ``last`` messages (custom events left out), in position order; one not stored is absent."""
    if not conversation_ids:
        return {}
    rows = conn.execute(
        select(conversation.c.id, message.c.id, message.c.role, message.c.content, message.c.created_at)
        .select_from(conversation.join(message, message.c.conversation_pk == conversation.c.pk))
        .where(
            conversation.c.project_pk == project_pk,
            conversation.c.id.in_(sorted(conversation_ids)),
            or_(message.c.position < first, message.c.position >= conversation.c.message_count - last),
            message.c.kind != "event",
        )
        .order_by(conversation.c.id, message.c.position)
    ).all()
    out: dict[str, list[tuple[str, str, str, datetime]]] = {}
    for conversation_id, message_id, role, content, created_at in rows:
        out.setdefault(conversation_id, []).append((message_id, role, content, created_at))
    return out
