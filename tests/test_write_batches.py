"""The hot one-conversation requests written in batches by one thread a process
(store/writer/batches.py): a batch is everything that waited, committed together, each request keeping
its own error; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event, func, select
from starlette.testclient import TestClient

from conftest import TEST_LIMITS, Project, make_project, new_ids_batch
from convolens.config import Settings
from convolens.enrich import names
from convolens.server.app import create_app
from convolens.server.auth import TokenLookups, authorize
from convolens.server.errors import ApiError
from convolens.server.ratelimit import RateLimiter
from convolens.store import migrate, projects
from convolens.store.db import Database
from convolens.store.ingest import NewIdsBatch
from convolens.store.tables import conversation
from convolens.store.writer.batches import NotWritten, WriteBatches


def _stored(db: Database, project_pk: int) -> int:
    with db.reader() as conn:
        return conn.execute(select(func.count()).where(conversation.c.project_pk == project_pk)).scalar_one()


async def _behind_a_held_batch(batches: WriteBatches, prepares: list) -> list:  # type: ignore[type-arg]
    """Send one request whose preparation waits until ``prepares`` have all been handed over, so that
    they wait together and the thread takes them as one batch; every outcome (or exception), in order."""
    handed_over = threading.Event()

    def first(_lookups: TokenLookups):  # type: ignore[no-untyped-def]
        assert handed_over.wait(10)
        raise ApiError(409, "the request that held the thread")

    held = asyncio.ensure_future(batches.write(first))
    await asyncio.sleep(0.05)  # the thread has taken it and waits in ``first``
    rest = [asyncio.ensure_future(batches.write(p)) for p in prepares]
    await asyncio.sleep(0)  # every one of them is queued
    handed_over.set()
    with pytest.raises(ApiError):
        await held
    return await asyncio.gather(*rest, return_exceptions=True)


def test_requests_that_waited_together_are_checked_and_committed_as_one_group(own_db: Database) -> None:
    db = own_db
    project = make_project(db, "batches")
    commits: list[int] = []
    batches = WriteBatches(db, per_batch=lambda: TokenLookups(db))
    looked_up: list[str] = []

    def prepare(token: str):  # type: ignore[no-untyped-def]
        def check(lookups: TokenLookups) -> NewIdsBatch:
            info = lookups(token)
            looked_up.append(token)
            if info is None:
                raise ApiError(401, "invalid or revoked token")
            return new_ids_batch(info.project_pk)

        return check

    tokens = [project.ingest_token] * 5 + ["cl_not-a-token"] + [project.token] * 2
    event.listen(db.write_engine, "commit", lambda _conn: commits.append(1))
    try:
        outcomes = asyncio.run(_behind_a_held_batch(batches, [prepare(t) for t in tokens]))
    finally:
        batches.stop()
    assert [getattr(o, "status", None) for o in outcomes] == [None] * 5 + [401] + [None] * 2
    assert [o.created_messages for i, o in enumerate(outcomes) if i != 5] == [2] * 7
    assert len(commits) == 1  # the seven that passed their checks, in one transaction
    assert _stored(db, project.pk) == 7


def test_a_write_that_fails_in_the_database_fails_alone(own_db: Database) -> None:
    db = own_db
    project = make_project(db, "batches")
    batches = WriteBatches(db, per_batch=lambda: TokenLookups(db))
    missing_project = 2**31 - 7  # no such project: the conversation row breaks its foreign key
    pks = [project.pk, missing_project, project.pk]
    try:
        outcomes = asyncio.run(_behind_a_held_batch(batches, [lambda _l, pk=pk: new_ids_batch(pk) for pk in pks]))
    finally:
        batches.stop()
    assert outcomes[0].created_messages == outcomes[2].created_messages == 2
    assert isinstance(outcomes[1], Exception) and not isinstance(outcomes[1], ApiError)
    assert _stored(db, project.pk) == 2


def test_a_request_checked_but_written_elsewhere_gets_its_value_back_and_the_rest_are_written(
    own_db: Database,
) -> None:
    """A variation of one request (written on another thread) is a value ``write`` returns, not an
    exception: the others of its batch are committed, and nothing of it is."""
    db = own_db
    project = make_project(db, "batches")
    batches = WriteBatches(db, per_batch=lambda: TokenLookups(db))
    elsewhere = NotWritten(("its own thread", project.pk))
    prepares = [
        lambda _l: new_ids_batch(project.pk),
        lambda _l: elsewhere,
        lambda _l: new_ids_batch(project.pk),
    ]
    try:
        outcomes = asyncio.run(_behind_a_held_batch(batches, prepares))
    finally:
        batches.stop()
    assert outcomes[1] is elsewhere
    assert outcomes[0].created_messages == outcomes[2].created_messages == 2
    assert _stored(db, project.pk) == 2


def test_a_request_whose_client_went_away_is_still_written_and_the_thread_goes_on(own_db: Database) -> None:
    db = own_db
    project = make_project(db, "batches")
    batches = WriteBatches(db, per_batch=lambda: TokenLookups(db))
    preparing = threading.Event()
    go_on = threading.Event()

    def slow(_lookups: TokenLookups) -> NewIdsBatch:
        preparing.set()
        assert go_on.wait(10)
        return new_ids_batch(project.pk)

    async def scenario() -> int:
        gone = asyncio.ensure_future(batches.write(slow))
        assert await asyncio.to_thread(preparing.wait, 10)
        gone.cancel()  # as Starlette does when the client disconnects
        go_on.set()
        later = await batches.write(lambda _l: new_ids_batch(project.pk, messages=3))
        return later.created_messages

    try:
        assert asyncio.run(scenario()) == 3
    finally:
        batches.stop()
    assert _stored(db, project.pk) == 2


def test_stop_writes_what_was_waiting_and_refuses_what_comes_after(own_db: Database) -> None:
    db = own_db
    project = make_project(db, "batches")
    batches = WriteBatches(db, per_batch=lambda: TokenLookups(db))

    async def scenario() -> list:  # type: ignore[type-arg]
        waiting = [asyncio.ensure_future(batches.write(lambda _l: new_ids_batch(project.pk))) for _ in range(3)]
        await asyncio.sleep(0)
        await asyncio.to_thread(batches.stop)
        done = await asyncio.gather(*waiting)
        with pytest.raises(RuntimeError, match="shutting down"):
            await batches.write(lambda _l: new_ids_batch(project.pk))
        return done

    assert [o.created_messages for o in asyncio.run(scenario())] == [2, 2, 2]
    assert _stored(db, project.pk) == 3


def test_token_lookups_look_each_token_up_once_and_see_a_revocation_in_the_next_batch(
    own_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = own_db
    project = make_project(db, "batches")
    calls: list[str] = []
    authenticate = projects.authenticate
    monkeypatch.setattr(projects, "authenticate", lambda conn, token: calls.append(token) or authenticate(conn, token))
    lookups = TokenLookups(db)
    assert lookups(project.ingest_token) is not None
    assert lookups(project.ingest_token) is not None
    assert len(calls) == 1
    with db.writer() as conn:
        projects.revoke_token(conn, project.ingest_token[:11])
    assert lookups(project.ingest_token) is not None  # the batch that looked it up before the revocation
    assert TokenLookups(db)(project.ingest_token) is None  # the next batch


class _Abort(BaseException):
    """Not an ``Exception``: it ends the batch thread, as an interpreter-level error would."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # its death, on purpose
