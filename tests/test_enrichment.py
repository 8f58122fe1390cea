"""Enrichment: language quality, the worker queue (claims, leases, exactly once), and results via the API."""

from __future__ import annotations

import gc
import json
import os
import runpy
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from conftest import CLI, REPO, Project, RunningServer, make_project, separate_database
from convolens.enrich import pipeline
from convolens.schemas.ingest import IngestBatch
from convolens.store import enrichment, migrate
from convolens.store.db import Database
from convolens.store.ingest import apply_batch
from convolens.store.tables import conversation, message
from convolens.timeutil import utcnow
from convolens.worker.low_priority import LowPriority
from convolens.worker.runner import Worker


def test_language_quality_on_the_labelled_set() -> None:
    evaluate = runpy.run_path(str(REPO / "bench" / "language_quality.py"))["evaluate"]
    rows = [json.loads(line) for line in (REPO / "tests" / "data" / "languages.jsonl").read_text().splitlines()]
    assert len(rows) >= 200
    result = evaluate(rows)
    assert result["languages"] >= 10
    assert result["accuracy"] >= 0.95, result["wrong"]


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_languages_come_back_through_the_api(server: RunningServer, project: Project) -> None:
    texts = {
        "en": "Why was I charged twice this month?",
        "ko": "이번 달에 왜 두 번 결제되었나요?",
        "ja": "注文した商品がまだ届いていません。",
        "es": "¿Dónde está mi factura?",
    }
    with server.client(project.token) as client:
        client.post(
            "/api/v1/log/conversation/thread",
            json={
                "conversation": {
                    "id": "langs",
                    "messages": [{"role": "user", "message": text} for text in texts.values()],
                }
            },
        )

        def enriched() -> bool:
            messages = client.get("/api/v1/conversations/langs").json()["messages"]
            return all(m["language"] for m in messages)

        wait_for(enriched)
        got = [m["language"] for m in client.get("/api/v1/conversations/langs").json()["messages"]]
    assert got == list(texts)


@pytest.fixture
def queue_db(database_url: str, tmp_path: Path) -> Iterator[Database]:
    """A database of its own, with no server (and so no embedded worker) competing for its queue."""
    with separate_database(database_url, tmp_path, "queue") as db:
        yield db


def _fill(db: Database, n: int) -> Project:
    project = make_project(db, "queue")
    events = [
        {
            "type": "message",
            "conversation_id": f"c{i % 40}",
            "id": f"m{i}",
            "role": "user",
            "content": f"message number {i} about my invoice",
        }
        for i in range(n)
    ]
    for start in range(0, n, 500):
        with db.writer() as conn:
            apply_batch(conn, project.pk, IngestBatch.model_validate({"events": events[start : start + 500]}), utcnow())
    return project


