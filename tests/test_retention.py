"""Retention on both backends: old conversations go in bounded batches with everything that hangs off
them, recent ones stay, rollups follow, and the worker applies a project's setting by itself."""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from conftest import CLI, Project, make_project
from convolens.schemas.ingest import IngestBatch
from convolens.store import metrics, projects, retention
from convolens.store.db import Database
from convolens.store.ingest import apply_batch
from convolens.store.tables import conversation, end_user, message, message_embedding
from convolens.timeutil import utcnow
from convolens.worker.runner import Worker


def seed(db: Database, project: Project, ages_in_days: list[int]) -> None:
    now = utcnow()
    events: list[dict] = []
    for i, age in enumerate(ages_in_days):
        at = (now - timedelta(days=age)).isoformat() + "Z"
        cid = f"c{i}-{age}d"
        events += [
            {"type": "conversation", "id": cid, "user_id": f"u-{age}d"},
            {"type": "message", "conversation_id": cid, "id": f"{cid}-q", "role": "user",
             "content": "Why was I charged twice?", "timestamp": at},
            {"type": "message", "conversation_id": cid, "id": f"{cid}-a", "role": "assistant",
             "content": "Let me check.", "timestamp": at, "rating": 1},
        ]  # fmt: skip
    with db.writer() as conn:
        apply_batch(conn, project.pk, IngestBatch.model_validate({"events": events}), now)


def counts(db: Database, project: Project) -> tuple[int, int, int]:
    with db.reader() as conn:
        return tuple(
            conn.execute(select(func.count()).select_from(t).where(t.c.project_pk == project.pk)).scalar_one()
            for t in (conversation, message, end_user)
        )  # type: ignore[return-value]


def test_old_conversations_go_in_bounded_batches(db: Database) -> None:
    project = make_project(db, "retention")
    seed(db, project, [200, 120, 95, 91, 60, 10, 0])
    Worker(db, rollup_settle=timedelta(0), rollup_rest=0.0).drain()  # enriched, rolled up
    assert counts(db, project) == (7, 14, 7)
    now = utcnow()
    with db.reader() as conn:
        assert retention.stale_count(conn, project.pk, now - timedelta(days=90)) == 4
    batches = []
    while True:
        with db.writer() as conn:
            pruned = retention.prune_batch(conn, project.pk, now - timedelta(days=90), now, limit=3)
        if not pruned.conversations:
            break
        batches.append(pruned)
    assert [b.conversations for b in batches] == [3, 1]  # oldest first, never more than the limit
    assert sum(b.messages for b in batches) == 8 and sum(b.end_users for b in batches) == 4
    assert counts(db, project) == (3, 6, 3)
    with db.reader() as conn:
        assert (
            conn.execute(
                select(func.count()).select_from(message_embedding).where(message_embedding.c.project_pk == project.pk)
            ).scalar_one()
            == 3
        )  # the pruned messages' embeddings went with them (cascade)
        year = metrics.metrics(
            conn, project.pk, start=now - timedelta(days=365), end=now, period="month",
            grouping=metrics.Grouping("none"), prices={},
        )["all"]  # fmt: skip
    assert sum(b["messages"] for b in year.values()) == 6  # read live: the pruned days are marked
    Worker(db, rollup_settle=timedelta(0), rollup_rest=0.0).drain()
    with db.reader() as conn:
        rolled = metrics.metrics(
            conn, project.pk, start=now - timedelta(days=365), end=now, period="month",
            grouping=metrics.Grouping("none"), prices={},
        )["all"]  # fmt: skip
    assert rolled == year


def test_the_worker_applies_a_projects_retention(db: Database) -> None:
    keep, short = make_project(db, "keeps"), make_project(db, "short")
    seed(db, keep, [400, 1])
    seed(db, short, [400, 40, 1])
    with db.writer() as conn:
        projects.set_project_setting(conn, short.name, "retention_days", 30)
    worker = Worker(db)
    assert worker.retention_once() == 2
    assert worker.retention_once() == 0  # nothing left: not again before the next hour
    assert counts(db, keep)[0] == 2 and counts(db, short)[0] == 1


@pytest.mark.parametrize("value", ["0d", "ninety", "-5d", "90y"])
def test_bad_ages_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="90d"):
        retention.parse_age(value)


def test_the_prune_and_retention_commands(tmp_path: Path) -> None:
    env = {**os.environ, "CONVOLENS_HOME": str(tmp_path)}
    env.pop("CONVOLENS_DATABASE_URL", None)
    run = lambda *args: subprocess.run([*CLI, *args], env=env, capture_output=True, text=True)  # noqa: E731
    assert run("tokens", "create", "--project", "p").returncode == 0
    db = Database(f"sqlite:///{tmp_path / 'convolens.sqlite3'}")
    with db.reader() as conn:
        project = Project("p", projects.get_project_pk(conn, "p"), "", "", "", "")
    seed(db, project, [100, 50, 5])
    dry = run("prune", "--older-than", "soon")
    assert dry.returncode == 2 and "90d" in dry.stderr
    by_age = run("prune", "--older-than", "60d")
    assert by_age.returncode == 0 and "pruned 1 conversations, 2 messages" in by_age.stdout
    assert run("prune").stdout.startswith("pruned 0 conversations")  # no retention set: nothing goes
    assert "keeps 30 days" in run("projects", "set", "--project", "p", "--retention-days", "30").stdout
    assert "pruned 1 conversations" in run("prune").stdout
    assert counts(db, project)[0] == 1
    assert run("projects", "set", "--project", "p", "--retention-days", "-3").returncode == 2
    db.dispose()
