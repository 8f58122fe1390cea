"""Concurrent identical reads share one trip to the database, never one that started before them
(store/shared_reads.py): what lets the token look-up of concurrent requests be shared without a revoked token
being accepted by a request that arrived after the revocation."""

from __future__ import annotations

import threading
import time

from conftest import RunningServer, make_project
from convolens.store import projects
from convolens.store.shared_reads import SharedReads


class _Store:
    """A value that reads can be held on: each read returns the value as it was when the read started."""

    def __init__(self) -> None:
        self.value = 0
        self.reads = 0
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def read(self) -> int:
        self.reads += 1
        seen = self.value
        self.started.set()
        assert self.gate.wait(10)
        return seen


def _in_thread(target, results: list, *args) -> threading.Thread:  # type: ignore[no-untyped-def]
    thread = threading.Thread(target=lambda: results.append(target(*args)))
    thread.start()
    return thread


def test_callers_arriving_during_a_read_share_the_next_one_not_that_one() -> None:
    shared, store = SharedReads(), _Store()
    store.gate.clear()
    first: list[int] = []
    leader = _in_thread(shared.read, first, "k", store.read)
    assert store.started.wait(5)  # the first read is running, and saw value 0
    store.value = 1  # a commit after that read started: later callers must see it
    later: list[int] = []
    followers = [_in_thread(shared.read, later, "k", store.read) for _ in range(5)]
    time.sleep(0.3)  # all five queued behind the running read
    store.gate.set()
    for thread in [leader, *followers]:
        thread.join(5)
    assert first == [0]
    assert later == [1] * 5  # none got the read that started before it arrived
    assert store.reads == 2  # and the five shared one


def test_other_keys_do_not_wait_and_a_lone_caller_reads_at_once() -> None:
    shared, store = SharedReads(), _Store()
    store.gate.clear()
    held: list[int] = []
    blocked = _in_thread(shared.read, held, "a", store.read)
    assert store.started.wait(5)
    assert shared.read("b", lambda: 42) == 42  # not behind key "a"
    store.gate.set()
    blocked.join(5)
    assert shared.read("a", lambda: 7) == 7  # nothing running: a read of its own


def test_a_follower_whose_shared_read_failed_reads_for_itself() -> None:
    shared = SharedReads()
    running, release = threading.Event(), threading.Event()

    def slow() -> str:
        running.set()
        assert release.wait(10)
        return "first"

    calls: list[str] = []

    def failing_then_fine() -> str:
        calls.append("read")
        if len(calls) == 1:
            assert release2.wait(10)
            raise ConnectionError("lost")
        return "own"

    release2 = threading.Event()
    out: list[str] = []
    t0 = _in_thread(shared.read, out, "k", slow)
    assert running.wait(5)
    errors: list[BaseException] = []

    def lead_next() -> None:
        try:
            shared.read("k", failing_then_fine)
        except ConnectionError as exc:
            errors.append(exc)

    t1 = threading.Thread(target=lead_next)
    t1.start()
    time.sleep(0.05)
    t2 = _in_thread(shared.read, out, "k", failing_then_fine)  # joins t1's round
    time.sleep(0.05)
    release.set()
    time.sleep(0.05)
    release2.set()
    for t in (t0, t1, t2):
        t.join(5)
    assert len(errors) == 1  # the leader sees its own error
    assert sorted(out) == ["first", "own"]  # the follower read again, alone
    assert calls == ["read", "read"]


def test_a_revoked_token_is_refused_by_the_next_request_under_concurrent_load(server: RunningServer) -> None:
    project = make_project(server.db, "shared")
    body = {"conversation": {"messages": [{"role": "user", "message": "hi"}]}}
    stop = threading.Event()
    statuses: list[int] = []

    def hammer() -> None:
        with server.client(project.ingest_token) as client:
            while not stop.is_set():
                statuses.append(client.post("/api/v1/log/conversation", json=body).status_code)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    with server.db.writer() as conn:
        assert projects.revoke_token(conn, project.ingest_token[:11]) == 1
    with server.client(project.ingest_token) as client:
        after = client.post("/api/v1/log/conversation", json=body)
    stop.set()
    for t in threads:
        t.join(10)
    assert after.status_code == 401  # the first request made after the revocation committed
    assert statuses.count(201) > 6  # the look-ups before it were shared and accepted
