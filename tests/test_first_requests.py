"""The first request that reaches each part of the API costs what the next one does.

FastAPI builds an included router's routes (their pydantic schemas) when a request first reaches it: the
users router took 112 ms of CPU in its first request, under the interpreter lock that every other request
of the process waits for (9 % of the API's lock in a hostile phase of bench/abuse.py). The app builds
them at start-up (server/app.py, ``_build_routes_now``).
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

from starlette.testclient import TestClient

from convolens.config import Settings
from convolens.server.app import create_app

# One GET into each router the API and the dashboard include (a 401, 404 or 405 still routes the request).
PATHS = (
    "/api/v1/conversations",
    "/api/v1/conversations/some-id",
    "/api/v1/users/some-user",
    "/api/v1/topics",
    "/api/v1/metrics",
    "/api/v1/alerts",
    "/api/v1/evaluations",
    "/login",
)


def _cpu_ms(client: TestClient, path: str) -> float:
    started = time.process_time()  # the app runs on the client's portal thread: this process's CPU
    client.get(path)
    return (time.process_time() - started) * 1000


def test_the_first_request_into_each_router_costs_about_what_the_second_does(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", home=tmp_path, embedded_worker=False)
    with TestClient(create_app(settings)) as client:
        client.get("/healthz")  # the client's own first-use costs, outside what is measured
        # The collector off while timing: a full collection of the suite's heap (the objects of the ~1,400
        # tests before, in this process) once landed in a first request and read 808 ms against 4 ms.
        gc.collect()
        gc.disable()
        try:
            first = {path: _cpu_ms(client, path) for path in PATHS}
            again = {path: _cpu_ms(client, path) for path in PATHS}
        finally:
            gc.enable()
    extra = sum(first.values()) - sum(again.values())
    # Before: ~150 ms more in the first requests (users 112 ms, conversations 22 ms, dashboard 10 ms).
    assert extra < 40, {path: (round(first[path], 1), round(again[path], 1)) for path in PATHS}
