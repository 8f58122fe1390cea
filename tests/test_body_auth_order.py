"""A write request's token is checked before its body is read, and a large body costs a worker thread,
not the event loop (server/asgi/write_admission.py, server/asgi/body_limits.py, server/asgi/fast_path.py).

The server runs as its own process (``convolens serve``, default limits: 10 MB bodies inflating to
50 MB), so that its CPU time, read from ``/proc/<pid>/stat``, is the server's alone.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import socket
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi.routing import APIRoute

from conftest import CLI, ServeProcess
from convolens.server import api

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux's /proc/<pid>/stat")


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _gzip_events(event: dict, count: int) -> bytes:
    """``{"events": [event, …]}`` with ``count`` copies, gzipped as it is built (a bomb: tiny when
    compressed, ``count`` times the event when inflated)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    one = orjson.dumps(event)
    block = b",".join([one] * 1000)
    parts = [packer.compress(b'{"events": [' + one)]
    for _ in range((count - 1) // 1000):
        parts.append(packer.compress(b"," + block))
    parts.append(packer.compress(b"," + b",".join([one] * ((count - 1) % 1000))) if (count - 1) % 1000 else b"")
    parts.append(packer.compress(b"]}") + packer.flush())
    return b"".join(parts)


# ~45 MB of events when inflated (under the 50 MiB limit), ~140 KB on the wire.
BIG_EVENT = {"type": "message", "conversation_id": "c", "id": "m", "role": "user", "content": "x" * 1000}
BOMB = _gzip_events(BIG_EVENT, 43_000)
# Over max_batch_events (1000) many times over: 25 MB of small events, each cheap to parse, dear to validate.
SMALL_EVENT = {"type": "message", "conversation_id": "c", "id": "m", "role": "user", "content": "x"}
CROWD = _gzip_events(SMALL_EVENT, 300_000)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    serve = ServeProcess(tmp_path_factory.mktemp("preauth"), extra_env={"CONVOLENS_EMBEDDED_WORKER": "0"})
    serve.start()
    yield serve
    serve.stop()


def _post(serve: ServeProcess, token: str, body: bytes, path: str = "/api/v1/ingest") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Content-Encoding": "gzip"}
    return httpx.post(serve.base_url + path, content=body, headers=headers, timeout=60)


def test_a_bomb_with_a_bad_token_costs_the_server_nothing_of_its_body(served: ServeProcess) -> None:
    assert len(BOMB) < 200_000 and len(zlib.decompress(BOMB, 16 + zlib.MAX_WBITS)) > 40_000_000
    assert served.process is not None
    before = _cpu_seconds(served.process.pid)
    for token in ("cl_" + "A" * 43, "not-even-a-token", served.token[:-2] + "xx"):
        answer = _post(served, token, BOMB)
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"].startswith("Bearer")
    # Inflating, parsing and validating one such body took seconds of the server's CPU.
    assert _cpu_seconds(served.process.pid) - before < 0.2


def _api_write_routes() -> list[tuple[str, str]]:
    """Every POST/PUT/PATCH route of every module of convolens.server.api, path parameters filled in."""
    found = set()
    for module_info in pkgutil.iter_modules(api.__path__):
        router = getattr(importlib.import_module(f"{api.__name__}.{module_info.name}"), "router", None)
        for route in getattr(router, "routes", ()):
            if isinstance(route, APIRoute):
                path = re.sub(r"\{[^}]+\}", "x", route.path)
                found |= {(method, path) for method in route.methods & {"POST", "PUT", "PATCH"}}
    return sorted(found)


def test_every_api_write_route_refuses_a_bad_token_before_the_body(served: ServeProcess) -> None:
    routes = _api_write_routes()
    assert ("PATCH", "/api/v1/log/conversation/thread/x") in routes and len(routes) >= 9
    assert served.process is not None
    before = _cpu_seconds(served.process.pid)
    headers = {"Authorization": "Bearer cl_" + "B" * 43, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    with httpx.Client(base_url=served.base_url, headers=headers, timeout=60) as client:
        statuses = {(method, path): client.request(method, path, content=BOMB).status_code for method, path in routes}
    assert set(statuses.values()) == {401}, statuses
    assert _cpu_seconds(served.process.pid) - before < 0.3


def test_a_token_without_the_scope_is_refused_before_the_body(served: ServeProcess) -> None:
    assert served.process is not None
    token = _create_token(served, "read")
    before = _cpu_seconds(served.process.pid)
    answer = _post(served, token, BOMB)
    assert answer.status_code == 403 and "ingest" in answer.json()["detail"]
    assert _cpu_seconds(served.process.pid) - before < 0.2


def _create_token(serve: ServeProcess, scope: str) -> str:
    return subprocess.run(
        [*CLI, "tokens", "create", "--project", "sdk", "--scope", scope],
        env=serve.env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_an_over_count_batch_is_refused_before_it_is_validated(served: ServeProcess) -> None:
    assert served.process is not None
    before = _cpu_seconds(served.process.pid)
    answer = _post(served, served.token, CROWD)
    spent = _cpu_seconds(served.process.pid) - before
    assert answer.status_code == 422
    assert [e["field"] for e in answer.json()["errors"]] == ["events"]
    assert "300000 events" in answer.json()["errors"][0]["msg"]
    # Inflating and parsing 25 MB is the cost; validating 300,000 events first cost several times more.
    assert spent < 0.6, spent


def test_an_over_count_batch_is_counted_in_the_child_not_under_the_api_interpreter_lock(served: ServeProcess) -> None:
    """orjson holds the API process's interpreter lock while it builds a body's objects, and no other
    request of the process moves meanwhile (bench/abuse.py: the over-count class was a third of the API's
    lock time under attack). A large body with far more objects than its bound allows is counted in the
    API's child (server/scrubbing_process.py) and not parsed in the API process at all."""
    body = orjson.dumps({"events": [SMALL_EVENT] * 50_000})  # 3.4 MB, uncompressed: parsing is its cost
    started = time.process_time()
    for _ in range(10):
        orjson.loads(body)
    parsing = time.process_time() - started
    headers = {"Authorization": f"Bearer {served.token}", "Content-Type": "application/json"}
    assert served.process is not None
    with httpx.Client(base_url=served.base_url, headers=headers, timeout=60) as client:
        first = client.post("/api/v1/ingest", content=body)  # starts the child
        before = _cpu_seconds(served.process.pid)
        answers = [client.post("/api/v1/ingest", content=body) for _ in range(10)]
        spent = _cpu_seconds(served.process.pid) - before
    for answer in (first, *answers):
        assert answer.status_code == 422
        assert [(e["field"], e["msg"]) for e in answer.json()["errors"]] == [
            ("events", "has 50000 events; the limit is 1000")
        ]
    assert spent < parsing / 2, f"API process CPU {spent:.3f} s for 10 requests; parsing them {parsing:.3f} s"


def test_an_over_count_context_conversation_is_refused_before_it_is_validated(served: ServeProcess) -> None:
    message = {"role": "user", "message": "x"}
    body = orjson.dumps({"conversation": {"messages": [message] * 150_000}})  # the limit is 2000
    assert served.process is not None
    before = _cpu_seconds(served.process.pid)
    answer = httpx.post(
        served.base_url + "/api/v1/log/conversation",
        content=body,
        headers={"Authorization": f"Bearer {served.token}", "Content-Type": "application/json"},
        timeout=60,
    )
    spent = _cpu_seconds(served.process.pid) - before
    assert answer.status_code == 422
    assert [e["field"] for e in answer.json()["errors"]] == ["conversation.messages"]
    assert spent < 0.3, spent


def test_the_event_loop_answers_while_a_large_body_is_processed(served: ServeProcess) -> None:
    """A valid token's 45 MB body is inflated and parsed on worker threads: ``/healthz`` requests sent
    after it keep being answered before its own answer comes (on the event loop, none were)."""
    host, port = served.base_url.removeprefix("http://").split(":")
    head = (
        f"POST /api/v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {served.token}\r\n"
        f"Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {len(BOMB)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=60) as large, httpx.Client(timeout=60) as client:
        large.sendall(head + BOMB)
        large.setblocking(False)
        answered_before = 0
        while True:
            try:
                reply = large.recv(4096)
                break
            except BlockingIOError:
                pass
            assert client.get(served.base_url + "/healthz").status_code == 200
            answered_before += 1
    assert reply.startswith(b"HTTP/1.1 422")  # 43,000 events: over the count, refused once parsed
    assert answered_before >= 3