def test_a_batch_thread_that_died_is_replaced_by_the_next_request(own_db: Database) -> None:
    db = own_db
    project = make_project(db, "batches")
    batches = WriteBatches(db, per_batch=lambda: TokenLookups(db))

    def abort(_lookups: TokenLookups) -> NewIdsBatch:
        raise _Abort

    async def scenario() -> int:
        with pytest.raises(_Abort):
            await batches.write(abort)
        await asyncio.to_thread(batches._thread.join, 10)  # type: ignore[union-attr]
        return (await asyncio.wait_for(batches.write(lambda _l: new_ids_batch(project.pk)), 10)).created_messages

    try:
        assert asyncio.run(scenario()) == 2
    finally:
        batches.stop()
    assert _stored(db, project.pk) == 1


def test_a_project_that_redacts_names_does_not_hold_up_the_batch_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Name redaction (~2 ms a message) runs on a thread of its own: another project's request is
    written while a redacting one is still in the model."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'c.sqlite3'}", home=tmp_path, limits=TEST_LIMITS, embedded_worker=False
    )
    app = create_app(settings)
    migrate.upgrade(app.state.db)
    redacting, plain = make_project(app.state.db, "names"), make_project(app.state.db, "plain")
    with app.state.db.writer() as conn:
        assert projects.set_project_setting(conn, redacting.name, "pii_names", True)
    in_model, let_go = threading.Event(), threading.Event()
    redact = names.redact

    def held_redact(texts: list[str]) -> list[str]:
        in_model.set()
        assert let_go.wait(30)
        return redact(texts)

    monkeypatch.setattr(names, "redact", held_redact)
    body = {"conversation": {"messages": [{"role": "user", "message": "I'm Maria Gonzalez from Barcelona"}]}}
    answers: dict[str, Any] = {}

    def post(project: Project) -> None:
        with TestClient(app) as client:
            answers[project.name] = client.post(
                "/api/v1/log/conversation", json=body, headers={"Authorization": f"Bearer {project.token}"}
            )

    slow = threading.Thread(target=post, args=(redacting,))
    slow.start()
    try:
        assert in_model.wait(30)
        fast = threading.Thread(target=post, args=(plain,))
        fast.start()
        fast.join(20)
        assert not fast.is_alive() and answers[plain.name].status_code == 201
        assert redacting.name not in answers  # still in the model
    finally:
        let_go.set()
        slow.join(30)
        app.state.write_batches.stop()
        app.state.db.dispose()
    assert answers[redacting.name].status_code == 201
    with TestClient(app) as client:
        logged = client.get(
            "/api/v1/conversations/" + answers[redacting.name].json()["data"]["id"],
            headers={"Authorization": f"Bearer {redacting.token}"},
        )
    assert logged.json()["messages"][0]["message"] == "I'm [NAME] from [PLACE]"


def test_a_batch_touches_a_tokens_last_use_once(own_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    db = own_db
    project = make_project(db, "batches")  # its tokens were never used: the first request records a use
    touches: list[int] = []
    touch = projects.touch_token
    monkeypatch.setattr(projects, "touch_token", lambda conn, pk: touches.append(pk) or touch(conn, pk))
    state = SimpleNamespace(db=db, rate_limiter=RateLimiter(0, 0), metrics=None)
    request = SimpleNamespace(app=SimpleNamespace(state=state))
    batches = WriteBatches(db, per_batch=lambda: TokenLookups(db))

    def prepare(lookups: TokenLookups) -> NewIdsBatch:
        return new_ids_batch(authorize(request, project.ingest_token, "ingest", lookups).project_pk)  # type: ignore[arg-type]

    try:
        outcomes = asyncio.run(_behind_a_held_batch(batches, [prepare] * 6))
    finally:
        batches.stop()
    assert [o.created_messages for o in outcomes] == [2] * 6
    assert len(touches) == 1
    with db.reader() as conn:
        assert projects.authenticate(conn, project.ingest_token).last_used_at is not None
