"""Online evaluation: an evaluator applied to a sample of a project's production replies (of a topic, or
all) as they arrive (LLM evaluators within a daily allowance per project), and its outcomes counted in a
rollup by day, topic and model. A rule walks the replies
behind a cursor (store/collect_rules.py ``replies_after``) that moves by compare-and-set in the
transaction that stores the outcomes, so each reply is judged once per rule."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, delete, func, insert, select, update

from convolens.store import daily_allowance, dialect
from convolens.store.tables import (
    message,
    message_topic,
    online_eval_result,
    online_eval_rollup,
    online_eval_rule,
    online_eval_usage,
    topic,
)

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
    outcome: str | None  # None: sampled but not judged, the project's daily LLM allowance was spent


def save(conn: Connection, rule: Rule, cursor: int, outcomes: list[Outcome]) -> bool:
    """The sweep's outcomes, their counts added to the rollup, and the rule's new cursor, or nothing if
    another worker swept it meanwhile (the cursor moves by compare-and-set, so each reply counts once)."""
    moved = conn.execute(
        update(online_eval_rule)
        .where(online_eval_rule.c.pk == rule.pk, online_eval_rule.c.cursor == rule.cursor)
        .values(cursor=cursor)
    )
    if moved.rowcount != 1:
        return False
    judged = [o for o in outcomes if o.outcome is not None]
    if judged:
        conn.execute(
            insert(online_eval_result),
            [{"rule_pk": rule.pk, "message_pk": o.message_pk, "conversation_pk": o.conversation_pk,
              "created_at": o.created_at, "model": _model(o.model) or None, "outcome": o.outcome}
             for o in judged],
        )  # fmt: skip
    _add_to_rollup(conn, rule.pk, outcomes)
    return True


def _model(model: str | None) -> str:
    return (model or "")[:128]


def _add_to_rollup(conn: Connection, rule_pk: int, outcomes: list[Outcome]) -> None:
    """Add each outcome once under topic 0 (every reply) and once under each topic of its conversation."""
    if not outcomes:
        return
    conversations = sorted({o.conversation_pk for o in outcomes})
    topics_of: dict[int, set[int]] = {}
    for conversation_pk, topic_pk in conn.execute(
        select(message_topic.c.conversation_pk, message_topic.c.topic_pk)
        .where(message_topic.c.conversation_pk.in_(conversations))
        .distinct()
    ):
        topics_of.setdefault(conversation_pk, set()).add(topic_pk)
    added: dict[tuple[str, int, str], list[int]] = {}  # key -> [evaluated, passed, inconclusive, over_budget]
    for o in outcomes:
        counts = (
            [0, 0, 0, 1]
            if o.outcome is None
            else [0, 0, 1, 0]
            if o.outcome == "inconclusive"
            else [1, int(o.outcome == "positive"), 0, 0]
        )
        for topic_pk in (0, *sorted(topics_of.get(o.conversation_pk, ()))):
            total = added.setdefault((o.created_at.date().isoformat(), topic_pk, _model(o.model)), [0, 0, 0, 0])
            for i, n in enumerate(counts):
                total[i] += n
    keys = ["rule_pk", "day", "topic_pk", "model"]
    conn.execute(
        dialect.insert_ignore(conn, online_eval_rollup, keys),
        [{"rule_pk": rule_pk, "day": d, "topic_pk": t, "model": m} for d, t, m in added],
    )
    r = online_eval_rollup.c
    for (day, topic_pk, model), (evaluated, passed, inconclusive, over) in added.items():
        conn.execute(
            update(online_eval_rollup)
            .where(r.rule_pk == rule_pk, r.day == day, r.topic_pk == topic_pk, r.model == model)
            .values(evaluated=r.evaluated + evaluated, passed=r.passed + passed,
                    inconclusive=r.inconclusive + inconclusive, over_budget=r.over_budget + over)
        )  # fmt: skip


def scores(
    conn: Connection, rule: Rule, by: Literal["day", "model", "topic"], start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """The rule's counts in the days of [start, end] from the rollup, by day, model or topic (a reply
    counts in each topic of its conversation, so the topics' rows may add up to more than the day's).
    ``pass_rate`` is passed / evaluated; inconclusive verdicts and replies over the LLM allowance are
    counted apart, not as failures."""
    r = online_eval_rollup.c
    where = [r.rule_pk == rule.pk, r.day >= start.date().isoformat(), r.day <= end.date().isoformat()]
    if by == "topic":
        key = topic.c.name
        source = online_eval_rollup.join(topic, topic.c.pk == r.topic_pk)
        where.append(r.topic_pk != 0)
    else:
        key = r.day if by == "day" else r.model
        source = online_eval_rollup
        where.append(r.topic_pk == 0)
    rows = conn.execute(
        select(key.label("key"), func.sum(r.evaluated), func.sum(r.passed), func.sum(r.inconclusive),
               func.sum(r.over_budget))
        .select_from(source)
        .where(*where)
        .group_by(key)
        .order_by(key)
    )  # fmt: skip
    out = []
    for name, evaluated, passed, inconclusive, over in rows:
        evaluated, passed = int(evaluated or 0), int(passed or 0)
        out.append({"key": str(name), "evaluated": evaluated, "passed": passed, "failed": evaluated - passed,
                    "inconclusive": int(inconclusive or 0), "over_budget": int(over or 0),
                    "pass_rate": passed / evaluated if evaluated else None})  # fmt: skip
    return out


def daily_by_model(conn: Connection, rule: Rule, first: str, last: str) -> list[tuple[str, str, int, int]]:
    """(day, model, evaluated, passed) of the rule's totals (topic 0) for the days ``first``..``last``."""
    r = online_eval_rollup.c
    rows = conn.execute(
        select(r.day, r.model, r.evaluated, r.passed)
        .where(r.rule_pk == rule.pk, r.topic_pk == 0, r.day >= first, r.day <= last)
        .order_by(r.day, r.model)
    )
    return [(day, model, int(evaluated), int(passed)) for day, model, evaluated, passed in rows]


# The daily allowance of replies the project's online LLM evaluators may judge (project setting
# ``online_evaluation.llm_daily_cap``; each judged reply is one provider request per LLM evaluator).

DEFAULT_LLM_DAILY_CAP = 200
MAX_LLM_DAILY_CAP = 100_000
SETTING = "online_evaluation"


def llm_daily_cap(settings: dict[str, Any]) -> int:
    """The project's cap from its settings object; anything malformed is the default."""
    own = settings.get(SETTING) if isinstance(settings.get(SETTING), dict) else {}
    cap = own.get("llm_daily_cap")
    valid = isinstance(cap, int) and not isinstance(cap, bool) and 0 <= cap <= MAX_LLM_DAILY_CAP
    return cap if valid else DEFAULT_LLM_DAILY_CAP


def reserve_llm(conn: Connection, project_pk: int, day: str, wanted: int, cap: int) -> int:
    """Take up to ``wanted`` replies of the day's allowance (in a write transaction; see daily_allowance)."""
    return daily_allowance.reserve(conn, online_eval_usage, online_eval_usage.c.replies, project_pk, day, wanted, cap)


def llm_used(conn: Connection, project_pk: int, day: str) -> int:
    return daily_allowance.used(conn, online_eval_usage, online_eval_usage.c.replies, project_pk, day)
