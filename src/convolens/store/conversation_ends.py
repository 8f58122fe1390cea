"""The first and last messages of some conversations, in one query: what a door that receives a
conversation's whole history again (OpenTelemetry spans) compares with to append only what is new."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Connection, or_, select

from convolens.store.tables import conversation, message


def conversation_ends(
    conn: Connection, project_pk: int, conversation_ids: Collection[str], first: int, last: int
) -> dict[str, list[tuple[str, str, str]]]:
    """{conversation id: [(message id, role, content)]}: each conversation's first ``first`` and last
    ``last`` messages (custom events left out), in position order; a conversation not stored is absent."""
    if not conversation_ids:
        return {}
    rows = conn.execute(
        select(conversation.c.id, message.c.id, message.c.role, message.c.content)
        .select_from(conversation.join(message, message.c.conversation_pk == conversation.c.pk))
        .where(
            conversation.c.project_pk == project_pk,
            conversation.c.id.in_(sorted(conversation_ids)),
            or_(message.c.position < first, message.c.position >= conversation.c.message_count - last),
            message.c.kind != "event",
        )
        .order_by(conversation.c.id, message.c.position)
    ).all()
    out: dict[str, list[tuple[str, str, str]]] = {}
    for conversation_id, message_id, role, content in rows:
        out.setdefault(conversation_id, []).append((message_id, role, content))
    return out
