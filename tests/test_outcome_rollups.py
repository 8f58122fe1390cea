"""Outcomes in the rollups and ``/api/v1/metrics``: conversations per outcome on the day they started,
each counted once in its latest outcome as its thread grows, gone with an erased user, rebuilt by
``convolens reenrich`` — the same from the rollups as from the base tables."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import update

from conftest import CLI, Project, RunningServer, separate_database
from convolens.enrich.prices import DEFAULT_PRICES
from convolens.store import metrics, rollups
from convolens.store.db import Database
from convolens.store.tables import conversation
from convolens.timeutil import utcnow
from test_outcomes import GAVE_UP, THANKED, read_when_enriched
from test_rollups import refresh

DAY_A = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
DAY_B, DAY_C = DAY_A + timedelta(days=1), DAY_A + timedelta(days=2)
WINDOW = {"start_time": "2026-11-01T00:00:00Z", "end_time": "2026-11-08T00:00:00Z"}
LATER = [
    ("user", "And how do I export them as CSV?"),
    ("assistant", "CSV export is not available for invoices."),
    ("user", "That's wrong, there is a CSV button right there on the page."),
]


def send(client: httpx.Client, cid: str, user: str, turns: list[tuple[str, str]], at: datetime, first: int = 0) -> None:
    events = [{"type": "conversation", "id": cid, "user_id": user}] + [
        {
            "type": "message",
            "conversation_id": cid,
            "id": f"{cid}-{first + i}",
            "role": role,
            "content": text,
            "timestamp": (at + timedelta(minutes=i)).isoformat(),
        }
        for i, (role, text) in enumerate(turns)
    ]
    response = client.post("/api/v1/ingest", json={"events": events})
    assert response.status_code == 202, response.text


def by_day(client: httpx.Client, **params: str) -> dict[str, dict]:
    response = client.get("/api/v1/metrics", params={**WINDOW, **params})
    assert response.status_code == 200, response.text
    (series,) = response.json()["series"]
    return series["data"]


def outcomes_by_day(client: httpx.Client) -> dict[str, dict[str, int]]:
    """{day: {outcome: conversations}} for the days with any outcome."""
    return {
        day: {o: n for o, n in figures["outcomes"].items() if n}
        for day, figures in by_day(client).items()
        if any(figures["outcomes"].values())
    }


def rolled_up_equals_live(server: RunningServer, project: Project, grouping: str = "none") -> dict:
    """Rolls every marked day up, then reads the window both ways: they must agree to the unit."""
    refresh(server.db)  # one drain can miss a day the server's own worker leased just before it
    window = {"start": datetime(2026, 11, 1), "end": datetime(2026, 11, 8)}
    with server.db.reader() as conn:
        both = [
            metrics.metrics(
                conn, project.pk, **window, period="week", grouping=metrics.Grouping.parse(grouping),
                prices=DEFAULT_PRICES, use_rollups=use,
            )
            for use in (True, False)
        ]  # fmt: skip
        stored = rollups.stored(conn, project.pk, "none", "2026-11-01", "2026-11-07", rollups.ALL_TENANTS)
    assert stored, "the days were rolled up"
    assert both[0] == both[1]
    return both[0]


def test_outcomes_count_per_start_day_follow_the_thread_and_leave_with_the_user(
    server: RunningServer, project: Project
) -> None:
    a, b, c = (d.date().isoformat() for d in (DAY_A, DAY_B, DAY_C))
    with server.client(project.token) as client:
        send(client, "thanked", "ann", THANKED, DAY_A)
        send(client, "gave-up", "bob", GAVE_UP, DAY_A)
        send(client, "next-day", "cat", THANKED, DAY_B)
        for cid, n in (("thanked", 3), ("gave-up", 7), ("next-day", 3)):
            read_when_enriched(client, cid, n)
        assert outcomes_by_day(client) == {a: {"resolved": 1, "unresolved": 1}, b: {"resolved": 1}}
        assert by_day(client)[a]["resolved_share"] == 0.5
        # The same counts through Context's series API (a series of ours: Context has no outcomes).
        response = client.get("/api/v1/conversations/series/outcome", params=WINDOW)
        assert response.status_code == 200, response.text
        series = {s["name"]: s["data"] for s in response.json()["series"]}
        assert set(series) == {"resolved", "unresolved", "abandoned", "unknown", "resolved_share"}
        assert series["resolved"][a] == series["resolved"][b] == 1
        assert series["unresolved"] == {**dict.fromkeys(series["resolved"], 0), a: 1}
        assert series["resolved_share"] == {a: 0.5, b: 1.0}
        week = rolled_up_equals_live(server, project)["all"]
        (monday,) = week
        assert week[monday]["outcomes"] == {"resolved": 2, "unresolved": 1, "abandoned": 0, "unknown": 0}

        # Ann comes back two days later and points out a wrong answer: her conversation is counted once,
        # on the day it started, in its new outcome; the day of her new messages gets no outcome.
        send(client, "thanked", "ann", LATER, DAY_C, first=3)
        assert read_when_enriched(client, "thanked", 6)["outcome"] == "unresolved"
        assert outcomes_by_day(client) == {a: {"unresolved": 2}, b: {"resolved": 1}}
        assert by_day(client)[c]["messages"] == 3
        assert by_day(client)[c]["resolved_share"] is None  # nothing started that day
        week = rolled_up_equals_live(server, project)["all"]
        assert week[monday]["outcomes"]["unresolved"] == 2
        assert week[monday]["resolved_share"] == round(1 / 3, 4)

        # Per group too: the tenant-less scope and a language each count a conversation once.
        assert rolled_up_equals_live(server, project, "language")
        assert rolled_up_equals_live(server, project, "tenant")["(none)"][monday]["outcomes"]["unresolved"] == 2

    with server.client(project.admin_token) as admin:
        assert admin.delete("/api/v1/users/bob").status_code == 200
    with server.client(project.token) as client:
        assert outcomes_by_day(client) == {a: {"unresolved": 1}, b: {"resolved": 1}}
        assert rolled_up_equals_live(server, project)["all"][monday]["outcomes"]["unresolved"] == 1


def test_reenrich_rebuilds_the_outcome_counts(server: RunningServer, project: Project) -> None:
    with server.client(project.token) as client:
        send(client, "thanked", "ann", THANKED, DAY_A)
        send(client, "gave-up", "bob", GAVE_UP, DAY_B)
        read_when_enriched(client, "thanked", 3)
        read_when_enriched(client, "gave-up", 7)
        before = outcomes_by_day(client)
        assert before == {DAY_A.date().isoformat(): {"resolved": 1}, DAY_B.date().isoformat(): {"unresolved": 1}}
        rolled_up_equals_live(server, project)
        # As after an upgrade from a version without outcomes: none stored, the days redone without them.
        with server.db.writer() as conn:
            conn.execute(
                update(conversation)
                .where(conversation.c.project_pk == project.pk)
                .values(outcome=None, outcome_signals=None, outcome_version=None)
            )
            rollups.mark(conn, project.pk, ["2026-11-02", "2026-11-03"], utcnow())
        rolled_up_equals_live(server, project)
        assert outcomes_by_day(client) == {}

        env = {**os.environ, "CONVOLENS_DATABASE_URL": server.db.url, "CONVOLENS_HOME": str(server.settings.home)}
        done = subprocess.run(
            [*CLI, "reenrich", "--project", project.name], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "10 messages queued" in done.stdout
        read_when_enriched(client, "thanked", 3)
        read_when_enriched(client, "gave-up", 7)
        assert outcomes_by_day(client) == before
        assert rolled_up_equals_live(server, project)["all"]


def test_the_migration_marks_the_days_rolled_up_without_outcomes(database_url: str, tmp_path: Path) -> None:
    with separate_database(database_url, tmp_path, "migration") as own_db:
        migrate_with_a_rollup(own_db)


def migrate_with_a_rollup(own_db: Database) -> None:
    from alembic import command
    from sqlalchemy import select, text

    from convolens.store import migrate, projects
    from convolens.store.tables import rollup_dirty

    with own_db.writer() as conn:
        pk, _ = projects.ensure_project(conn, "before-outcomes")
    config = migrate.alembic_config()
    with own_db.write_engine.connect() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0012")
        conn.commit()
    with own_db.write_engine.connect() as conn:
        conn.execute(
            text(
                "INSERT INTO rollup (project_pk, scope, dimension, day, value, messages, user_messages, sentiment_sum,"
                " sentiment_count, ratings_up, ratings_down, rated, rating_sum, conversations_started,"
                " conversation_count, user_count, conversation_set, user_set)"
                " VALUES (:pk, '*', 'none', '2026-11-02', '', 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, :empty, :empty)"
            ),
            {"pk": pk, "empty": rollups.pack([])},
        )
        conn.commit()
    migrate.upgrade(own_db)
    with own_db.reader() as conn:
        days = conn.execute(select(rollup_dirty.c.day).where(rollup_dirty.c.project_pk == pk)).scalars().all()
        assert days == ["2026-11-02"]
        (row,) = rollups.stored(conn, pk, "none", "2026-11-02", "2026-11-02", "*")
        assert row[3].outcomes == {}
