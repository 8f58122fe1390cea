"""Erasing an end user (GDPR art. 17): everything stored about them, in one transaction.

What goes: the user's conversations and every message in them (with whatever enrichment hangs off the
messages), and the end-user row. Rollups and derived tables written by later layers must register a
step here, so that no contribution of the user survives; the receipt counts each step.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, select

from convolens.store.tables import conversation, end_user, message


@dataclass(frozen=True)
class ErasureReceipt:
    user_id: str
    end_users: int
    conversations: int
    messages: int

    def as_dict(self) -> dict[str, object]:
        return {
            "user_id": self.user_id,
            "erased": {"end_users": self.end_users, "conversations": self.conversations, "messages": self.messages},
        }


def erase_end_user(conn: Connection, project_pk: int, external_id: str) -> ErasureReceipt | None:
    """Delete an end user and their conversations; None if the project has no such user."""
    user_pk = conn.execute(
        select(end_user.c.pk).where(end_user.c.project_pk == project_pk, end_user.c.external_id == external_id)
    ).scalar()
    if user_pk is None:
        return None
    conversations = select(conversation.c.pk).where(
        conversation.c.project_pk == project_pk, conversation.c.end_user_pk == user_pk
    )
    message_count = conn.execute(
        select(func.count()).select_from(message).where(message.c.conversation_pk.in_(conversations))
    ).scalar_one()
    conn.execute(delete(message).where(message.c.conversation_pk.in_(conversations)))
    conversation_count = conn.execute(
        delete(conversation).where(conversation.c.project_pk == project_pk, conversation.c.end_user_pk == user_pk)
    ).rowcount
    conn.execute(delete(end_user).where(end_user.c.pk == user_pk))
    return ErasureReceipt(external_id, 1, conversation_count, message_count)