def test_two_workers_enrich_each_message_exactly_once(queue_db: Database) -> None:
    # 40 claims of 25 for two workers started together: enough interleaving for a double claim to show
    # (3,000 messages made this the suite's slowest test without claiming any more often concurrently).
    _fill(queue_db, 1000)
    workers = [Worker(queue_db, batch_size=25, name=f"w{i}") for i in range(2)]
    saved: dict[str, list[int]] = {w.owner: [] for w in workers}
    start_together = threading.Barrier(2)

    def drain(worker: Worker) -> None:
        start_together.wait()
        while batch := worker.run_once():
            saved[worker.owner].extend(batch)

    threads = [threading.Thread(target=drain, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    first, second = (set(keys) for keys in saved.values())
    assert first and second, "both workers took part"
    assert not first & second
    assert len(first) + len(second) == 1000
    with queue_db.reader() as conn:
        assert (
            conn.execute(
                select(func.count())
                .select_from(message)
                .where(
                    message.c.enriched_version == pipeline.VERSION,
                    message.c.language == "en",
                    message.c.lease_owner.is_(None),
                )
            ).scalar_one()
            == 1000
        )


def test_a_dead_workers_lease_expires(queue_db: Database) -> None:
    _fill(queue_db, 50)
    with queue_db.writer() as conn:  # a worker claims a batch and then dies (SIGKILL): it never saves
        claimed = enrichment.claim(conn, "dead-worker", 30, timedelta(minutes=10), utcnow())
    assert len(claimed) == 30
    survivor = Worker(queue_db, batch_size=100, lease=timedelta(seconds=30), name="survivor")
    assert len(survivor.run_once()) == 20  # the leased rows are not taken while the lease holds
    assert survivor.run_once() == []
    # Ten minutes pass (the lease's end is moved, not waited for: a 1-second lease lapsed on a busy
    # machine while the survivor's first batch was still being enriched).
    with queue_db.writer() as conn:
        lapsed = utcnow() - timedelta(seconds=1)
        conn.execute(update(message).where(message.c.lease_owner == "dead-worker").values(lease_until=lapsed))
    assert sorted(survivor.run_once()) == sorted(m.pk for m in claimed)
    with queue_db.writer() as conn:  # the dead worker cannot overwrite what the survivor saved
        assert enrichment.save(conn, "dead-worker", pipeline.VERSION, pipeline.enrich(claimed)) == []


def test_a_message_that_always_fails_is_set_aside_and_its_batch_and_project_move_on(queue_db: Database) -> None:
    """A bug that one message's text triggers (simulated: the step that runs enrichment raises for it)
    used to fail its whole batch, which was claimed again each time its lease lapsed, forever: its project's
    messages were never enriched. Now the batch's other messages are saved at once, and the bad one is
    tried alone, handed back, and set aside after MAX_ATTEMPTS claims; `convolens reenrich` tries again."""
    project = _fill(queue_db, 20)
    with queue_db.reader() as conn:
        bad = conn.execute(select(message.c.pk).where(message.c.id == "m5")).scalar_one()

    def heavy(step, *args, **kwargs):
        if step is pipeline.enrich and any(m.pk == bad for m in args[0]):
            raise ValueError("a bug only this message triggers")
        return step(*args, **kwargs)

    worker = Worker(queue_db, name="w", heavy=heavy)
    assert len(worker.run_once()) == 19  # the rest of its batch
    for _ in range(enrichment.MAX_ATTEMPTS - 1):  # claimed again at once (no lease to wait out), alone
        assert worker.run_once() == []
    with queue_db.reader() as conn:
        row = conn.execute(
            select(message.c.enriched_version, message.c.enrich_attempts).where(message.c.pk == bad)
        ).one()
    assert row == (None, enrichment.MAX_ATTEMPTS)
    assert worker.run_once() == []  # the next claim gives up on it
    with queue_db.reader() as conn:
        row = conn.execute(
            select(message.c.enriched_version, message.c.lease_owner, message.c.sentiment).where(message.c.pk == bad)
        ).one()
        pending = conn.execute(
            select(func.count()).where(message.c.project_pk == project.pk, message.c.enriched_version.is_(None))
        ).scalar_one()
    assert row == (enrichment.SET_ASIDE, None, None) and pending == 0
    # Once the bug is fixed, reenrich brings it back with a fresh count of attempts.
    with queue_db.writer() as conn:
        enrichment.requeue(conn, project.pk)
    assert bad in Worker(queue_db, name="fixed").run_once()
    with queue_db.reader() as conn:
        assert (
            conn.execute(select(message.c.enriched_version).where(message.c.pk == bad)).scalar_one() == pipeline.VERSION
        )


def test_a_stop_in_the_middle_of_a_batch_hands_it_back_at_once(queue_db: Database) -> None:
    """The server waits STOP_SECONDS (10 s) for its embedded worker and then kills it; embedding one batch
    of long messages at low priority on a busy machine took longer, so every Ctrl-C and every server stop
    in the tests ended in that kill, and the batch waited out its lease. Now a stop interrupts the
    low-priority step, and the claim goes back at once without counting an attempt."""
    _fill(queue_db, 20)
    stopping, in_step, finish = threading.Event(), threading.Event(), threading.Event()
    low = LowPriority(0, stopping)

    def outlasting_any_stop(*args):  # the enrichment step of a batch that takes longer than a stop waits
        in_step.set()
        finish.wait(120)
        return pipeline.enrich(*args)

    def heavy(step, *args, **kwargs):
        return low(outlasting_any_stop if step is pipeline.enrich else step, *args, **kwargs)

    worker = Worker(queue_db, name="stopped", heavy=heavy, stop_event=stopping)
    running = threading.Thread(target=worker.run)
    running.start()
    try:
        assert in_step.wait(60)
        worker.stop()
        running.join(30)
        assert not running.is_alive(), "the worker waited for its step to end"
        with queue_db.reader() as conn:
            rows = conn.execute(
                select(message.c.enriched_version, message.c.lease_owner, message.c.enrich_attempts)
            ).all()
        assert rows == [(None, None, 0)] * 20
        assert len(Worker(queue_db, name="next").run_once()) == 20  # no lease to wait out
    finally:
        finish.set()
        running.join(30)
        low.close()


def test_a_message_whose_workers_keep_dying_is_set_aside(queue_db: Database) -> None:
    """A message that kills the process enriching it (its lease lapses each time) is set aside too."""
    _fill(queue_db, 1)
    for attempt in range(1, enrichment.MAX_ATTEMPTS + 1):
        with queue_db.writer() as conn:
            claimed = enrichment.claim(conn, f"dead-{attempt}", 10, timedelta(seconds=-1), utcnow())
        assert [m.attempts for m in claimed] == [attempt]
    with queue_db.writer() as conn:
        assert enrichment.claim(conn, "next", 10, timedelta(seconds=60), utcnow()) == []
        assert conn.execute(select(message.c.enriched_version)).scalar_one() == enrichment.SET_ASIDE


def test_reenrich_requeues_and_the_worker_catches_up(queue_db: Database) -> None:
    project = _fill(queue_db, 20)
    worker = Worker(queue_db, name="w")
    assert len(worker.run_once()) == 20
    with queue_db.writer() as conn:
        assert enrichment.requeue(conn, project.pk) == 20
    assert len(worker.run_once()) == 20


def test_the_worker_command(tmp_path: Path) -> None:
    env = {**os.environ, "CONVOLENS_HOME": str(tmp_path)}
    env.pop("CONVOLENS_DATABASE_URL", None)
    db = Database(f"sqlite:///{tmp_path / 'convolens.sqlite3'}")
    migrate.upgrade(db)
    _fill(db, 100)
    process = subprocess.Popen([*CLI, "worker", "--log-level", "warning"], env=env)

    def all_done() -> bool:
        with db.reader() as conn:
            return (
                conn.execute(
                    select(func.count()).select_from(message).where(message.c.enriched_version.is_(None))
                ).scalar_one()
                == 0
            )

    try:
        wait_for(all_done, 60)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0  # stops cleanly on SIGTERM
    out = subprocess.run([*CLI, "reenrich"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("100 messages queued")
    db.dispose()


def test_two_workers_saving_one_conversation_at_once_keep_a_trend_of_all_of_it(own_db: Database) -> None:
    db = own_db
    project = make_project(db, "trend")
    events = [{"type": "message", "conversation_id": "mood", "role": "user", "content": t} for t in ("great", "awful")]
    with db.writer() as conn:
        apply_batch(conn, project.pk, IngestBatch.model_validate({"events": events}), utcnow())
        keys = conn.execute(select(message.c.pk).where(message.c.project_pk == project.pk).order_by(message.c.position))
        first, second = keys.scalars().all()
        # Each leased to a different worker, for long enough that the session server's embedded worker
        # (same database) cannot take them: the fair claim reaches a new project's messages at once.
        for pk, owner in ((first, "worker-a"), (second, "worker-b")):
            until = utcnow() + timedelta(minutes=5)
            conn.execute(message.update().where(message.c.pk == pk).values(lease_owner=owner, lease_until=until))
    a_saved, a_may_commit = threading.Event(), threading.Event()

    def worker_a() -> None:
        with db.writer() as conn:
            enrichment.save(conn, "worker-a", 1, [enrichment.EnrichmentResult(first, "en", 0.8, "positive")])
            a_saved.set()
            assert a_may_commit.wait(10)

    def worker_b() -> None:
        with db.writer() as conn:
            enrichment.save(conn, "worker-b", 1, [enrichment.EnrichmentResult(second, "en", -0.8, "negative")])

    a = threading.Thread(target=worker_a)
    a.start()
    assert a_saved.wait(10)
    b = threading.Thread(target=worker_b)
    b.start()
    time.sleep(0.3)  # B is saving while A's transaction is still open
    a_may_commit.set()
    a.join(10)
    b.join(10)
    with db.reader() as conn:
        trend = conn.execute(
            select(conversation.c.sentiment_trend).where(
                conversation.c.project_pk == project.pk, conversation.c.id == "mood"
            )
        ).scalar_one()
    assert trend == "down"  # from both scores; a trend of one score alone is "flat"


def test_a_project_with_a_backlog_does_not_hold_up_another(queue_db: Database) -> None:
    big = _fill(queue_db, 2000)
    small = _fill(queue_db, 10)
    with queue_db.writer() as conn:
        first = enrichment.claim(conn, "w", 256, timedelta(seconds=60), utcnow())
    by_project = {pk: sum(m.project_pk == pk for m in first) for pk in (big.pk, small.pk)}
    assert by_project == {big.pk: 246, small.pk: 10}  # the small project's all, the rest of the batch the big one's
    mine = [m.pk for m in first if m.project_pk == big.pk]
    assert mine == sorted(mine)[:246] and mine[0] == min(mine)  # each project's oldest first
    # A worker enriches the small project's messages in its first batch, not after 2,000 others.
    worker = Worker(queue_db, batch_size=32, name="fair")
    with queue_db.writer() as conn:
        enrichment.requeue(conn)
    saved = set(worker.run_once())
    with queue_db.reader() as conn:
        small_keys = set(conn.execute(select(message.c.pk).where(message.c.project_pk == small.pk)).scalars())
    assert small_keys <= saved and len(saved) == 32


def test_projects_take_turns_at_backfills(queue_db: Database) -> None:
    from convolens.store import topics

    busy, quiet = _fill(queue_db, 5), _fill(queue_db, 5)
    with queue_db.writer() as conn:
        for i in range(5):  # the busy project redefines five topics before the quiet one defines its first
            topics.create(conn, busy.pk, name=f"t{i}", kind="keyword", definition={"keywords": ["x"]}, now=utcnow())
        topics.create(conn, quiet.pk, name="q", kind="keyword", definition={"keywords": ["x"]}, now=utcnow())
    worker = Worker(queue_db, name="turns")
    served = []
    for _ in range(3):
        with queue_db.writer() as conn:
            row = topics.claim_backfill(conn, worker.owner, worker.lease, utcnow(), worker.backfill_after)
        assert row is not None
        worker.backfill_after = row.project_pk
        served.append(row.project_pk)
    assert served[:2].count(quiet.pk) == 1 and served[2] == busy.pk


def test_a_claimed_user_message_brings_the_assistant_reply_just_before_it(queue_db: Database) -> None:
    project = make_project(queue_db, "context")
    turns = [
        ("c1", "u1", "user", "When is the invoice due?"),
        ("c2", "u2", "user", "Hello"),  # another conversation in between
        ("c1", "a1", "assistant", "x" * 2000 + " The invoice is due in April."),
        ("c2", "a2", "assistant", "Hi! How can I help?"),
        ("c1", "u3", "user", "The invoice says March."),
        ("c1", "u4", "user", "Are you there?"),  # follows a user message: no reply to react to
    ]
    events = [
        {"type": "message", "conversation_id": c, "id": i, "role": role, "content": text} for c, i, role, text in turns
    ]
    with queue_db.writer() as conn:
        apply_batch(conn, project.pk, IngestBatch.model_validate({"events": events}), utcnow())
        claimed = enrichment.claim(conn, "w", 10, timedelta(seconds=60), utcnow())
    with queue_db.reader() as conn:
        ids = {pk: id_ for pk, id_ in conn.execute(select(message.c.pk, message.c.id))}
    previous = {ids[m.pk]: m.previous_assistant for m in claimed}
    assert previous == {
        "u1": None,
        "u2": None,
        "a1": None,  # only user messages need their context
        "a2": None,
        "u3": "x" * (enrichment.PREVIOUS_CHARS - 29) + " The invoice is due in April.",
        "u4": None,
    }


def test_outcomes_assessed_before_the_save_are_kept_only_for_unchanged_conversations(queue_db: Database) -> None:
    """The worker assesses outcomes outside the write lock (enrichment.assess_outcomes); a conversation
    that grew between that read and the save is assessed again inside it, from what is committed."""
    from convolens.worker.runner import OUTCOMES
    from test_outcomes import THANKED

    db = queue_db
    project = make_project(db, "outcome-race")
    turns = lambda cid, pairs: [  # noqa: E731
        {"type": "message", "conversation_id": cid, "role": role, "content": text} for role, text in pairs
    ]
    with db.writer() as conn:
        batch = IngestBatch.model_validate({"events": turns("grows", THANKED) + turns("stays", THANKED)})
        apply_batch(conn, project.pk, batch, utcnow())
        claimed = enrichment.claim(conn, "w", 100, timedelta(minutes=5), utcnow())
    results = pipeline.enrich([m for m in claimed if m.project_pk == project.pk])
    with db.snapshot() as conn:
        assessed = enrichment.assess_outcomes(conn, results, OUTCOMES)
        keys = dict(
            conn.execute(
                select(conversation.c.id, conversation.c.pk).where(conversation.c.project_pk == project.pk)
            ).all()
        )
    assert assessed.found[keys["grows"]][0] == assessed.found[keys["stays"]][0] == "resolved"
    # Meanwhile the user comes back to one of them and says the answer was wrong.
    more = [
        ("user", "And how do I export them as CSV?"),
        ("assistant", "CSV export is not available for invoices."),
        ("user", "That's wrong, there is a CSV button right there on the page. Forget it, I'll call support."),
    ]
    with db.writer() as conn:
        apply_batch(conn, project.pk, IngestBatch.model_validate({"events": turns("grows", more)}), utcnow())
    assessed_inside: list[list[int]] = []

    def counting(threads):  # type: ignore[no-untyped-def]
        assessed_inside.append(sorted(threads))
        return OUTCOMES.assess(threads)

    with db.writer() as conn:
        saved = enrichment.save(
            conn, "w", pipeline.VERSION, results, enrichment.Outcomes(counting, OUTCOMES.version), assessed
        )
    assert sorted(saved) == sorted(r.pk for r in results)
    assert assessed_inside == [[keys["grows"]]]  # the unchanged one kept what was assessed outside
    with db.reader() as conn:
        stored = dict(
            conn.execute(
                select(conversation.c.pk, conversation.c.outcome).where(conversation.c.project_pk == project.pk)
            ).all()
        )
        committed = OUTCOMES.assess(enrichment.transcripts(conn, [keys["grows"]]))
    assert stored[keys["stays"]] == "resolved"
    assert stored[keys["grows"]] == committed[keys["grows"]][0] != "resolved"


def _long_threads(db: Database, prefix: str) -> Project:
    """Two conversations of long texts (like bench/abuse.py's crafted ones) beside a short one."""
    project = make_project(db, prefix)
    events = []
    for c, (role_first, filler) in enumerate([("user", "a" * 80_000), ("assistant", "1 " * 40_000)]):
        for i in range(6):
            role = role_first if i % 2 == 0 else ("assistant" if role_first == "user" else "user")
            content = f"turn {i} of thread {c}: " + ("Thanks, that worked! " if i == 5 else "") + filler
            events.append({"type": "message", "conversation_id": f"long{c}", "role": role, "content": content})
    events += [
        {"type": "message", "conversation_id": "short", "role": "user", "content": "Where is my invoice?"},
        {"type": "message", "conversation_id": "short", "role": "assistant", "content": "Under Billing."},
        {"type": "message", "conversation_id": "short", "role": "user", "content": "Found it, thank you!"},
    ]
    with db.writer() as conn:
        apply_batch(conn, project.pk, IngestBatch.model_validate({"events": events}), utcnow())
    return project


def _stored_figures(db: Database, project: Project) -> dict[str, tuple]:
    with db.reader() as conn:
        rows = conn.execute(
            select(
                conversation.c.id,
                conversation.c.outcome,
                conversation.c.outcome_signals,
                conversation.c.sentiment_trend,
            ).where(conversation.c.project_pk == project.pk)
        ).all()
        pending = conn.execute(
            select(func.count()).where(message.c.project_pk == project.pk, message.c.enriched_version.is_(None))
        ).scalar_one()
    assert pending == 0
    return {id_: tuple(rest) for id_, *rest in rows}


def test_a_claim_of_long_texts_is_saved_in_short_transactions_with_the_same_results(
    queue_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker saves a claim in parts of at most SAVE_CHARS characters of text, each its own write
    transaction: on SQLite the API's writes wait for that lock (bench/abuse.py's tail). The parts must
    store what one transaction stored: every message, and each conversation's outcome and trend."""
    db = queue_db
    whole = _long_threads(db, "whole")
    monkeypatch.setattr(enrichment, "SAVE_CHARS", 10**9)  # as before: a claim, one transaction
    Worker(db).drain()
    in_one = _stored_figures(db, whole)

    monkeypatch.undo()
    parted = _long_threads(db, "parted")
    texts: list[int] = []
    holds: list[float] = []
    saving = enrichment.save

    def save(conn, owner, version, results, *args, **kwargs):  # type: ignore[no-untyped-def]
        with db.reader() as reading:
            lengths = reading.execute(
                select(func.length(message.c.content)).where(message.c.pk.in_([r.pk for r in results]))
            ).scalars()
            texts.append(sum(lengths))
        # This thread's CPU (the save runs on the draining thread): the process's counted the session
        # servers' threads too, and a full run once read 31 ms for a part that takes ~5-15 alone.
        started = time.thread_time()
        try:
            return saving(conn, owner, version, results, *args, **kwargs)
        finally:
            holds.append(time.thread_time() - started)

    monkeypatch.setattr(enrichment, "save", save)
    # Without the cyclic collector: CI once read 306 ms for one save, among others of 3-6 ms, at the end of
    # a suite whose process held ~1,400 tests' objects. That is a full collection landing on this thread,
    # not the save's work, which is what the bound is about.
    gc.collect()
    gc.disable()
    try:
        Worker(db).drain()
    finally:
        gc.enable()
    assert len(texts) >= 6  # 12 texts of ~80,000 characters: at most one such text a part
    assert max(texts) <= 2 * 80_100
    assert _stored_figures(db, parted) == in_one
    assert in_one["short"][0] == "resolved" and in_one["long0"][0] != "unknown"
    if db.is_sqlite:
        # CPU seconds of the longest save, on its own thread: ~5 ms here, where a
        # claim saved whole took 40-70 ms.
        assert max(holds) < 0.025, holds


def test_a_claim_is_cut_into_parts_by_its_text() -> None:
    """Empty texts (a message of "" is valid) included: the first one once raised on an empty list, and
    the worker retried that claim forever."""
    results = [enrichment.EnrichmentResult(pk, None, None) for pk in range(1, 7)]
    lengths = {1: 0, 2: 0, 3: 40_000, 4: 30_000, 5: 100_000, 6: 10}
    assert enrichment.parts(results, lengths, 64_000) == [[0, 1, 2], [3], [4], [5]]
    assert enrichment.parts(results[:2], {1: 0, 2: 0}, 64_000) == [[0, 1]]
    assert enrichment.parts([], {}, 64_000) == []


def test_empty_messages_are_enriched_like_any_other(queue_db: Database) -> None:
    project = make_project(queue_db, "empty")
    events = [
        {"type": "message", "conversation_id": "e", "role": "user", "content": ""},
        {"type": "message", "conversation_id": "e", "role": "assistant", "content": ""},
    ]
    with queue_db.writer() as conn:
        apply_batch(conn, project.pk, IngestBatch.model_validate({"events": events}), utcnow())
    assert len(Worker(queue_db).run_once()) == 2
