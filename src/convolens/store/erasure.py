"""Erasing an end user (GDPR art. 17): everything stored about them, in one transaction.

What goes: the user's conversations and every message in them (with whatever enrichment hangs off the
messages, and their entries in the search index: store/search.py), the end-user row and the user's
figures (store/user_figures.py). The days they were active in are marked for the rollups, which are
redone without them (and read from the base tables until then), so no contribution survives; the
receipt counts each step.

On disk: on SQLite, ``secure_delete`` (store/db.py) zeroes the deleted rows where they lay, and
``wipe_deleted`` then checkpoints and truncates the WAL, which held the pages as they were; callers run it
once the erasing transaction committed. On PostgreSQL the deleted rows stay as dead tuples in the table
files until VACUUM (autovacuum, usually within minutes) reclaims them, and in WAL segments and backups
for as long as those are kept (docs/deploy.md); the search index likewise: PostgreSQL's trigram index
until VACUUM; SQLite's FTS5 index with SQLite 3.44 or later removes them at once (its ``secure-delete``
option, set by migration 0013), with older SQLite they are no longer found at once but their trigrams
stay in an older index segment, marked deleted, until FTS5 merges it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, select, update

from convolens.store import rollups, translations, user_figures
from convolens.store.db import Database
from convolens.store.dialect import bucket
from convolens.store.tables import conversation, end_user, eval_item, message, test_case, test_set, topic
from convolens.timeutil import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErasureReceipt:
    user_id: str
    end_users: int
    conversations: int
    messages: int
    topic_phrases: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "user_id": self.user_id,
            "erased": {
                "end_users": self.end_users,
                "conversations": self.conversations,
                "messages": self.messages,
                "topic_phrases": self.topic_phrases,
            },
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
    ids = set(conn.execute(select(conversation.c.id).where(conversation.c.pk.in_(conversations))).scalars())
    phrases = _forget_in_topics(conn, project_pk, conversations, ids)
    _forget_in_test_cases(conn, project_pk, ids)
    # Rollups of the user's days are redone without them (and read live until then).
    label = bucket(conn, message.c.created_at, "day")
    days = set(conn.execute(select(label).where(message.c.conversation_pk.in_(conversations)).distinct()).scalars())
    started = bucket(conn, conversation.c.started_at, "day")
    days |= set(conn.execute(select(started).where(conversation.c.pk.in_(conversations)).distinct()).scalars())
    rollups.mark(conn, project_pk, days, utcnow())
    # The translation cache holds their words too (keyed by the text's hash); another user who wrote the
    # same text only has it translated again.
    translated = conn.execute(
        select(message.c.content).where(
            message.c.conversation_pk.in_(conversations), message.c.translation.is_not(None)
        )
    ).scalars()
    translations.forget(conn, project_pk, translated)
    conn.execute(delete(message).where(message.c.conversation_pk.in_(conversations)))
    conversation_count = conn.execute(
        delete(conversation).where(conversation.c.project_pk == project_pk, conversation.c.end_user_pk == user_pk)
    ).rowcount
    user_figures.forget_user(conn, user_pk)
    conn.execute(delete(end_user).where(end_user.c.pk == user_pk))
    return ErasureReceipt(external_id, 1, conversation_count, message_count, phrases)


def _forget_in_topics(conn: Connection, project_pk: int, conversations, ids: set[str]) -> int:  # type: ignore[no-untyped-def]
    """Suggested topics quote their members (phrases, sample conversation ids: ``ids``), and an accepted
    suggestion keeps them as examples: the user's words and conversations leave those too."""
    texts = set(conn.execute(select(message.c.content).where(message.c.conversation_pk.in_(conversations))).scalars())
    removed = 0
    rows = conn.execute(
        select(topic.c.pk, topic.c.definition, topic.c.samples).where(
            topic.c.project_pk == project_pk, topic.c.kind.in_(("suggested", "semantic"))
        )
    ).all()
    for pk, definition, samples in rows:
        kept = dict(definition)
        for key in ("phrases", "examples"):
            if isinstance(kept.get(key), list):
                before = len(kept[key])
                kept[key] = [p for p in kept[key] if p not in texts]
                removed += before - len(kept[key])
        kept_samples = [s for s in (samples or []) if s not in ids]
        if kept != definition or kept_samples != (samples or []):
            # updated_at moves so that workers recompile the topic without the erased examples
            conn.execute(
                update(topic).where(topic.c.pk == pk).values(definition=kept, samples=kept_samples, updated_at=utcnow())
            )
    return removed


def _forget_in_test_cases(conn: Connection, project_pk: int, ids: set[str]) -> int:
    """Test cases made from the user's conversations (``ids``; a transcript's "Add to test set", a
    collection rule: evaluations/from_conversation.py names the conversation in the case's metadata) quote
    their words: they go, with the run items that evaluated them, and their test set versions count what
    is left."""
    if not ids:
        return 0
    source = test_case.c.body["metadata"]["conversation_id"].as_string()
    doomed = conn.execute(
        select(test_case.c.pk, test_case.c.test_set_pk).where(
            test_case.c.test_set_pk.in_(select(test_set.c.pk).where(test_set.c.project_pk == project_pk)),
            source.in_(sorted(ids)),
        )
    ).all()
    if not doomed:
        return 0
    pks = [pk for pk, _ in doomed]
    conn.execute(delete(eval_item).where(eval_item.c.test_case_pk.in_(pks)))
    conn.execute(delete(test_case).where(test_case.c.pk.in_(pks)))
    for set_pk in sorted({set_pk for _, set_pk in doomed}):
        left = select(func.count()).where(test_case.c.test_set_pk == set_pk).scalar_subquery()
        conn.execute(update(test_set).where(test_set.c.pk == set_pk).values(case_count=left))
    return len(pks)


def wipe_deleted(db: Database) -> None:
    """After an erasure or a prune committed: leave no copy of the deleted rows in SQLite's WAL file."""
    if not db.checkpoint():
        log.warning("a long read held up the checkpoint: deleted rows stay in the WAL file until the next one")
