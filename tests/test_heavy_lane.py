"""Requests with a lot of text are scrubbed and written in a lane of their own (server/offload.py), so
ordinary requests never wait behind them: a heavy request held up does not hold up a light one."""

from __future__ import annotations

import resource
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait

import pytest
from sqlalchemy import select

from conftest import RunningServer, make_project
from convolens.enrich.pii import EMAIL_DUMMY, scrub
from convolens.server import offload
from convolens.store.tables import message


def _conversation(text: str) -> dict:
    return {"conversation": {"messages": [{"role": "user", "message": text}, {"role": "assistant", "message": "ok"}]}}


@pytest.mark.parametrize(
    "route,heavy_body",
    [
        ("/api/v1/log/conversation", _conversation("word " * 20_000)),
        ("/api/v1/log/conversation/upsert", _conversation("word " * 20_000)),
        ("/api/v1/log/conversation/thread", _conversation("word " * 20_000)),
        (
            "/api/v1/ingest",
            {"events": [{"type": "message", "conversation_id": "big", "role": "user", "content": "w " * 40_000}]},
        ),
    ],
)
def test_a_heavy_request_does_not_hold_up_a_light_one(
    sqlite_server: RunningServer, route: str, heavy_body: dict
) -> None:
    project = make_project(sqlite_server.db)
    release = threading.Event()
    blocker = offload._HEAVY.submit(release.wait, 60)  # the heavy lane is busy until released
    try:
        with sqlite_server.client(project.token) as client, ThreadPoolExecutor(1) as pool:
            heavy = pool.submit(client.post, route, json=heavy_body)
            light = client.post("/api/v1/log/conversation", json=_conversation("How do I reset my password?"))
            assert light.status_code == 201
            # The heavy one waits for its lane (held above) however long it takes; the light one never used it.
            assert not wait([heavy], timeout=1.5).done
            release.set()
            assert heavy.result(60).status_code in (201, 202)
    finally:
        release.set()
        blocker.result(60)


# Texts whose scrubbing is slow Python (every "1 1" is a card candidate checked one by one), with PII.
_CRAFTED = ["1 " * 30_000 + "write to ann.lee@example.com", "1-" * 30_000 + " or call ann.lee@example.org"]


def _heavy_with_pii(route: str) -> dict:
    if route == "/api/v1/ingest":
        return {"events": [
            {"type": "message", "conversation_id": f"crafted-{uuid.uuid4().hex}", "role": "user", "content": text}
            for text in _CRAFTED
        ]}  # fmt: skip
    return {"conversation": {"messages": [{"role": "user", "message": text} for text in _CRAFTED]}}


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_ROUTES = ["/api/v1/log/conversation", "/api/v1/log/conversation/upsert", "/api/v1/log/conversation/thread"]


@pytest.mark.parametrize("route", [*_ROUTES, "/api/v1/ingest"])
def test_a_heavy_request_is_scrubbed_outside_the_api_process(sqlite_server: RunningServer, route: str) -> None:
    """On the heavy lane's thread, scrubbing held the interpreter lock every other request of the API
    process needs; it runs in a child process instead (server/scrubbing_process.py). The server runs
    in a thread of this test process, so this process's CPU seconds are the API process's."""
    started = time.thread_time()
    for text in _CRAFTED:
        scrub(text)
    scrubbing = time.thread_time() - started
    project = make_project(sqlite_server.db)
    with sqlite_server.client(project.token) as client:
        assert client.post(route, json=_heavy_with_pii(route)).status_code in (201, 202)  # the child is up
        before = _process_cpu()
        assert client.post(route, json=_heavy_with_pii(route)).status_code in (201, 202)
        used = _process_cpu() - before
    with sqlite_server.db.reader() as conn:
        stored = conn.execute(select(message.c.content).where(message.c.project_pk == project.pk)).scalars().all()
    assert len(stored) == (2 if route.endswith("upsert") else 4)  # the same upsert twice appends nothing
    assert all(EMAIL_DUMMY in text and "ann.lee@" not in text for text in stored)
    # Parsing, validating, pickling and writing ~120 KB stay here: a small part of scrubbing's cost.
    assert used < scrubbing / 3, f"API process CPU {used:.3f} s, scrubbing alone {scrubbing:.3f} s"
