"""Online evaluation: an offline evaluator applied to a sample of a project's production replies (of a
topic, or all) as they arrive, and its outcomes counted by day, model or topic. A rule walks the replies
behind a cursor (store/collect_rules.py ``replies_after``) that moves by compare-and-set in the
transaction that stores the outcomes, so each reply is judged once per rule."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, delete, func, insert, select, update

from convolens.store import dialect
from convolens.store.tables import message, message_topic, online_eval_result, online_eval_rule, topic

MAX_RULES_PER_PROJECT = 20
OUTCOMES = ("positive", "negative", "partially_passed", "inconclusive")


@dataclass(frozen=True)
class Rule:
    pk: int
    project_pk: int
    evaluator: dict[str, Any]
    topic_pk: int | None
    sample_rate: float
    cursor: int
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": str(self.pk),
            "evaluator": self.evaluator,
            "topic_id": None if self.topic_pk is None else str(self.topic_pk),
            "sample_rate": self.sample_rate,
        }


def create(
    conn: Connection, project_pk: int, evaluator: dict[str, Any], topic_pk: int | None, rate: float, now: datetime
) -> Rule:
    start = conn.execute(select(func.max(message.c.pk)).where(message.c.project_pk == project_pk)).scalar() or 0
    values = {"project_pk": project_pk, "evaluator": evaluator, "topic_pk": topic_pk, "sample_rate": rate,
              "cursor": start, "created_at": now}  # fmt: skip
    pk = conn.execute(insert(online_eval_rule).values(**values)).inserted_primary_key[0]
    return Rule(pk=pk, **values)


def count(conn: Connection, project_pk: int) -> int:
    return conn.execute(select(func.count()).where(online_eval_rule.c.project_pk == project_pk)).scalar_one()


def list_rules(conn: Connection, project_pk: int | None = None) -> list[Rule]:
    query = select(online_eval_rule).order_by(online_eval_rule.c.pk)
    if project_pk is not None:
        query = query.where(online_eval_rule.c.project_pk == project_pk)
    return [Rule(**r._mapping) for r in conn.execute(query)]


def get(conn: Connection, project_pk: int, pk: int) -> Rule | None:
    row = conn.execute(
        select(online_eval_rule).where(online_eval_rule.c.pk == pk, online_eval_rule.c.project_pk == project_pk)
    ).first()
    return Rule(**row._mapping) if row else None


def remove(conn: Connection, project_pk: int, pk: int) -> bool:
    done = conn.execute(
        delete(online_eval_rule).where(online_eval_rule.c.pk == pk, online_eval_rule.c.project_pk == project_pk)
    )
    return done.rowcount == 1


@dataclass(frozen=True)
class Outcome:
    message_pk: int
    conversation_pk: int
    created_at: datetime
    model: str | None
    outcome: str


def save(conn: Connection, rule: Rule, cursor: int, outcomes: list[Outcome]) -> bool:
    """The sweep's outcomes and the rule's new cursor, or nothing if another worker swept it meanwhile."""
    moved = conn.execute(
        update(online_eval_rule)
        .where(online_eval_rule.c.pk == rule.pk, online_eval_rule.c.cursor == rule.cursor)
        .values(cursor=cursor)
    )
    if moved.rowcount != 1:
        return False
    if outcomes:
        conn.execute(
            insert(online_eval_result),
            [{"rule_pk": rule.pk, "message_pk": o.message_pk, "conversation_pk": o.conversation_pk,
              "created_at": o.created_at, "model": (o.model or "")[:128] or None, "outcome": o.outcome}
             for o in outcomes],
        )  # fmt: skip
    return True


def scores(
    conn: Connection, rule: Rule, by: Literal["day", "model", "topic"], start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Outcome counts of the rule's judged replies in [start, end], by day, model or topic (a reply counts
    in each topic of its conversation)."""
    where = [online_eval_result.c.rule_pk == rule.pk, online_eval_result.c.created_at >= start,
             online_eval_result.c.created_at <= end]  # fmt: skip
    if by == "day":
        key = dialect.bucket(conn, online_eval_result.c.created_at, "day")
        source = online_eval_result
    elif by == "model":
        key = func.coalesce(online_eval_result.c.model, "")
        source = online_eval_result
    else:
        key = topic.c.name
        source = online_eval_result.join(
            message_topic, message_topic.c.conversation_pk == online_eval_result.c.conversation_pk
        ).join(topic, topic.c.pk == message_topic.c.topic_pk)
    counted = func.count(func.distinct(online_eval_result.c.pk)) if by == "topic" else func.count()
    rows = conn.execute(
        select(key.label("key"), online_eval_result.c.outcome, counted)
        .select_from(source)
        .where(*where)
        .group_by(key, online_eval_result.c.outcome)
    )
    table: dict[str, dict[str, int]] = {}
    for name, outcome, n in rows:
        table.setdefault(str(name), dict.fromkeys(OUTCOMES, 0))[outcome] = int(n)
    out = []
    for name in sorted(table):
        counts = table[name]
        judged = sum(counts.values())
        out.append({"key": name, **counts, "judged": judged,
                    "pass_rate": counts["positive"] / judged if judged else None})  # fmt: skip
    return out
