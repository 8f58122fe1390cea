"""When a project's suggested topics are computed: once it has enough uncovered messages to cluster
(not on an hourly clock that starts before any data), then as that pool grows by a fifth, or after a
day if anything new arrived."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import insert, select

from conftest import REPO, Project, RunningServer, make_project, new_ids_batch, separate_database
from convolens.store import suggestions, topics
from convolens.store.db import Database
from convolens.store.ingest import apply_batch
from convolens.store.suggestions import RunState, Timing
from convolens.store.tables import message, message_embedding, message_topic, suggestion_run
from convolens.timeutil import utcnow

TIMING = Timing(min_messages=40, growth=0.2, max_age=timedelta(days=1), check_every=timedelta(seconds=10))


@pytest.fixture(scope="module")
def quiet_db(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """A database of this module's own: no server's embedded worker runs (and so changes) its
    projects' suggestions while a test steps through them."""
    with separate_database(database_url, tmp_path_factory.mktemp("timing"), "timing") as database:
        yield database


@pytest.fixture
def quiet_project(quiet_db: Database) -> Project:
    return make_project(quiet_db, "timing")


def _add_enriched(db: Database, project: Project, n: int) -> list[int]:
    """``n`` new user messages, stored and given an embedding as the enrichment would (the vectors'
    values do not matter to when a run is due)."""
    work = new_ids_batch(project.pk, messages=n)
    with db.writer() as conn:
        apply_batch(conn, project.pk, work.batch, utcnow(), ids_are_new=True)
        pks = conn.execute(
            select(message.c.pk)
            .where(
                message.c.project_pk == project.pk,
                ~message.c.pk.in_(
                    select(message_embedding.c.message_pk).where(message_embedding.c.project_pk == project.pk)
                ),
            )
            .order_by(message.c.pk)
        ).scalars()
        pks = list(pks)
        conn.execute(
            insert(message_embedding),
            [{"message_pk": pk, "project_pk": project.pk, "vector": bytes(8)} for pk in pks],
        )
    return pks


def _state(db: Database, project: Project) -> RunState:
    with db.reader() as conn:
        row = conn.execute(
            select(
                suggestion_run.c.project_pk,
                suggestion_run.c.last_run_at,
                suggestion_run.c.requested_at,
                suggestion_run.c.last_pool,
                suggestion_run.c.last_message_pk,
            ).where(suggestion_run.c.project_pk == project.pk)
        ).one_or_none()
    return RunState(*row) if row else RunState(project.pk, None, None, None, None)


def _due(db: Database, project: Project, after: timedelta = timedelta(0)) -> bool:
    with db.reader() as conn:
        return suggestions.is_due(conn, _state(db, project), TIMING, utcnow() + after)


def _run(db: Database, project: Project) -> int:
    """One run of the project's suggestions, as the worker records it; returns the pool it read."""
    with db.writer() as conn:
        if not conn.execute(select(suggestion_run).where(suggestion_run.c.project_pk == project.pk)).first():
            conn.execute(insert(suggestion_run).values(project_pk=project.pk))
        assert suggestions.lease_run(conn, "w", project.pk, timedelta(minutes=10), utcnow())
    with db.reader() as conn:
        pool = suggestions.uncovered(conn, project.pk)
    with db.writer() as conn:
        assert suggestions.finish_run(conn, "w", project.pk, utcnow(), pool)
    return len(pool.texts)


def test_a_new_project_is_due_once_it_has_enough_uncovered_messages(quiet_db: Database, quiet_project: Project) -> None:
    assert not _due(quiet_db, quiet_project)  # no data: nothing to cluster, at start or later
    assert not _due(quiet_db, quiet_project, after=timedelta(days=2))
    _add_enriched(quiet_db, quiet_project, 39)
    assert not _due(quiet_db, quiet_project)
    _add_enriched(quiet_db, quiet_project, 1)
    assert _due(quiet_db, quiet_project)


def test_messages_an_active_topic_covers_do_not_count(quiet_db: Database, quiet_project: Project) -> None:
    pks = _add_enriched(quiet_db, quiet_project, 45)
    with quiet_db.writer() as conn:
        topic_pk = topics.create(conn, quiet_project.pk, name="Billing", kind="keyword", definition={}, now=utcnow())
        conv = conn.execute(select(message.c.conversation_pk).where(message.c.pk == pks[0])).scalar_one()
        conn.execute(
            insert(message_topic),
            [
                {"message_pk": pk, "topic_pk": topic_pk, "project_pk": quiet_project.pk, "conversation_pk": conv}
                | {"created_at": utcnow(), "score": 1.0}
                for pk in pks[:6]
            ],
        )
    assert not _due(quiet_db, quiet_project)  # 39 uncovered
    _add_enriched(quiet_db, quiet_project, 1)
    assert _due(quiet_db, quiet_project)


