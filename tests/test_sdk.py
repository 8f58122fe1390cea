"""The SDK against real servers: outages, retries, a full queue, shutdown, fork, bad arguments."""

from __future__ import annotations

import gzip
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson
import pytest
import uvicorn
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conftest import RunningServer, ServeProcess, free_port, make_project
from convolens import Client
from convolens.store import conversation_reads, projects
from convolens.store.db import Database
from convolens.store.tables import client_report, message


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(tmp_path / "home")
    server.start()
    yield server
    server.stop()


def stored_ids(db: Database) -> list[str]:
    with db.reader() as conn:
        return list(conn.execute(select(message.c.id)).scalars())


def test_outage_loses_nothing_and_never_blocks_the_app(serve: ServeProcess, tmp_path: Path) -> None:
    client = Client(
        serve.token,
        base_url=serve.base_url,
        spool_dir=tmp_path / "spool",
        flush_interval=0.05,
        max_retries=2,
        timeout=5,
    )
    logged: list[str] = []
    latencies: list[float] = []
    for i in range(10_000):
        if i == 3_000:
            serve.kill()  # mid-stream, possibly mid-batch
        if i == 7_000:
            serve.start()
        started = time.perf_counter()
        message_id = client.log_message(f"conv-{i % 250}", "user" if i % 2 == 0 else "assistant", f"message {i}")
        latencies.append(time.perf_counter() - started)
        logged.append(message_id)
        if i % 100 == 0:
            time.sleep(0.01)  # an app doing other work between calls
    assert client.flush(120), client.stats
    stats = client.stats
    client.shutdown(5)

    ids = stored_ids(serve.db())
    assert len(ids) == 10_000 and set(ids) == set(logged)  # every message, exactly once
    assert stats["dropped"] == 0 and stats["sent"] == 10_000
    assert stats["spooled"] > 0 and stats["replayed"] > 0  # the outage really went through the spool
    # The app never waited on the network: no call came close to the 5 s HTTP timeout.
    assert max(latencies) < 1.0, max(latencies)
    assert statistics.median(latencies) < 0.005


class FlakyServer:
    """A stub ingest endpoint answering with the given statuses first, then 202; it records every request."""

    def __init__(self, statuses: list[int], retry_after: str | None = None) -> None:
        self.statuses = list(statuses)
        self.retry_after = retry_after
        self.requests: list[tuple[float, int, dict]] = []

        async def ingest(request: Request) -> Response:
            raw = await request.body()
            if request.headers.get("content-encoding") == "gzip":
                raw = gzip.decompress(raw)
            body = orjson.loads(raw)
            status = self.statuses.pop(0) if self.statuses else 202
            self.requests.append((time.monotonic(), status, body))
            headers = {"Retry-After": self.retry_after} if self.retry_after and status in (429, 503) else {}
            return JSONResponse({"detail": "busy"}, status_code=status, headers=headers)

        self.app = Starlette(routes=[Route("/api/v1/ingest", ingest, methods=["POST"])])
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> FlakyServer:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def test_429_and_503_are_retried_honouring_retry_after(tmp_path: Path) -> None:
    with FlakyServer([429, 503], retry_after="1") as stub:
        client = Client("cl_test", base_url=stub.url, spool_dir=tmp_path, flush_interval=0.05, max_retries=5)
        client.log_message("c", "user", "hello")
        assert client.flush(30)
        client.shutdown(2)
    times = [t for t, _, _ in stub.requests]
    assert [s for _, s, _ in stub.requests] == [429, 503, 202]
    assert times[1] - times[0] >= 0.9 and times[2] - times[1] >= 0.9  # waited as told
    delivered = stub.requests[-1][2]
    assert [e["content"] for e in delivered["events"]] == ["hello"]
    assert delivered["client"]["retries"] == 2  # the retries are reported to the server
    assert client.stats["retries"] == 2 and client.stats["sent"] == 1


