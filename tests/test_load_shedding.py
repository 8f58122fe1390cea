"""A process past its bound of write requests in flight answers 503 at once (server/asgi/load_shedding.py),
and a token is not rate limited unless the operator asks for it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest

from conftest import RunningServer, ServeProcess, make_project, running_server
from convolens.config import Limits
from convolens.store import migrate
from convolens.store.db import Database

BODY = orjson.dumps(
    {"conversation": {"messages": [{"role": "user", "message": "hi"}, {"role": "assistant", "message": "hello"}]}}
)
HEADERS = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def small_bound_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("shedding")
    db = Database(f"sqlite:///{home / 'convolens.sqlite3'}")
    migrate.upgrade(db)
    with running_server(db, home, Limits(max_writes_in_flight=2)) as running:
        yield running
    db.dispose()


def _wait_for(condition: Callable[[], bool]) -> None:
    """Poll a condition the server's threads will make true (not a sleep standing in for an event)."""
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.005)


def test_past_its_bound_a_process_sheds_writes_with_503_and_retry_after(small_bound_server: RunningServer) -> None:
    server = small_bound_server
    token = make_project(server.db).token
    in_flight = server.app.state.writes_in_flight

    def post() -> httpx.Response:
        with server.client(token) as client:
            return client.post("/api/v1/log/conversation", content=BODY, headers=HEADERS)

    with ThreadPoolExecutor(2) as pool:
        with server.db.writer():  # the writer is busy: the admitted requests wait for it, in flight
            held = [pool.submit(post) for _ in range(2)]
            _wait_for(lambda: in_flight.count == 2)
            refused = post()
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert "in flight" in refused.json()["detail"]
            assert not any(f.done() for f in held)
        assert [f.result().status_code for f in held] == [201, 201]  # the writer free again: written
    assert in_flight.count == 0
    assert post().status_code == 201


def test_a_refused_token_does_not_count_against_the_bound(small_bound_server: RunningServer) -> None:
    server = small_bound_server
    with server.client("cl_" + "x" * 43) as client:
        answers = [client.post("/api/v1/log/conversation", content=BODY, headers=HEADERS) for _ in range(3)]
    assert [a.status_code for a in answers] == [401] * 3
    assert server.app.state.writes_in_flight.count == 0


def test_by_default_one_token_is_not_throttled(tmp_path: Path) -> None:
    """An app logging one conversation a request, 800 of them as fast as 8 connections go (several
    hundred a second, on its own process): every one is stored. The old default, 100 a second per
    token with a burst of 200, refused some."""
    served = ServeProcess(tmp_path, extra_env={"CONVOLENS_EMBEDDED_WORKER": "0"})
    served.start()
    try:

        def send(count: int) -> list[int]:
            with httpx.Client(base_url=served.base_url, headers={"Authorization": f"Bearer {served.token}"}) as client:
                return [
                    client.post("/api/v1/log/conversation", content=BODY, headers=HEADERS).status_code
                    for _ in range(count)
                ]

        with ThreadPoolExecutor(8) as pool:
            statuses = [s for batch in pool.map(send, [100] * 8) for s in batch]
    finally:
        served.stop()
    assert statuses == [201] * 800
