"""Requests with a lot of text are scrubbed and written in a lane of their own (server/offload.py), so
ordinary requests never wait behind them: a heavy request held up does not hold up a light one."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait

import pytest

from conftest import RunningServer, make_project
from convolens.server import offload


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
