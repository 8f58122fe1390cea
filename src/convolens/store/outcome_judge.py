"""The LLM outcome judge's bookkeeping: which projects chose it (a project setting), which of their
conversations wait for a verdict, the lease a worker takes on a few of them while it asks, the verdicts
it saves, and each project's daily cap on conversations sent.

A conversation waits once its offline outcome is set (``outcome_by = 'rules'``, on every enrichment save)
and its last message is ``settle`` old (a thread still going would be judged again with each turn). A
worker takes a few (``'judging'``, stamped ``outcome_judged_at``; one whose worker died is taken again
after ``lease``) and saves a verdict only if the conversation is still as it read it: taken by it and no
message added since, so a thread that grew meanwhile keeps the offline outcome of its new turns and waits
again. A verdict marks the conversation's start day for the rollups, as any outcome change does. The
signals the judge lists replace the transcript's offline ones; the client's events (copy, share, ...) stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, func, or_, select, update

from convolens.store import daily_allowance, projects, rollups
from convolens.store.outcome_fields import FEEDBACK_EVENTS, OUTCOMES, to_mask
from convolens.store.tables import conversation, outcome_judge_usage

DEFAULT_DAILY_CAP = 500  # conversations a project sends to its provider per UTC day
MAX_DAILY_CAP = 1_000_000
REASON_CHARS = 500
EVENTS_MASK = to_mask(FEEDBACK_EVENTS)


@dataclass(frozen=True)
class JudgeSettings:
    enabled: bool = False
    daily_cap: int = DEFAULT_DAILY_CAP


def settings_from(settings: dict) -> JudgeSettings:
    """A project's judge settings from its settings object; anything malformed is the default (off)."""
    own = settings.get("outcome_judge") if isinstance(settings.get("outcome_judge"), dict) else {}
    return JudgeSettings(
        enabled=own.get("enabled") is True,
        daily_cap=daily_allowance.cap_from(own.get("daily_cap"), MAX_DAILY_CAP, DEFAULT_DAILY_CAP),
    )


def enabled_projects(conn: Connection) -> dict[int, JudgeSettings]:
    """The projects that turned the LLM outcome judge on, with their settings."""
    return projects.turned_on(conn, settings_from)


@dataclass(frozen=True)
class Taken:
    pk: int
    message_count: int


def take(
    conn: Connection, project_pk: int, now: datetime, *, limit: int, settle: timedelta, lease: timedelta
) -> list[Taken]:
    """Lease up to ``limit`` of the project's conversations waiting for a verdict, newest first."""
    c = conversation.c
    waiting = or_(c.outcome_by == "rules", and_(c.outcome_by == "judging", c.outcome_judged_at < now - lease))
    candidates = conn.execute(
        select(c.pk, c.message_count)
        .where(c.project_pk == project_pk, waiting, c.outcome.is_not(None), c.last_message_at <= now - settle)
        .order_by(c.last_message_at.desc())
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite's single writer needs no lock hint
    ).all()
    taken = []
    for pk, count in candidates:
        done = conn.execute(
            update(conversation)
            .where(c.pk == pk, waiting, c.message_count == count)
            .values(outcome_by="judging", outcome_judged_at=now)
        ).rowcount
        if done:
            taken.append(Taken(pk, count))
    return taken


def save(
    conn: Connection, taken: list[Taken], verdicts: dict[int, tuple[str, str, tuple[str, ...] | None]], now: datetime
) -> int:
    """Store the verdicts (outcome, reason, signals or None to keep the offline ones) of the conversations
    still as they were taken; returns how many. A conversation the answer left out goes back to waiting."""
    c = conversation.c
    saved = []
    for t in taken:
        still = and_(c.pk == t.pk, c.outcome_by == "judging", c.message_count == t.message_count)
        verdict = verdicts.get(t.pk)
        if verdict is None or verdict[0] not in OUTCOMES:
            conn.execute(update(conversation).where(still).values(outcome_by="rules", outcome_judged_at=None))
            continue
        outcome, reason, signals = verdict
        values = {"outcome": outcome, "outcome_by": "llm", "outcome_reason": reason[:REASON_CHARS]}
        if signals is not None:  # the judge's signals, beside the client's events (disjoint bits: + is |)
            values["outcome_signals"] = func.coalesce(c.outcome_signals, 0).op("&")(EVENTS_MASK) + to_mask(signals)
        done = conn.execute(update(conversation).where(still).values(**values, outcome_judged_at=now)).rowcount
        if done:
            saved.append(t.pk)
    for pk, days in rollups.start_days(conn, saved).items():
        rollups.mark(conn, pk, days, now)
    return len(saved)


def reserve(conn: Connection, project_pk: int, day: str, wanted: int, cap: int) -> int:
    """Take up to ``wanted`` of the project's ``cap`` conversations for ``day``; returns how many it may
    send. In a write transaction: the row (PostgreSQL) or the database (SQLite) stays locked until it
    ends, so two workers never both take the last of a day's allowance. A failed request keeps its
    share spent: a provider that errors is not asked again and again."""
    return daily_allowance.reserve(
        conn, outcome_judge_usage, outcome_judge_usage.c.conversations, project_pk, day, wanted, cap
    )


def used_today(conn: Connection, project_pk: int, day: str) -> int:
    return daily_allowance.used(conn, outcome_judge_usage, outcome_judge_usage.c.conversations, project_pk, day)


def remaining(conn: Connection, project_pk: int, day: str, cap: int) -> int:
    """How many of the day's ``cap`` are left (a hint to take no more than that: ``reserve`` decides)."""
    return max(0, cap - used_today(conn, project_pk, day))


def release(conn: Connection, taken: list[Taken]) -> None:
    """Conversations taken but not sent (over the cap): back to waiting."""
    c = conversation.c
    for t in taken:
        conn.execute(
            update(conversation)
            .where(c.pk == t.pk, c.outcome_by == "judging")
            .values(outcome_by="rules", outcome_judged_at=None)
        )
