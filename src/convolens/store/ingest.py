"""Writing an ``IngestBatch`` in one transaction: idempotent on ids, set-at-a-time where it can be.

The steps, in order: look up every conversation and message id the batch names (one query each;
skipped for a batch whose ids were all just made, ``ids_are_new``); walk the events to build the rows to
write; insert new end users and conversations (``ON CONFLICT``, so concurrent API processes never
collide), reserving message positions per conversation in the same statement; insert all new messages
with one executemany (on PostgreSQL, a batch of new ids with COPY); apply ratings and feedback.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from convolens.schemas.ingest import (
    ClientStats,
    ConversationEvent,
    CustomEvent,
    FeedbackEvent,
    IngestBatch,
    MessageEvent,
    RatingEvent,
    stored_extra,
)
from convolens.store import rollups
from convolens.store.driver import Statements
from convolens.store.tables import client_report, message
from convolens.timeutil import to_naive_utc, utcnow

_MESSAGE_COLUMNS = (
    "project_pk, conversation_pk, id, position, role, kind, name, content, created_at, ingested_at, metadata,"
    " extra, rating, model, input_tokens, output_tokens, latency_ms, error"
)
_INSERT_MESSAGE = (
    f"INSERT INTO message ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (project_pk, id) DO NOTHING"
)


# PostgreSQL types of _MESSAGE_COLUMNS for binary COPY (JSON goes as its text).
_MESSAGE_TYPES = (
    "int8", "int8", "text", "int4", "text", "text", "text", "text", "timestamp", "timestamp", "text", "text",
    "int2", "text", "int4", "int4", "float8", "text",
)  # fmt: skip

_USERS_POSTGRESQL = (
    "WITH new (external_id, first_seen, last_seen) AS"
    " (SELECT * FROM unnest(%s::text[], %s::timestamp[], %s::timestamp[])),"
    " inserted AS (INSERT INTO end_user (project_pk, external_id, first_seen, last_seen)"
    " SELECT %s, external_id, first_seen, last_seen FROM new"
    " ON CONFLICT (project_pk, external_id) DO NOTHING"
    " RETURNING external_id, pk, first_seen, last_seen),"
    " locked AS (SELECT external_id, pk, first_seen, last_seen FROM end_user"
    " WHERE project_pk = %s AND external_id = ANY(%s::text[]) FOR KEY SHARE)"
    " SELECT * FROM inserted UNION ALL SELECT * FROM locked"
)


class UserVanished(Exception):
    """A user of a new conversation was deleted while the batch was being written (an erasure)."""


# On PostgreSQL a user's last_seen is advanced only when it moves by more than this
# (``_user_pks_postgresql``): a user active every second is then row-locked once a minute, not by every batch.
LAST_SEEN_SLACK = timedelta(minutes=1)


def new_id() -> str:
    """32 hex digits, the time in milliseconds first (as UUIDv7): ids made one after another land
    side by side in the ``(project_pk, id)`` indexes, so a commit writes a few index pages rather than
    one page per row, as random ids did. 80 random bits follow, so ids stay unguessable and unique."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


@dataclass(slots=True)
class ItemResult:
    """What became of one event (``schemas.ingest.ItemResult`` is its wire shape). A plain class: a
    pydantic model per event cost a few percent of a batch."""

    index: int
    status: str
    id: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.id is not None:
            out["id"] = self.id
        if self.detail is not None:
            out["detail"] = self.detail
        return out


@dataclass(slots=True)
class _NewMessage:
    """A message the batch adds: its event, and what the store decides for it."""

    id: str
    role: str
    created_at: datetime
    rating: int | None
    event: MessageEvent | CustomEvent
    position: int = 0


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
    new_messages: list[_NewMessage] = field(default_factory=list)

    def see(self, at: datetime) -> None:
        self.first_at = at if self.first_at is None or at < self.first_at else self.first_at
        self.last_at = at if self.last_at is None or at > self.last_at else self.last_at


@dataclass
class BatchOutcome:
    results: list[ItemResult]
    created_messages: int