def test_a_422_drops_only_the_events_it_names(sqlite_server: RunningServer, tmp_path: Path) -> None:
    project = make_project(sqlite_server.db)
    client = Client(
        project.token, base_url=sqlite_server.base_url, spool_dir=tmp_path, batch_size=10_000, flush_interval=30
    )
    client.log_message("c", "user", "good 1")
    # A message the client cannot judge but the server refuses: an id over the server's limit arrives
    # through put_events, the raw path integrations use.
    client.put_events([{"type": "message", "conversation_id": "c", "id": "x" * 300, "role": "user", "content": "bad"}])
    client.log_message("c", "user", "good 2")
    assert client.flush(30)
    with sqlite_server.db.reader() as conn:
        view = conversation_reads.get_conversation(conn, project.pk, "c")
    assert [m.content for m in view.messages] == ["good 1", "good 2"]
    assert client.stats["rejected"] == 1 and client.stats["sent"] == 2
    client.shutdown(2)


def test_a_full_queue_drops_oldest_counts_and_reports(sqlite_server: RunningServer, tmp_path: Path) -> None:
    project = make_project(sqlite_server.db)
    # The sender only wakes for a full batch or after 30 s, so the queue fills while we log.
    client = Client(
        project.token,
        base_url=sqlite_server.base_url,
        spool_dir=tmp_path,
        max_queue_size=10,
        batch_size=1_000,
        flush_interval=30,
    )
    for i in range(50):
        client.log_message("c", "user", f"m{i}")
    assert client.stats["queued"] == 10 and client.stats["dropped"] == 40
    assert client.flush(30)
    with sqlite_server.db.reader() as conn:
        view = conversation_reads.get_conversation(conn, project.pk, "c")
        reported = conn.execute(
            select(func.sum(client_report.c.dropped)).where(client_report.c.project_pk == project.pk)
        ).scalar()
    assert [m.content for m in view.messages] == [f"m{i}" for i in range(40, 50)]  # the newest survive
    assert reported == 40
    client.shutdown(2)


