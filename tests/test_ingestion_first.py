"""Ingestion first on SQLite: an API process announces its ingest requests from translation to commit, so
that the embedded worker's writes wait for a burst to pause (store/writer/process_lock.py, WritesComing).
Announcing only while waiting for the lock and writing left gaps between a burst's commits, and the worker
took a turn (and a batch's CPU) at each one it saw."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import make_project, running_server
from convolens.server import pipeline
from convolens.store import migrate
from convolens.store.db import Database
from lock_support import announced


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Iterator[tuple[Database, str]]:
    path = tmp_path / "convolens.sqlite3"
    database = Database(f"sqlite:///{path}")
    migrate.upgrade(database)
    yield database, f"{path}-writelock"
    database.dispose()


def test_writes_are_announced_while_any_request_is_on_its_way(sqlite_file: tuple[Database, str]) -> None:
    database, lock_path = sqlite_file
    assert not announced(lock_path)
    first, second = database.writes_coming(), database.writes_coming()
    first.__enter__()
    assert announced(lock_path)
    entered = threading.Event()
    leave = threading.Event()

    def other_request() -> None:
        with second:
            entered.set()
            leave.wait(10)

    thread = threading.Thread(target=other_request)
    thread.start()
    assert entered.wait(10)
    first.__exit__(None, None, None)
    assert announced(lock_path), "the first request's end dropped the second's announcement"
    leave.set()
    thread.join(10)
    assert not announced(lock_path)


def test_every_door_announces_its_request_before_the_write(
    sqlite_file: tuple[Database, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen from inside the pipeline, at the scrubbing step (before the write waits for its lock): the
    native batch (``pipeline.run``), Context's log (``pipeline.new_ids``, the batch thread) and Context's
    thread append (``pipeline.run`` with the door's own write)."""
    database, lock_path = sqlite_file
    seen: list[bool] = []
    real_scrub = pipeline.scrub
    monkeypatch.setattr(
        pipeline, "scrub", lambda admitted: (seen.append(announced(lock_path)), real_scrub(admitted))[1]
    )
    project = make_project(database)
    with (
        running_server(database, tmp_path / "home", embedded_worker=False) as server,
        server.client(project.token) as api,
    ):
        native = {
            "events": [
                {"type": "conversation", "id": "c-native", "user_id": "u1"},
                {"type": "message", "conversation_id": "c-native", "id": "m1", "role": "user", "content": "Hi there"},
            ]
        }
        assert api.post("/api/v1/ingest", json=native).status_code == 202
        logged = {"conversation": {"messages": [{"role": "user", "message": "Where is my invoice?"}]}}
        response = api.post("/api/v1/log/conversation", json=logged)
        assert response.status_code == 201, response.text
        thread = {"conversation": {"id": "t-1", "messages": [{"role": "user", "message": "And the refund?"}]}}
        response = api.post("/api/v1/log/conversation/thread", json=thread)
        assert response.status_code == 201, response.text
    assert seen == [True, True, True]
    assert not announced(lock_path)