class _BatchWriter:
    def __init__(self, conn: Connection, project_pk: int, now: datetime, *, ids_are_new: bool = False) -> None:
        self.conn = conn
        self.ids_are_new = ids_are_new
        self.sql = Statements(conn)
        self.project_pk = project_pk
        self.now = now
        self.conversations: dict[str, _Conversation] = {}
        self.known_message_ids: set[str] = set()
        self.pending_messages: dict[str, _NewMessage] = {}
        self.rating_updates: list[tuple[int, ItemResult, RatingEvent]] = []
        # PostgreSQL: the batch's users' (first, last) seen times by key, advanced last (_touch_users).
        self.user_times: dict[int, tuple[datetime, datetime]] = {}
        # The days whose rollups this batch changes (store/rollups.py).
        self.changed_days: set[str] = set()

    # -- look-ups -------------------------------------------------------------------------------
    def prefetch(self, batch: IngestBatch) -> None:
        sql = self.sql
        conversation_ids = {e.conversation_id if not isinstance(e, ConversationEvent) else e.id for e in batch.events}
        rows = sql.select_by_ids(
            "id, pk, metadata, started_at, tenant_id, end_user_pk", "conversation", self.project_pk, conversation_ids
        )
        for conversation_id, pk, metadata, started_at, tenant_id, end_user_pk in rows:
            self.conversations[conversation_id] = _Conversation(
                id=conversation_id,
                pk=pk,
                exists=True,
                metadata=sql.read_json(metadata),
                started_at=sql.read_timestamp(started_at),
                stored_tenant_id=tenant_id,
                stored_user_pk=end_user_pk,
            )
        ids = {e.id for e in batch.events if isinstance(e, MessageEvent | CustomEvent) and e.id}
        ids.update(e.message_id for e in batch.events if isinstance(e, RatingEvent) and e.message_id)
        rows = sql.select_by_ids("id", "message", self.project_pk, ids)
        self.known_message_ids.update(row[0] for row in rows)

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

    def _add_message(self, conv: _Conversation, new: _NewMessage) -> ItemResult:
        if new.id in self.known_message_ids or new.id in self.pending_messages:
            return ItemResult(0, "duplicate", new.id)
        conv.see(new.created_at)
        conv.new_messages.append(new)
        self.pending_messages[new.id] = new
        return ItemResult(0, "created", new.id)

    def _attach_user(self, conv: _Conversation, user_id: str | None, tenant_id: str | None = None) -> None:
        if user_id is not None and conv.user_id is None:
            conv.user_id = user_id
            conv.changed.add("user_id")
        if tenant_id is not None and conv.tenant_id is None:
            conv.tenant_id = tenant_id
            conv.changed.add("tenant_id")

    def _at(self, timestamp: datetime | None) -> datetime:
        return to_naive_utc(timestamp) if timestamp else self.now

    def on_message(self, event: MessageEvent) -> ItemResult:
        conv = self._conversation(event.conversation_id)
        if event.user_id is not None or event.tenant_id is not None:
            self._attach_user(conv, event.user_id, event.tenant_id)
        new = _NewMessage(event.id or new_id(), event.role, self._at(event.timestamp), event.rating, event)
        return self._add_message(conv, new)

    def on_custom_event(self, event: CustomEvent) -> ItemResult:
        conv = self._conversation(event.conversation_id)
        self._attach_user(conv, event.user_id)
        new = _NewMessage(event.id or new_id(), "system", self._at(event.timestamp), None, event)
        return self._add_message(conv, new)

    def on_feedback(self, event: FeedbackEvent) -> ItemResult:
        conv = self.conversations.get(event.conversation_id)
        if conv is None or not (conv.exists or conv.changed or conv.new_messages):
            return ItemResult(index=0, status="not_found", id=event.conversation_id, detail="no such conversation")
        conv.feedback = event.feedback
        conv.changed.add("feedback")
        return ItemResult(index=0, status="updated", id=event.conversation_id)

    def on_rating(self, event: RatingEvent) -> ItemResult:
        if event.message_id is not None and event.message_id in self.pending_messages:
            self.pending_messages[event.message_id].rating = event.rating
            return ItemResult(index=0, status="updated", id=event.message_id)
        if event.message_id is None:
            conv = self.conversations.get(event.conversation_id)
            replies = [m for m in (conv.new_messages if conv else []) if m.role == "assistant"]
            if replies:
                replies[-1].rating = event.rating
                return ItemResult(index=0, status="updated", id=replies[-1].id)
        result = ItemResult(index=0, status="updated", id=event.message_id)
        self.rating_updates.append((len(self.rating_updates), result, event))
        return result

    # -- writes ---------------------------------------------------------------------------------
    def _user_pks(self) -> dict[str, int]:
        rows = self._user_rows()
        if not rows:
            return {}
        sql = self.sql
        if sql.postgresql:
            return self._user_pks_postgresql(rows)
        # One writer at a time on SQLite: one upsert, which also re-adds a user that retention removed.
        returned = sql.insert_returning(
            "INSERT INTO end_user (project_pk, external_id, first_seen, last_seen)",
            rows,
            "ON CONFLICT (project_pk, external_id) DO UPDATE SET"
            f" first_seen = {sql.least}(end_user.first_seen, excluded.first_seen),"
            f" last_seen = {sql.greatest}(end_user.last_seen, excluded.last_seen)"
            " RETURNING external_id, pk",
        )
        return dict(returned)  # type: ignore[arg-type]

    def _user_rows(self) -> list[tuple]:
        """(project_pk, external id, first seen, last seen) of each user the batch names, by id."""
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
        sql = self.sql
        return [
            (self.project_pk, uid, sql.timestamp(first), sql.timestamp(last))
            for uid, (first, last) in sorted(seen.items())
        ]

    def _users_statement_postgresql(self, rows: list[tuple]) -> tuple[str, tuple, bool]:
        """One statement, one round trip: the missing users inserted, the others share-locked; rows of
        (external id, pk, first seen, last seen). A user another transaction inserted since this
        statement's snapshot is in neither half."""
        external_ids = [r[1] for r in rows]
        params = (
            external_ids,
            [r[2] for r in rows],
            [r[3] for r in rows],
            self.project_pk,
            self.project_pk,
            external_ids,
        )
        return _USERS_POSTGRESQL, params, True

    def _user_pks_postgresql(self, rows: list[tuple], found: list[tuple] | None = None) -> dict[str, int]:
        """The users' keys, without yet locking their rows for update.

        Users are Zipf-distributed: the busiest is in nearly every batch, and an upsert here held her
        row's lock until commit, so concurrent batches ran one at a time (two of three sessions waiting
        on it in bench/ingest.py). Here the rows are only inserted if missing and share-locked (``FOR
        KEY SHARE``: retention cannot delete them under us, other batches can still update them); their
        first and last seen times are advanced at the end of the transaction (``_touch_users``), and
        only where this batch moves them (last_seen by more than ``LAST_SEEN_SLACK``), so a hot user's
        lock is taken rarely and held for the commit alone.

        ``found``: the first round's rows, where the caller ran its statement already (with others, in
        one round trip: ``_write_new_postgresql``)."""
        pks: dict[str, int] = {}
        stored: dict[int, tuple[datetime, datetime]] = {}
        missing = rows
        for _ in range(3):
            if found is None:
                statement, params, plan_each_time = self._users_statement_postgresql(missing)
                found = self.sql.execute(statement, params, plan_each_time=plan_each_time)
            for external_id, pk, first_seen, last_seen in found:
                pks[external_id] = pk
                stored[pk] = (first_seen, last_seen)
            found = None
            missing = [r for r in missing if r[1] not in pks]
            if not missing:
                break
        # Only the users whose seen times this batch moves: by any earlier first, or a last later by more
        # than LAST_SEEN_SLACK. Busy users would otherwise be row-locked by every batch (bench/README.md).
        self.user_times = {
            pks[uid]: (first, last)
            for _, uid, first, last in rows
            if uid in pks and (first < stored[pks[uid]][0] or last > stored[pks[uid]][1] + LAST_SEEN_SLACK)
        }
        return pks

    def _touch_users(self) -> None:
        """First and last seen times of the batch's users, last in the transaction, in key order."""
        times = self.user_times
        if not times:
            return
        ordered = sorted(times)
        self.sql.execute(
            "SELECT pk FROM end_user WHERE pk = ANY(%s) ORDER BY pk FOR NO KEY UPDATE", (ordered,), plan_each_time=True
        )
        self.sql.execute(
            "UPDATE end_user SET first_seen = least(end_user.first_seen, v.first_seen),"
            " last_seen = greatest(end_user.last_seen, v.last_seen)"
            " FROM unnest(%s::bigint[], %s::timestamp[], %s::timestamp[]) AS v(pk, first_seen, last_seen)"
            " WHERE end_user.pk = v.pk",
            (ordered, [times[pk][0] for pk in ordered], [times[pk][1] for pk in ordered]),
            plan_each_time=True,
        )

    def _upsert_conversations(self, user_pks: dict[str, int]) -> None:
        """Insert the batch's new conversations and update the stored ones in one statement per kind,
        reserving message positions: ``message_count`` is advanced by the batch's new messages and the
        returned count tells where they start, however many transactions append at once."""
        sql = self.sql
        touched = sorted(
            (c for c in self.conversations.values() if c.changed or c.new_messages),
            key=lambda c: c.id,
        )
        timed = [c for c in touched if c.first_at is not None]
        untimed = [c for c in touched if c.first_at is None]
        # Absent values (NULL) keep what is stored; the insert takes them as they are.
        keep = (
            "tenant_id = COALESCE(excluded.tenant_id, conversation.tenant_id),"
            " end_user_pk = COALESCE(excluded.end_user_pk, conversation.end_user_pk),"
            " metadata = COALESCE(excluded.metadata, conversation.metadata),"
            " feedback = COALESCE(excluded.feedback, conversation.feedback),"
            " message_count = conversation.message_count + excluded.message_count"
        )
        times = (
            f", started_at = {sql.least}(conversation.started_at, excluded.started_at),"
            f" last_message_at = {sql.greatest}(conversation.last_message_at, excluded.last_message_at)"
        )
        head = (
            "INSERT INTO conversation (project_pk, id, tenant_id, end_user_pk, metadata, feedback, started_at,"
            " last_message_at, message_count, created_at)"
        )
        now = sql.timestamp(self.now)
        for group, set_times in ((timed, times), (untimed, "")):
            rows = [
                (
                    self.project_pk,
                    c.id,
                    c.tenant_id if "tenant_id" in c.changed else None,
                    user_pks[c.user_id] if "user_id" in c.changed and c.user_id else None,
                    sql.json(c.metadata) if "metadata" in c.changed else None,
                    c.feedback if "feedback" in c.changed else None,
                    sql.timestamp(c.first_at) if c.first_at else now,
                    sql.timestamp(c.last_at) if c.last_at else now,
                    len(c.new_messages),
                    now,
                )
                for c in group
            ]
            returned = sql.insert_returning(
                head,
                rows,
                f"ON CONFLICT (project_pk, id) DO UPDATE SET {keep}{set_times}"
                " RETURNING id, pk, message_count, started_at, last_message_at",
            )
            for conversation_id, pk, count, started_at, last_at in returned:
                self._after_upsert(self.conversations[conversation_id], pk, count, started_at, last_at, user_pks)

    def _after_upsert(
        self, conv: _Conversation, pk: int, count: int, started_at: Any, last_at: Any, user_pks: dict[str, int]
    ) -> None:
        conv.pk = pk
        if not conv.exists:
            self.changed_days.add(rollups.day_of(conv.first_at or self.now))
        else:
            moved = ("tenant_id" in conv.changed and conv.tenant_id != conv.stored_tenant_id) or (
                "user_id" in conv.changed and conv.user_id is not None and user_pks[conv.user_id] != conv.stored_user_pk
            )
            if moved:
                first, last = self.sql.read_timestamp(started_at), self.sql.read_timestamp(last_at)
                assert first is not None and last is not None
                self.changed_days.update(rollups.days_between(first, last))  # its past days move group
            elif conv.started_at is not None and conv.first_at is not None and conv.first_at < conv.started_at:
                self.changed_days.add(rollups.day_of(conv.started_at))  # it no longer starts on that day
        start = count - len(conv.new_messages)
        for offset, new in enumerate(conv.new_messages):
            new.position = start + offset

    def write(self) -> int:
        if self.ids_are_new and self.sql.postgresql:
            self._apply_ratings()  # all "not_found": nothing stored can be rated, no statement runs
            created = self._write_new_postgresql()  # marks the rollup days in its own round trip
            self._touch_users()
            return created
        user_pks = self._user_pks()
        self._upsert_conversations(user_pks)
        rows = self._message_rows(lambda conv: conv.pk)
        self.sql.executemany(_INSERT_MESSAGE.replace("?", self.sql.mark), rows)
        self._apply_ratings()
        self._touch_users()
        rollups.mark(self.conn, self.project_pk, self.changed_days, self.now)
        return len(rows)

    def _write_new_postgresql(self) -> int:
        """PostgreSQL, every id new (Context's logs, several combined by the group commit): two round
        trips before the commit, where the general path takes six. First one pipeline: the users
        inserted-if-missing and share-locked (``_user_pks_postgresql``), the conversations inserted
        with their users' keys looked up in the same statement, the rollup days marked; then the
        messages by binary COPY, with the conversations' keys that came back."""
        sql = self.sql
        now = self.now
        conversations = [c for c in self.conversations.values() if c.changed or c.new_messages]
        if not conversations:
            return 0
        for conv in conversations:
            self.changed_days.add(rollups.day_of(conv.first_at or now))
            for position, new in enumerate(conv.new_messages):
                new.position = position
        messages = self._message_rows(lambda conv: conv)  # the keys are filled in below
        users = self._user_rows()
        statements = [self._users_statement_postgresql(users)] if users else []
        conversation_sql = (
            "INSERT INTO conversation (project_pk, id, tenant_id, end_user_pk, metadata, feedback, started_at,"
            " last_message_at, message_count, created_at) VALUES "
            + ", ".join(
                ["(%s, %s, %s, (SELECT pk FROM end_user WHERE project_pk = %s AND external_id = %s),"
                 " %s, %s, %s, %s, %s, %s)"] * len(conversations)
            )
            + " RETURNING id, pk, end_user_pk"
        )  # fmt: skip
        conversation_params = [
            value
            for c in conversations
            for value in (
                self.project_pk,
                c.id,
                c.tenant_id if "tenant_id" in c.changed else None,
                self.project_pk,
                c.user_id if "user_id" in c.changed else None,
                sql.json(c.metadata) if "metadata" in c.changed else None,
                c.feedback if "feedback" in c.changed else None,
                c.first_at or now,
                c.last_at or now,
                len(c.new_messages),
                now,
            )
        ]
        statements.append((conversation_sql, conversation_params, False))
        statements.append(rollups.mark_statement(sql, self.project_pk, self.changed_days, now))
        results = sql.execute_together(statements)
        if users:
            self._user_pks_postgresql(users, found=results[0])  # for _touch_users; rarely a round trip
        for conversation_id, pk, end_user_pk in results[-2]:
            conv = self.conversations[conversation_id]
            conv.pk = pk
            if end_user_pk is None and "user_id" in conv.changed and conv.user_id is not None:
                # Erased between the two statements: the group is written again, one batch at a time,
                # and this batch's users statement then inserts the user anew.
                raise UserVanished(conv.user_id)
        sql.copy_in("message", _MESSAGE_COLUMNS, _MESSAGE_TYPES, ((row[0], row[1].pk, *row[2:]) for row in messages))
        return len(messages)

    def _message_rows(self, conversation_key: Callable[[_Conversation], Any]) -> list[tuple]:
        """The new messages as rows in ``_MESSAGE_COLUMNS`` order, ``conversation_key(conversation)``
        second; adds the days they fall on to ``changed_days``."""
        sql = self.sql
        now, today = sql.timestamp(self.now), rollups.day_of(self.now)
        rows: list[tuple] = []
        days = self.changed_days
        days_seen: dict[datetime, str] = {}
        for conv in self.conversations.values():
            key = conversation_key(conv)
            for new in conv.new_messages:
                at = new.created_at
                if at is self.now:  # most messages carry no timestamp of their own
                    created_at = now
                    days.add(today)
                else:
                    created_at = sql.timestamp(at)
                    if at not in days_seen:
                        days_seen[at] = rollups.day_of(at)
                        days.add(days_seen[at])
                e = new.event
                if isinstance(e, MessageEvent):
                    rows.append(
                        (
                            self.project_pk, key, new.id, new.position, e.role, e.kind, e.name, e.content,
                            created_at, now, sql.json(e.metadata), sql.json(stored_extra(e)), new.rating, e.model,
                            e.input_tokens, e.output_tokens, e.latency_ms, e.error,
                        )
                    )  # fmt: skip
                else:
                    rows.append(
                        (
                            self.project_pk, key, new.id, new.position, "system", "event", e.name, e.name,
                            created_at, now, sql.json(e.properties), None, None, None, None, None, None, None,
                        )
                    )  # fmt: skip
        return rows

    def _apply_ratings(self) -> None:
        for _, result, event in self.rating_updates:
            if self.ids_are_new:  # its conversation and messages are all new: nothing stored to rate
                result.status, result.detail = "not_found", "no such message in this conversation"
                continue
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


