"""Writing an ``IngestBatch`` in one transaction: idempotent on ids, set-at-a-time where it can be.

The steps, in order: look up every conversation and message id the batch names (one query each);
walk the events to build the rows to write; insert new conversations and end users (``ON CONFLICT DO
NOTHING``, so concurrent API processes never collide); reserve message positions per conversation with
one ``UPDATE … RETURNING``; insert all new messages with one executemany; apply ratings and feedback.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from convolens.schemas.ingest import (
    ClientStats,
    ConversationEvent,
    CustomEvent,
    FeedbackEvent,
    IngestBatch,
    ItemResult,
    MessageEvent,
    RatingEvent,
)
from convolens.store import rollups
from convolens.store.dialect import greatest, insert_ignore, least
from convolens.store.tables import client_report, conversation, end_user, message
from convolens.timeutil import to_naive_utc

_IN_CHUNK = 500


def new_id() -> str:
    return uuid.uuid4().hex


def _chunks(items: Sequence, size: int = _IN_CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class _Conversation:
    id: str
    pk: int | None = None
    exists: bool = False
    # As stored before this batch: a change of tenant or user moves the conversation's past days.
    started_at: datetime | None = None
    stored_tenant_id: str | None = None
    stored_user_pk: int | None = None
    tenant_id: str | None = None
    user_id: str | None = None
    metadata: dict[str, Any] | None = None
    feedback: str | None = None
    first_at: datetime | None = None
    last_at: datetime | None = None
    changed: set[str] = field(default_factory=set)
    new_messages: list[dict[str, Any]] = field(default_factory=list)

    def see(self, at: datetime) -> None:
        self.first_at = at if self.first_at is None or at < self.first_at else self.first_at
        self.last_at = at if self.last_at is None or at > self.last_at else self.last_at


@dataclass
class BatchOutcome:
    results: list[ItemResult]
    created_messages: int


class _BatchWriter:
    def __init__(self, conn: Connection, project_pk: int, now: datetime) -> None:
        self.conn = conn
        self.project_pk = project_pk
        self.now = now
        self.conversations: dict[str, _Conversation] = {}
        self.known_message_ids: set[str] = set()
        self.pending_messages: dict[str, dict[str, Any]] = {}
        self.rating_updates: list[tuple[int, ItemResult, RatingEvent]] = []
        # The days whose rollups this batch changes (store/rollups.py).
        self.changed_days: set[str] = set()

    # -- look-ups -------------------------------------------------------------------------------
    def prefetch(self, batch: IngestBatch) -> None:
        conversation_ids = list(
            {e.conversation_id if not isinstance(e, ConversationEvent) else e.id for e in batch.events}
        )
        for chunk in _chunks(conversation_ids):
            rows = self.conn.execute(
                select(
                    conversation.c.pk,
                    conversation.c.id,
                    conversation.c.metadata,
                    conversation.c.started_at,
                    conversation.c.tenant_id,
                    conversation.c.end_user_pk,
                ).where(conversation.c.project_pk == self.project_pk, conversation.c.id.in_(chunk))
            )
            for row in rows:
                self.conversations[row.id] = _Conversation(
                    id=row.id,
                    pk=row.pk,
                    exists=True,
                    metadata=row.metadata,
                    started_at=row.started_at,
                    stored_tenant_id=row.tenant_id,
                    stored_user_pk=row.end_user_pk,
                )
        ids = [e.id for e in batch.events if isinstance(e, MessageEvent | CustomEvent) and e.id]
        ids += [e.message_id for e in batch.events if isinstance(e, RatingEvent) and e.message_id]
        for chunk in _chunks(list(set(ids))):
            rows = self.conn.execute(
                select(message.c.id).where(message.c.project_pk == self.project_pk, message.c.id.in_(chunk))
            )
            self.known_message_ids.update(row.id for row in rows)

    def _conversation(self, conversation_id: str) -> _Conversation:
        conv = self.conversations.get(conversation_id)
        if conv is None:
            conv = self.conversations[conversation_id] = _Conversation(id=conversation_id)
        return conv

    # -- events ---------------------------------------------------------------------------------
    def on_conversation(self, event: ConversationEvent) -> ItemResult:
        conv = self._conversation(event.id)
        status = "updated" if conv.exists or conv.changed or conv.new_messages else "created"
        if event.tenant_id is not None:
            conv.tenant_id = event.tenant_id
            conv.changed.add("tenant_id")
        if event.user_id is not None:
            conv.user_id = event.user_id
            conv.changed.add("user_id")
        if event.metadata is not None:
            conv.metadata = {**(conv.metadata or {}), **event.metadata}
            conv.changed.add("metadata")
        if event.feedback is not None:
            conv.feedback = event.feedback
            conv.changed.add("feedback")
        if event.timestamp is not None:
            conv.see(to_naive_utc(event.timestamp))
        conv.changed.add("seen")
        return ItemResult(index=0, status=status, id=event.id)

    def _add_message(self, conv: _Conversation, row: dict[str, Any]) -> ItemResult:
        if row["id"] in self.known_message_ids or row["id"] in self.pending_messages:
            return ItemResult(index=0, status="duplicate", id=row["id"])
        conv.see(row["created_at"])
        conv.new_messages.append(row)
        self.pending_messages[row["id"]] = row
        return ItemResult(index=0, status="created", id=row["id"])

    def _attach_user(self, conv: _Conversation, user_id: str | None, tenant_id: str | None = None) -> None:
        if user_id is not None and conv.user_id is None:
            conv.user_id = user_id
            conv.changed.add("user_id")
        if tenant_id is not None and conv.tenant_id is None:
            conv.tenant_id = tenant_id
            conv.changed.add("tenant_id")

    def on_message(self, event: MessageEvent) -> ItemResult:
        conv = self._conversation(event.conversation_id)
        self._attach_user(conv, event.user_id, event.tenant_id)
        return self._add_message(
            conv,
            {
                "id": event.id or new_id(),
                "role": event.role,
                "kind": event.kind,
                "name": event.name,
                "content": event.content,
                "created_at": to_naive_utc(event.timestamp) if event.timestamp else self.now,
                "metadata": event.metadata,
                "extra": event.extra,
                "rating": event.rating,
                "model": event.model,
                "input_tokens": event.input_tokens,
                "output_tokens": event.output_tokens,
                "latency_ms": event.latency_ms,
                "error": event.error,
            },
        )

    def on_custom_event(self, event: CustomEvent) -> ItemResult:
        conv = self._conversation(event.conversation_id)
        self._attach_user(conv, event.user_id)
        return self._add_message(
            conv,
            {
                "id": event.id or new_id(),
                "role": "system",
                "kind": "event",
                "name": event.name,
                "content": event.name,
                "created_at": to_naive_utc(event.timestamp) if event.timestamp else self.now,
                "metadata": event.properties,
            },
        )

    def on_feedback(self, event: FeedbackEvent) -> ItemResult:
        conv = self.conversations.get(event.conversation_id)
        if conv is None or not (conv.exists or conv.changed or conv.new_messages):
            return ItemResult(index=0, status="not_found", id=event.conversation_id, detail="no such conversation")
        conv.feedback = event.feedback
        conv.changed.add("feedback")
        return ItemResult(index=0, status="updated", id=event.conversation_id)

    def on_rating(self, event: RatingEvent) -> ItemResult:
        if event.message_id is not None and event.message_id in self.pending_messages:
            self.pending_messages[event.message_id]["rating"] = event.rating
            return ItemResult(index=0, status="updated", id=event.message_id)
        if event.message_id is None:
            conv = self.conversations.get(event.conversation_id)
            replies = [m for m in (conv.new_messages if conv else []) if m["role"] == "assistant"]
            if replies:
                replies[-1]["rating"] = event.rating
                return ItemResult(index=0, status="updated", id=replies[-1]["id"])
        result = ItemResult(index=0, status="updated", id=event.message_id)
        self.rating_updates.append((len(self.rating_updates), result, event))
        return result

    # -- writes ---------------------------------------------------------------------------------
    def _user_pks(self) -> dict[str, int]:
        seen: dict[str, tuple[datetime, datetime]] = {}
        for conv in self.conversations.values():
            if conv.user_id is None:
                continue
            first = conv.first_at or self.now
            last = conv.last_at or self.now
            if conv.user_id in seen:
                old_first, old_last = seen[conv.user_id]
                first, last = min(first, old_first), max(last, old_last)
            seen[conv.user_id] = (first, last)
        if not seen:
            return {}
        # Rows are locked in key order, in every transaction: two batches touching the same users or
        # conversations then queue behind each other instead of deadlocking (PostgreSQL).
        seen = dict(sorted(seen.items()))
        self.conn.execute(
            insert_ignore(self.conn, end_user, ["project_pk", "external_id"]),
            [
                {"project_pk": self.project_pk, "external_id": uid, "first_seen": f, "last_seen": la}
                for uid, (f, la) in seen.items()
            ],
        )
        pks: dict[str, int] = {}
        for uid, (first, last) in seen.items():
            pk = self._touch_user(uid, first, last)
            if pk is None:
                # Retention removed the user between our insert and this update (PostgreSQL): add them again.
                self.conn.execute(
                    insert_ignore(self.conn, end_user, ["project_pk", "external_id"]),
                    {"project_pk": self.project_pk, "external_id": uid, "first_seen": first, "last_seen": last},
                )
                pk = self._touch_user(uid, first, last)
            assert pk is not None
            pks[uid] = pk
        return pks

    def _touch_user(self, uid: str, first: datetime, last: datetime) -> int | None:
        return self.conn.execute(
            update(end_user)
            .where(end_user.c.project_pk == self.project_pk, end_user.c.external_id == uid)
            .values(
                first_seen=least(self.conn, end_user.c.first_seen, first),
                last_seen=greatest(self.conn, end_user.c.last_seen, last),
            )
            .returning(end_user.c.pk)
        ).scalar()

    def _insert_new_conversations(self, user_pks: dict[str, int]) -> None:
        new = sorted(
            (c for c in self.conversations.values() if not c.exists and (c.changed or c.new_messages)),
            key=lambda c: c.id,
        )
        if not new:
            return
        self.conn.execute(
            insert_ignore(self.conn, conversation, ["project_pk", "id"]),
            [
                {
                    "project_pk": self.project_pk,
                    "id": c.id,
                    "tenant_id": c.tenant_id,
                    "end_user_pk": user_pks.get(c.user_id) if c.user_id else None,
                    "metadata": c.metadata,
                    "feedback": c.feedback,
                    "started_at": c.first_at or self.now,
                    "last_message_at": c.last_at or self.now,
                    "message_count": 0,
                    "created_at": self.now,
                }
                for c in new
            ],
        )
        for chunk in _chunks([c.id for c in new]):
            rows = self.conn.execute(
                select(conversation.c.pk, conversation.c.id).where(
                    conversation.c.project_pk == self.project_pk, conversation.c.id.in_(chunk)
                )
            )
            for row in rows:
                self.conversations[row.id].pk = row.pk

    def _update_conversation(self, conv: _Conversation, user_pks: dict[str, int]) -> None:
        values: dict[str, Any] = {}
        if "tenant_id" in conv.changed:
            values["tenant_id"] = conv.tenant_id
        if "user_id" in conv.changed and conv.user_id:
            values["end_user_pk"] = user_pks[conv.user_id]
        if "metadata" in conv.changed:
            values["metadata"] = conv.metadata
        if "feedback" in conv.changed:
            values["feedback"] = conv.feedback
        if conv.first_at is not None:
            values["started_at"] = least(self.conn, conversation.c.started_at, conv.first_at)
            values["last_message_at"] = greatest(self.conn, conversation.c.last_message_at, conv.last_at)
        n = len(conv.new_messages)
        if n:
            values["message_count"] = conversation.c.message_count + n
        if not values:
            return
        count, started_at, last_at = self.conn.execute(
            update(conversation)
            .where(conversation.c.pk == conv.pk)
            .values(**values)
            .returning(conversation.c.message_count, conversation.c.started_at, conversation.c.last_message_at)
        ).one()
        moved = ("tenant_id" in values and conv.tenant_id != conv.stored_tenant_id) or (
            "end_user_pk" in values and values["end_user_pk"] != conv.stored_user_pk
        )
        if conv.exists and moved:
            self.changed_days.update(rollups.days_between(started_at, last_at))  # its past days move group
        elif conv.started_at is not None and conv.first_at is not None and conv.first_at < conv.started_at:
            self.changed_days.add(rollups.day_of(conv.started_at))  # it no longer starts on that day
        start = count - n
        for offset, row in enumerate(conv.new_messages):
            row["position"] = start + offset

    def write(self) -> int:
        user_pks = self._user_pks()
        self._insert_new_conversations(user_pks)
        rows: list[dict[str, Any]] = []
        for conv in sorted(self.conversations.values(), key=lambda c: c.id):
            if conv.pk is None:
                continue
            if conv.exists or conv.new_messages or conv.changed:
                self._update_conversation(conv, user_pks)
            if not conv.exists:
                self.changed_days.add(rollups.day_of(conv.first_at or self.now))
            for row in conv.new_messages:
                row["project_pk"] = self.project_pk
                row["conversation_pk"] = conv.pk
                row["ingested_at"] = self.now
                rows.append(row)
                self.changed_days.add(rollups.day_of(row["created_at"]))
        if rows:
            columns = {c.name for c in message.columns} - {"pk"}
            self.conn.execute(
                insert_ignore(self.conn, message, ["project_pk", "id"]),
                [{col: row.get(col) for col in columns} for row in rows],
            )
        self._apply_ratings()
        rollups.mark(self.conn, self.project_pk, self.changed_days, self.now)
        return len(rows)

    def _apply_ratings(self) -> None:
        for _, result, event in self.rating_updates:
            conv = self.conversations.get(event.conversation_id)
            if conv is None or conv.pk is None:
                result.status, result.detail = "not_found", "no such conversation"
                continue
            if event.message_id is not None:
                target = and_(
                    message.c.project_pk == self.project_pk,
                    message.c.id == event.message_id,
                    message.c.conversation_pk == conv.pk,
                )
            else:
                last_reply = self.conn.execute(
                    select(message.c.pk)
                    .where(message.c.conversation_pk == conv.pk, message.c.role == "assistant")
                    .order_by(message.c.position.desc())
                    .limit(1)
                ).scalar()
                if last_reply is None:
                    result.status, result.detail = "not_found", "conversation has no assistant message"
                    continue
                target = message.c.pk == last_reply
            changed = self.conn.execute(
                update(message).where(target).values(rating=event.rating).returning(message.c.id, message.c.created_at)
            ).first()
            if changed is None:
                result.status, result.detail = "not_found", "no such message in this conversation"
            else:
                result.id = changed.id
                self.changed_days.add(rollups.day_of(changed.created_at))


def apply_batch(conn: Connection, project_pk: int, batch: IngestBatch, now: datetime) -> BatchOutcome:
    """Store a validated batch inside the caller's transaction; returns one result per event."""
    writer = _BatchWriter(conn, project_pk, now)
    writer.prefetch(batch)
    results: list[ItemResult] = []
    for index, event in enumerate(batch.events):
        if isinstance(event, ConversationEvent):
            result = writer.on_conversation(event)
        elif isinstance(event, MessageEvent):
            result = writer.on_message(event)
        elif isinstance(event, CustomEvent):
            result = writer.on_custom_event(event)
        elif isinstance(event, RatingEvent):
            result = writer.on_rating(event)
        else:
            result = writer.on_feedback(event)
        result.index = index
        results.append(result)
    created = writer.write()
    if batch.client is not None and (batch.client.dropped or batch.client.retries):
        record_client_stats(conn, project_pk, batch.client, now)
    return BatchOutcome(results=results, created_messages=created)


def record_client_stats(conn: Connection, project_pk: int, stats: ClientStats, now: datetime) -> None:
    conn.execute(
        insert(client_report).values(
            project_pk=project_pk,
            received_at=now,
            sdk=(stats.sdk or "")[:64],
            dropped=stats.dropped,
            retries=stats.retries,
        )
    )