def test_shutdown_is_bounded_with_the_server_down_and_the_spool_replays_later(
    sqlite_server: RunningServer, tmp_path: Path
) -> None:
    project = make_project(sqlite_server.db)
    dead = f"http://127.0.0.1:{free_port()}"
    spool = tmp_path / "spool"
    client = Client(project.token, base_url=dead, spool_dir=spool, flush_interval=0.05, timeout=5)
    ids = [client.log_message("later", "user", f"m{i}") for i in range(100)]
    started = time.monotonic()
    client.shutdown(timeout=1.0)
    assert time.monotonic() - started < 2.5
    assert list(spool.glob("*.json.gz"))  # nothing lost: it waits on disk

    # The next run of the app (same spool directory) delivers it once the server is reachable.
    revived = Client(project.token, base_url=sqlite_server.base_url, spool_dir=spool, flush_interval=0.05)
    revived.log_message("later", "user", "after restart")
    deadline = time.monotonic() + 30
    while list(spool.glob("*.json.gz")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert revived.flush(30)
    revived.shutdown(5)
    with sqlite_server.db.reader() as conn:
        view = conversation_reads.get_conversation(conn, project.pk, "later")
    assert {m.id for m in view.messages} >= set(ids)
    assert len(view.messages) == 101


def test_bad_arguments_never_raise(sqlite_server: RunningServer, tmp_path: Path) -> None:
    project = make_project(sqlite_server.db)
    client = Client(project.token, base_url=sqlite_server.base_url, spool_dir=tmp_path, flush_interval=0.05)
    assert client.log_message("c", "wizard", "x") is None
    assert client.log_message("", "user", "x") is None
    assert client.rate("c", 5) is None
    assert client.log_conversation(["not a mapping"]) is None
    assert client.event("c" * 500, "Checkout") is None
    assert client.stats["invalid"] == 5
    # Oversized and odd values are repaired rather than refused.
    long_id = client.log_message("c", "user", "y" * 200_000, metadata={"obj": object(), "n": 1})
    assert long_id and client.stats["truncated"] == 1
    # A tool name with control characters (which the server refuses) is cleaned, not sent as it is.
    client.log_message("c", "tool", "42", name="get\tweather\n")
    client.log_message("c", "tool", "43", name="\x00\x01")
    assert client.flush(30)
    with sqlite_server.db.reader() as conn:
        view = conversation_reads.get_conversation(conn, project.pk, "c")
    assert len(view.messages[0].content) == 100_000 and view.messages[0].metadata["n"] == 1
    assert [m.name for m in view.messages[1:]] == ["getweather", None]
    client.shutdown(2)


def test_client_api_round_trip(sqlite_server: RunningServer, tmp_path: Path) -> None:
    project = make_project(sqlite_server.db)
    with Client(project.token, base_url=sqlite_server.base_url, spool_dir=tmp_path, flush_interval=0.05) as client:
        cid = client.log_conversation(
            [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello", "model": "gpt-4o", "output_tokens": 2},
            ],
            user_id="u1",
            tenant_id="t1",
            metadata={"plan": "pro"},
        )
        reply = client.log_message(cid, "assistant", "anything else?")
        client.rate(cid, -1, message_id=reply)
        client.rate(cid, 1)  # the last reply, i.e. the same message, now rated up
        client.feedback(cid, "slow")
        client.event(cid, "Checkout", {"sku": "a1"})
        client.conversation(cid, metadata={"stage": "paid"})
        assert client.flush(30)
    with sqlite_server.db.reader() as conn:
        view = conversation_reads.get_conversation(conn, project.pk, cid)
    assert (view.user_id, view.tenant_id, view.feedback) == ("u1", "t1", "slow")
    assert view.metadata == {"plan": "pro", "stage": "paid"}
    assert [(m.role, m.kind, m.content) for m in view.messages] == [
        ("system", "message", "be brief"),
        ("user", "message", "hi"),
        ("assistant", "message", "hello"),
        ("assistant", "message", "anything else?"),
        ("system", "event", "Checkout"),
    ]
    assert view.messages[2].model == "gpt-4o" and view.messages[3].rating == 1
    assert view.messages[4].metadata == {"sku": "a1"}
    assert datetime(2020, 1, 1) < view.messages[0].created_at


_FORKING_APP = """
import os, sys
from convolens import Client
client = Client(sys.argv[1], base_url=sys.argv[2], spool_dir=sys.argv[3], flush_interval=0.05)
client.log_message("parent", "user", "before fork")
assert client.flush(30)
pid = os.fork()
if pid == 0:  # the child: its own queue and sender thread, ids from its own prefix
    code = 1
    try:
        client.log_message("child", "user", "from the child")
        code = 0 if client.flush(30) else 2
    finally:
        os._exit(code)
client.log_message("parent", "user", "after fork")
assert client.flush(30)
_, status = os.waitpid(pid, 0)
client.shutdown(2)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_fork_safety(sqlite_server: RunningServer, tmp_path: Path) -> None:
    # The app forks in a process of its own: forking this one, whose threads run the test server and
    # its enrichment (numpy, BLAS), could deadlock in BLAS's fork handler, which is not the SDK's doing.
    project = make_project(sqlite_server.db)
    app = subprocess.run(
        [sys.executable, "-c", _FORKING_APP, project.token, sqlite_server.base_url, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert app.returncode == 0, app.stderr
    with sqlite_server.db.reader() as conn:
        parent = conversation_reads.get_conversation(conn, project.pk, "parent")
        child = conversation_reads.get_conversation(conn, project.pk, "child")
    assert [m.content for m in parent.messages] == ["before fork", "after fork"]
    assert [m.content for m in child.messages] == ["from the child"]


def test_revoked_token_batches_are_dropped_and_counted(sqlite_server: RunningServer, tmp_path: Path) -> None:
    project = make_project(sqlite_server.db)
    with sqlite_server.db.writer() as conn:
        projects.revoke_token(conn, project.token[:11])
    client = Client(project.token, base_url=sqlite_server.base_url, spool_dir=tmp_path, flush_interval=0.05)
    client.log_message("c", "user", "x")
    assert client.flush(10)
    assert client.stats["rejected"] == 1 and client.stats["sent"] == 0
    client.shutdown(2)