def apply_batch(
    conn: Connection, project_pk: int, batch: IngestBatch, now: datetime, *, ids_are_new: bool = False
) -> BatchOutcome:
    """Store a validated batch inside the caller's transaction; returns one result per event.

    ``ids_are_new``: every conversation and message id in the batch was just made by ``new_id()``, so
    none can be stored yet and the look-up of stored ids is skipped (two queries, run under SQLite's
    write lock). A wrong claim still cannot duplicate rows: on SQLite the inserts ignore a stored id; on
    PostgreSQL the messages go in with COPY (``Statements.copy_in``), which fails on one instead."""
    writer = _BatchWriter(conn, project_pk, now, ids_are_new=ids_are_new)
    if not ids_are_new:
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


@dataclass(frozen=True, slots=True)
class NewIdsBatch:
    """Work for ``Database.write``: a batch all of whose conversation and message ids were just made by
    ``new_id()`` (Context's one-conversation log). Such batches cannot touch each other's rows, so when
    several of one project are committed in one group they are written as one batch (``Combinable``):
    one statement per table for the group instead of one set per request, under SQLite's write lock."""

    project_pk: int
    batch: IngestBatch

    @property
    def combine_key(self) -> tuple[str, int]:
        return ("new-ids", self.project_pk)

    def __call__(self, conn: Connection) -> BatchOutcome:
        return apply_batch(conn, self.project_pk, self.batch, utcnow(), ids_are_new=True)

    def run_together(self, conn: Connection, works: list[NewIdsBatch]) -> list[BatchOutcome]:
        events = [event for work in works for event in work.batch.events]
        merged = apply_batch(
            conn, self.project_pk, IngestBatch.model_construct(events=events, client=None), utcnow(), ids_are_new=True
        )
        outcomes, start = [], 0
        for work in works:
            results = merged.results[start : start + len(work.batch.events)]
            for result in results:
                result.index -= start
            created = sum(
                1
                for event, result in zip(work.batch.events, results, strict=True)
                if result.status == "created" and isinstance(event, MessageEvent | CustomEvent)
            )
            outcomes.append(BatchOutcome(results=results, created_messages=created))
            start += len(work.batch.events)
        return outcomes


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
