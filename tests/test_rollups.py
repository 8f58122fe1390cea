"""Rollups on both backends: the figures read from them equal the figures summarized from the base tables,
for every grouping, period and tenant filter; a change to a rolled-up day shows at once and is folded in
by the worker; a change that lands while a worker is computing a day is not lost."""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import delete, func, select

from conftest import Project, make_project
from convolens.enrich.prices import DEFAULT_PRICES
from convolens.schemas.ingest import IngestBatch
from convolens.store import erasure, metrics, rollups, topics
from convolens.store.db import Database
from convolens.store.ingest import apply_batch
from convolens.store.tables import end_user, message, rollup, rollup_dirty
from convolens.timeutil import utcnow
from convolens.worker.runner import Worker
from figures_support import same_figures

DAY0 = datetime(2026, 10, 5)
WINDOW = {"start": DAY0 + timedelta(hours=13), "end": DAY0 + timedelta(days=12, hours=3)}  # partial edge days
PRICES = DEFAULT_PRICES
GROUPINGS = ["none", "language", "model", "topic", "tenant", "metadata.plan"]
TEXTS = [
    "I need a refund for my invoice, this is terrible",
    "Thanks, that works perfectly!",
    "Wie kann ich mein Passwort ändern?",
    "환불은 어떻게 받나요?",
    "the code you gave me still crashes",
]


QUICK = {"settle": timedelta(0), "lease": timedelta(seconds=60), "rest": 0.0}


def write(db: Database, project_pk: int, events: list[dict], now: datetime | None = None) -> None:
    with db.writer() as conn:
        apply_batch(conn, project_pk, IngestBatch.model_validate({"events": events}), now or utcnow())


def seed(db: Database, project: Project, conversations: int = 40, seed_value: int = 7) -> None:
    rng = random.Random(seed_value)
    events: list[dict] = []
    for c in range(conversations):
        at = DAY0 + timedelta(days=rng.randint(0, 13), hours=rng.randint(0, 23), minutes=rng.randint(0, 59))
        cid = f"c{c}"
        events.append(
            {
                "type": "conversation",
                "id": cid,
                "user_id": f"u{rng.randint(0, 6)}",
                "tenant_id": rng.choice(["acme", "globex", None]),
                "metadata": {"plan": rng.choice(["pro", "free"])},
            }
        )
        for i in range(rng.randint(1, 6)):
            user = i % 2 == 0
            events.append(
                {
                    "type": "message",
                    "conversation_id": cid,
                    "id": f"{cid}-{i}",
                    "role": "user" if user else "assistant",
                    "content": rng.choice(TEXTS) if user else "Here is what you asked for.",
                    # some conversations run past midnight into the next day
                    "timestamp": (at + timedelta(minutes=50 * i)).isoformat() + "Z",
                    **(
                        {}
                        if user
                        else {
                            "model": rng.choice(["gpt-4o-mini", "my-own-model"]),
                            "input_tokens": rng.randint(10, 900),
                            "output_tokens": rng.randint(10, 900),
                            "rating": rng.choice([1, -1, 0, None]),
                        }
                    ),
                }
            )
    write(db, project.pk, events)


def refresh(db: Database, timeout: float = 60) -> None:
    """Drain until nothing is pending or marked. Once is not enough: the session server's embedded worker
    shares this database, and a batch it claimed (or a day it leased) before the drain looked is saved
    after it, with its marks (test_outcomes' long threads before this file kept it busy enough to fail)."""
    worker = Worker(db, rollup_settle=timedelta(0), rollup_rest=0.0)
    deadline = time.monotonic() + timeout
    while True:
        worker.drain()
        with db.reader() as conn:
            pending = conn.execute(
                select(func.count()).select_from(message).where(message.c.enriched_version.is_(None))
            ).scalar_one()
            marked = conn.execute(select(func.count()).select_from(rollup_dirty)).scalar_one()
        if not pending and not marked:
            return
        assert time.monotonic() < deadline, f"{pending} messages pending, {marked} days marked"
        time.sleep(0.1)


