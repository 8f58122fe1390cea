"""Rules that collect test cases from production: the thumbs-down assistant replies of a project (of one
topic, or all), sampled, each added to a test set as a case (evaluations/from_conversation.py).

A rule walks the messages in key order behind a cursor, examining only messages older than a settle time
(a rating usually follows its reply within minutes). The cursor moves by compare-and-set in the same
transaction that stores the new test set version, so two workers never add the same reply twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, exists, func, insert, select, update

from convolens.store.tables import conversation, eval_collect_rule, message, message_topic

MAX_RULES_PER_PROJECT = 20
SCAN = 10_000  # messages a rule examines per sweep


@dataclass(frozen=True)
class Rule:
    pk: int
    project_pk: int
    test_set_name: str
    topic_pk: int | None
    sample_rate: float
    keep: str
    cursor: int
    collected: int
    created_at: datetime

    def as_json(self) -> dict:
        return {
            "id": str(self.pk),
            "test_set_name": self.test_set_name,
            "topic_id": None if self.topic_pk is None else str(self.topic_pk),
            "sample_rate": self.sample_rate,
            "keep": self.keep,
            "collected": self.collected,
        }


def create(
    conn: Connection, project_pk: int, test_set_name: str, topic_pk: int | None, rate: float, keep: str, now: datetime
) -> Rule:
    # Only what arrives from now on: a new rule starts at the project's newest message.
    start = conn.execute(select(func.max(message.c.pk)).where(message.c.project_pk == project_pk)).scalar() or 0
    values = {"project_pk": project_pk, "test_set_name": test_set_name, "topic_pk": topic_pk, "sample_rate": rate,
              "keep": keep, "cursor": start, "collected": 0, "created_at": now}  # fmt: skip
    pk = conn.execute(insert(eval_collect_rule).values(**values)).inserted_primary_key[0]
    return Rule(pk=pk, **{k: v for k, v in values.items()})


def count(conn: Connection, project_pk: int) -> int:
    return conn.execute(select(func.count()).where(eval_collect_rule.c.project_pk == project_pk)).scalar_one()


def list_rules(conn: Connection, project_pk: int | None = None) -> list[Rule]:
    query = select(eval_collect_rule).order_by(eval_collect_rule.c.pk)
    if project_pk is not None:
        query = query.where(eval_collect_rule.c.project_pk == project_pk)
    return [Rule(**r._mapping) for r in conn.execute(query)]


def remove(conn: Connection, project_pk: int, pk: int) -> bool:
    done = conn.execute(
        delete(eval_collect_rule).where(eval_collect_rule.c.pk == pk, eval_collect_rule.c.project_pk == project_pk)
    )
    return done.rowcount == 1


def sampled(message_id: str, rate: float) -> bool:
    """A deterministic sample: the same reply is in or out whichever worker looks, however often."""
    if rate >= 1:
        return True
    digest = int.from_bytes(hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).digest()[:8], "big")
    return digest / 2**64 < rate


@dataclass(frozen=True)
class Candidate:
    message_pk: int
    conversation_id: str
    position: int
    conversation_pk: int = 0


def candidates(conn: Connection, rule: Rule, before: datetime) -> tuple[list[Candidate], int]:
    """The thumbs-down assistant replies after the rule's cursor (created before ``before``), of its
    topic when it has one (a user message of the conversation on it), sampled; and the cursor to move to."""
    return replies_after(conn, rule.project_pk, rule.cursor, before, rule.topic_pk, rule.sample_rate, rating=-1)


def replies_after(
    conn: Connection,
    project_pk: int,
    cursor: int,
    before: datetime,
    topic_pk: int | None,
    rate: float,
    rating: int | None = None,
) -> tuple[list[Candidate], int]:
    """Assistant replies after ``cursor`` created before ``before`` (with ``rating`` if given; in a
    conversation on ``topic_pk`` if given), sampled at ``rate``; and the cursor to move to (the last
    message examined, at most ``SCAN`` of them)."""
    scanned = (
        select(message.c.pk)
        .where(message.c.project_pk == project_pk, message.c.pk > cursor, message.c.created_at < before)
        .order_by(message.c.pk)
        .limit(SCAN)
        .subquery()
    )
    last = conn.execute(select(func.max(scanned.c.pk))).scalar()
    if last is None:
        return [], cursor
    query = (
        select(
            message.c.pk,
            message.c.id,
            message.c.position,
            message.c.conversation_pk,
            conversation.c.id.label("conversation_id"),
        )
        .join(conversation, conversation.c.pk == message.c.conversation_pk)
        .where(
            message.c.project_pk == project_pk,
            message.c.pk > cursor,
            message.c.pk <= last,
            message.c.role == "assistant",
            message.c.kind != "event",
        )
        .order_by(message.c.pk)
    )
    if rating is not None:
        query = query.where(message.c.rating == rating)
    if topic_pk is not None:
        query = query.where(
            exists().where(
                message_topic.c.conversation_pk == message.c.conversation_pk, message_topic.c.topic_pk == topic_pk
            )
        )
    found = [
        Candidate(r.pk, r.conversation_id, r.position, r.conversation_pk)
        for r in conn.execute(query)
        if sampled(r.id, rate)
    ]
    return found, int(last)


def advance(conn: Connection, rule: Rule, cursor: int, added: int) -> bool:
    """Move the cursor on from where this sweep started; False if another worker already did."""
    moved = conn.execute(
        update(eval_collect_rule)
        .where(eval_collect_rule.c.pk == rule.pk, eval_collect_rule.c.cursor == rule.cursor)
        .values(cursor=cursor, collected=eval_collect_rule.c.collected + added)
    )
    return moved.rowcount == 1
