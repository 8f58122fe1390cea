"""Context's upsert semantics: the client resends the whole history, and the server finds what is new.

A request continues an earlier conversation of the project when it has the same metadata and tenant,
starts with that conversation's first two messages, the stored messages are a prefix of the request,
and the conversation was active within the continuation window (six hours in Context).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime

import orjson
from sqlalchemy import Connection, select, update

from convolens.store.tables import conversation, message

_CANDIDATES = 5


def upsert_key(metadata: Mapping | None, tenant_id: str | None, first_two: Sequence[tuple[str, str]]) -> str:
    payload = orjson.dumps(
        [dict(sorted((metadata or {}).items())), tenant_id, [list(m) for m in first_two]],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(payload).hexdigest()


def find_continuation(
    conn: Connection,
    project_pk: int,
    key: str,
    active_since: datetime,
    messages: Sequence[tuple[str, str]],
) -> tuple[str, int] | None:
    """(conversation id, number of the request's messages already stored), or None for a new one."""
    candidates = conn.execute(
        select(conversation.c.pk, conversation.c.id)
        .where(
            conversation.c.project_pk == project_pk,
            conversation.c.upsert_key == key,
            conversation.c.last_message_at >= active_since,
        )
        .order_by(conversation.c.last_message_at.desc())
        .limit(_CANDIDATES)
    ).all()
    for candidate in candidates:
        stored = [
            (row.role, row.content)
            for row in conn.execute(
                select(message.c.role, message.c.content)
                .where(message.c.conversation_pk == candidate.pk)
                .order_by(message.c.position)
            )
        ]
        if len(stored) <= len(messages) and list(messages[: len(stored)]) == stored:
            return candidate.id, len(stored)
    return None


def set_upsert_key(conn: Connection, project_pk: int, conversation_id: str, key: str) -> None:
    conn.execute(
        update(conversation)
        .where(conversation.c.project_pk == project_pk, conversation.c.id == conversation_id)
        .values(upsert_key=key)
    )