def both_ways(db: Database, project: Project, grouping: str, period: str, tenant_id: str | None = None) -> tuple:
    with db.reader() as conn:
        return tuple(
            metrics.metrics(
                conn,
                project.pk,
                **WINDOW,
                period=period,
                grouping=metrics.Grouping.parse(grouping),
                prices=PRICES,
                tenant_id=tenant_id,
                use_rollups=use,
            )
            for use in (True, False)
        )


def marks(db: Database, project: Project) -> int:
    with db.reader() as conn:
        return conn.execute(
            select(func.count()).select_from(rollup_dirty).where(rollup_dirty.c.project_pk == project.pk)
        ).scalar_one()


def mark_keys(db: Database, project: Project) -> set[int]:
    with db.reader() as conn:
        return set(conn.execute(select(rollup_dirty.c.pk).where(rollup_dirty.c.project_pk == project.pk)).scalars())


@pytest.fixture
def rolled(db: Database) -> Project:
    project = make_project(db, "rollups")
    with db.writer() as conn:
        topics.create(
            conn, project.pk, name="Refunds", kind="keyword", definition={"keywords": ["refund", "환불"]}, now=utcnow()
        )
    seed(db, project)
    refresh(db)
    assert marks(db, project) == 0
    return project


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_rollups_equal_the_base_tables(db: Database, rolled: Project, grouping: str) -> None:
    for period in ("day", "week", "month"):
        for tenant_id in (None, "acme"):
            from_rollups, from_messages = both_ways(db, rolled, grouping, period, tenant_id)
            # Averages to their fourth decimal place (figures_support: float summation order).
            assert same_figures(from_rollups, from_messages, 0.0001), (period, tenant_id, from_rollups, from_messages)
            assert from_rollups  # not two empty answers
    totals = both_ways(db, rolled, "none", "month")[0]["all"]
    assert sum(b["messages"] for b in totals.values()) > 40


def test_reads_use_the_rollups(db: Database, rolled: Project) -> None:
    """Deleting a message behind the store's back (no mark) changes the live answer, not the rolled-up one:
    whole clean days are read from the rollups."""
    before, _ = both_ways(db, rolled, "none", "week")
    with db.writer() as conn:
        victim = conn.execute(
            select(message.c.pk)
            .where(
                message.c.project_pk == rolled.pk,
                message.c.created_at >= DAY0 + timedelta(days=3),
                message.c.created_at < DAY0 + timedelta(days=10),
            )
            .limit(1)
        ).scalar_one()
        conn.execute(delete(message).where(message.c.pk == victim))
    from_rollups, from_messages = both_ways(db, rolled, "none", "week")
    assert from_rollups == before
    count = lambda data: sum(b["messages"] for b in data["all"].values())  # noqa: E731
    assert count(from_messages) == count(before) - 1


def test_a_change_to_a_rolled_up_day_shows_at_once(db: Database, rolled: Project) -> None:
    old_day = DAY0 + timedelta(days=6, hours=12)
    write(
        db,
        rolled.pk,
        [
            {"type": "conversation", "id": "late", "user_id": "newcomer", "tenant_id": "acme"},
            {"type": "message", "conversation_id": "late", "id": "late-0", "role": "user",
             "content": "a refund please", "timestamp": old_day.isoformat() + "Z"},
            {"type": "message", "conversation_id": "late", "id": "late-1", "role": "assistant",
             "content": "done", "timestamp": old_day.isoformat() + "Z", "model": "gpt-4o-mini", "rating": 1},
        ],
    )  # fmt: skip
    assert marks(db, rolled) > 0
    label = old_day.date().isoformat()
    fresh, live = both_ways(db, rolled, "tenant", "day")
    assert same_figures(fresh, live, 0.0001), (fresh, live)  # averages to their last digit: figures_support
    assert fresh["acme"][label]["ratings_up"] >= 1
    refresh(db)  # enriches the new message too: its sentiment joins the figures
    assert marks(db, rolled) == 0
    fresh, live = both_ways(db, rolled, "tenant", "day")
    assert same_figures(fresh, live, 0.0001) and fresh["acme"][label]["ratings_up"] >= 1, (fresh, live)
    # A rating on a stored message of that day moves it again.
    write(db, rolled.pk, [{"type": "rating", "conversation_id": "late", "message_id": "late-1", "rating": -1}])
    changed, live = both_ways(db, rolled, "tenant", "day")
    assert same_figures(changed, live, 0.0001), (changed, live)
    assert changed["acme"][label]["ratings_down"] == fresh["acme"][label]["ratings_down"] + 1