def test_again_when_the_pool_grows_by_a_fifth_or_a_day_passes(quiet_db: Database, quiet_project: Project) -> None:
    _add_enriched(quiet_db, quiet_project, 50)
    assert _run(quiet_db, quiet_project) == 50
    assert not _due(quiet_db, quiet_project)
    assert not _due(quiet_db, quiet_project, after=timedelta(days=2))  # nothing new: a day alone is no reason
    _add_enriched(quiet_db, quiet_project, 5)  # +10%
    assert not _due(quiet_db, quiet_project)
    assert not _due(quiet_db, quiet_project, after=timedelta(hours=23))
    assert _due(quiet_db, quiet_project, after=timedelta(hours=25))
    _add_enriched(quiet_db, quiet_project, 5)  # +20%
    assert _due(quiet_db, quiet_project)
    assert _run(quiet_db, quiet_project) == 60
    _add_enriched(quiet_db, quiet_project, 11)  # a fifth of the new pool is 12
    assert not _due(quiet_db, quiet_project)
    _add_enriched(quiet_db, quiet_project, 1)
    assert _due(quiet_db, quiet_project)


def test_a_run_that_found_too_few_waits_for_enough_not_for_growth(quiet_db: Database, quiet_project: Project) -> None:
    _add_enriched(quiet_db, quiet_project, 10)
    with quiet_db.writer() as conn:
        suggestions.request_run(conn, quiet_project.pk, utcnow())
    assert _due(quiet_db, quiet_project)  # asked for (the refresh endpoint): due whatever the counts
    assert _run(quiet_db, quiet_project) == 10
    _add_enriched(quiet_db, quiet_project, 5)  # +50% of a pool too small to cluster
    assert not _due(quiet_db, quiet_project)
    _add_enriched(quiet_db, quiet_project, 25)
    assert _due(quiet_db, quiet_project)


def test_workers_count_a_project_at_most_every_check_interval(quiet_db: Database, quiet_project: Project) -> None:
    now = utcnow()

    def checked(at) -> bool:
        with quiet_db.writer() as conn:
            return quiet_project.pk in {s.project_pk for s in suggestions.to_check(conn, TIMING, at, limit=100_000)}

    assert checked(now)
    assert not checked(now + timedelta(seconds=5))
    assert checked(now + timedelta(seconds=11))
    with quiet_db.writer() as conn:
        suggestions.request_run(conn, quiet_project.pk, now + timedelta(seconds=12))
    assert checked(now + timedelta(seconds=12))  # asked for: looked at without waiting


def _labelled(topic: str, n: int) -> list[str]:
    rows = [json.loads(line) for line in (REPO / "tests" / "data" / "topics.jsonl").read_text().splitlines()]
    return [r["text"] for r in rows if r["topic"] == topic][:n]


def _log(client: httpx.Client, thread_id: str, text: str) -> None:
    body = {"conversation": {"id": thread_id, "messages": [{"role": "user", "message": text}]}}
    body["conversation"]["messages"].append({"role": "assistant", "message": "Sure, here you go."})
    assert client.post("/api/v1/log/conversation/thread", json=body).status_code == 201


def _enriched(client: httpx.Client, thread_id: str, deadline: float) -> None:
    while client.get(f"/api/v1/conversations/{thread_id}").json()["messages"][0]["sentiment"] is None:
        assert time.monotonic() < deadline, "not enriched in time"
        time.sleep(0.2)


def test_a_fresh_project_gets_named_suggestions_without_asking(server: RunningServer, project: Project) -> None:
    threads = [(f"{topic}-{i}", text) for topic in ("billing", "cooking", "travel", "fitness") for i, text in
               enumerate(_labelled(topic, 40))]  # fmt: skip
    deadline = time.monotonic() + 120
    with server.client(project.admin_token) as client:
        # The first few arrive while the project is new and the worker has nothing else to do (as after
        # `make run` or a first deploy): no run on too few messages may hold the next one off for long.
        for thread_id, text in threads[:8]:
            _log(client, thread_id, text)
        _enriched(client, threads[7][0], deadline)
        time.sleep(2)  # the worker idles (it looks for due suggestions every half second)
        for thread_id, text in threads[8:]:
            _log(client, thread_id, text)
        while True:  # no POST /api/v1/suggested_topics/refresh
            found = client.get("/api/v1/suggested_topics").json()["topics"]
            if len(found) >= 2:
                break
            assert time.monotonic() < deadline, "no suggestions within 120 s of the data"
            time.sleep(0.5)
    assert all(isinstance(s["name"], str) and s["name"].strip() for s in found), found