def test_erased_users_leave_the_rollups(db: Database, rolled: Project) -> None:
    with db.reader() as conn:
        user_pk = conn.execute(
            select(end_user.c.pk).where(end_user.c.project_pk == rolled.pk, end_user.c.external_id == "u3")
        ).scalar_one()
    with db.writer() as conn:
        assert erasure.erase_end_user(conn, rolled.pk, "u3") is not None
    right_away, live = both_ways(db, rolled, "none", "month")
    assert right_away == live
    refresh(db)
    assert both_ways(db, rolled, "none", "month")[0] == live
    with db.reader() as conn:
        sets = conn.execute(select(rollup.c.user_set).where(rollup.c.project_pk == rolled.pk)).scalars().all()
    assert sets and all(user_pk not in rollups.unpack(s) for s in sets)


def test_a_write_during_a_refresh_is_not_lost(db: Database) -> None:
    project = make_project(db, "race")
    day = DAY0 + timedelta(days=2, hours=9)
    write(db, project.pk, [{"type": "message", "conversation_id": "a", "id": "a0", "role": "user",
                            "content": "hello", "timestamp": day.isoformat() + "Z"}])  # fmt: skip
    worker, other = (Worker(db, rollup_settle=timedelta(0), rollup_rest=0.0) for _ in range(2))
    worker.drain()
    write(db, project.pk, [{"type": "message", "conversation_id": "a", "id": "a1", "role": "user",
                            "content": "again", "timestamp": day.isoformat() + "Z"}])  # fmt: skip
    with db.writer() as conn:
        (due,) = rollups.claim(conn, worker.owner, utcnow(), **QUICK, project_pk=project.pk)
    with db.writer() as conn:  # a second worker cannot take a day that is leased
        assert rollups.claim(conn, other.owner, utcnow(), **QUICK, project_pk=project.pk) == []
    with db.snapshot() as conn:
        result = rollups.compute(conn, due)
    before = mark_keys(db, project)
    # This message commits after the snapshot the day was computed from.
    write(db, project.pk, [{"type": "message", "conversation_id": "a", "id": "a2", "role": "user",
                            "content": "and again", "timestamp": day.isoformat() + "Z"}])  # fmt: skip
    late = mark_keys(db, project) - before
    with db.writer() as conn:
        assert rollups.store(conn, worker.owner, result, utcnow(), 0.01)
    # The late write's mark survived: the day is read live, and redone. (Compared by key: the session's
    # server has a worker of its own, whose enrichment of these messages may mark the day too.)
    assert late and late <= mark_keys(db, project)
    with db.reader() as conn:
        data = metrics.metrics(
            conn,
            project.pk,
            start=DAY0,
            end=DAY0 + timedelta(days=5),
            period="day",
            grouping=metrics.Grouping.parse("none"),
            prices=PRICES,
        )
    assert data["all"][day.date().isoformat()]["messages"] == 3
    worker.drain()
    assert marks(db, project) == 0
    with db.reader() as conn:
        (messages,) = conn.execute(
            select(rollup.c.messages).where(
                rollup.c.project_pk == project.pk, rollup.c.scope == "*", rollup.c.dimension == "none"
            )
        ).scalars()
    assert messages == 3
