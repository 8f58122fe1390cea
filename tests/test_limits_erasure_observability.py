"""Rate limits and timeouts, erasure of an end user, and the server's own logs and metrics."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import update

from conftest import CLI, RunningServer, make_project, running_server
from convolens import Client
from convolens.config import Limits
from convolens.schemas.ingest import IngestBatch
from convolens.store import conversation_reads, migrate
from convolens.store.db import Database
from convolens.store.ingest import apply_batch
from convolens.store.tables import message
from convolens.timeutil import utcnow


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with a tight rate limit (2 requests/s, burst 3) and a 1 s body timeout."""
    home = tmp_path_factory.mktemp("strict")
    db = Database(f"sqlite:///{home / 'convolens.sqlite3'}")
    migrate.upgrade(db)
    with running_server(db, home, Limits(rate_limit_per_second=2, rate_limit_burst=3, body_timeout_seconds=1)) as s:
        yield s
    db.dispose()


def test_rate_limit_is_per_token_with_retry_after(strict_server: RunningServer) -> None:
    a = make_project(strict_server.db, "a")
    b = make_project(strict_server.db, "b")
    with strict_server.client(a.token) as client:
        statuses = [client.get("/api/v1/conversations").status_code for _ in range(6)]
        assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]
        limited = client.get("/api/v1/conversations")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert "rate limit" in limited.json()["detail"]
    with strict_server.client(b.token) as other:  # another token has its own bucket
        assert other.get("/api/v1/conversations").status_code == 200
    time.sleep(1.1)
    with strict_server.client(a.token) as client:
        assert client.get("/api/v1/conversations").status_code == 200  # refilled


def test_the_sdk_rides_out_a_rate_limit(strict_server: RunningServer, tmp_path: Path) -> None:
    project = make_project(strict_server.db, "sdk")
    client = Client(
        project.token,
        base_url=strict_server.base_url,
        spool_dir=tmp_path,
        batch_size=5,
        flush_interval=0.01,
        max_retries=10,
    )
    ids = [client.log_message("rl", "user", f"m{i}") for i in range(40)]
    assert client.flush(60)
    stats = client.stats
    client.shutdown(2)
    with strict_server.db.reader() as conn:
        view = conversation_reads.get_conversation(conn, project.pk, "rl")
    assert {m.id for m in view.messages} == set(ids)
    assert stats["retries"] > 0 and stats["dropped"] == 0


def test_a_slow_body_gets_408(strict_server: RunningServer) -> None:
    token = make_project(strict_server.db, "slow").token  # without one, the 401 comes before the body
    host, port = strict_server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b'Content-Length: 1000\r\n\r\n{"events": ['
        )
        started = time.monotonic()
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 5


# -- erasure ---------------------------------------------------------------------------------------


def test_erasing_a_user_leaves_no_trace(server: RunningServer) -> None:
    project = make_project(server.db, "gdpr")
    with server.db.writer() as conn:
        from convolens.store import projects

        admin, _ = projects.create_token(conn, project.pk, frozenset({"admin"}))
    with server.client(project.token) as client:
        for i in range(3):
            client.post(
                "/api/v1/log/conversation",
                json={
                    "conversation": {
                        "messages": [
                            {"role": "user", "message": f"my email is alice{i}@example.com"},
                            {"role": "assistant", "message": "noted", "rating": 1},
                        ],
                        "metadata": {"user_id": "alice"},
                    }
                },
            )
        client.post(
            "/api/v1/log/conversation",
            json={
                "conversation": {"messages": [{"role": "user", "message": "bob here"}], "metadata": {"user_id": "bob"}}
            },
        )
        before = {s["name"]: s["data"] for s in client.get("/api/v1/conversations/series/volume").json()["series"]}
        assert sum(before["conversations"].values()) == 4

    with server.client(admin) as client:
        receipt = client.delete("/api/v1/users/alice")
        assert receipt.status_code == 200
        assert receipt.json() == {
            "status": "erased",
            "user_id": "alice",
            "erased": {"end_users": 1, "conversations": 3, "messages": 6, "topic_phrases": 0},
        }
        assert client.delete("/api/v1/users/alice").status_code == 404

    with server.client(project.token) as client:
        listing = client.get("/api/v1/conversations").json()
        assert "alice" not in str(listing) and listing["pagination"]["total_records"] == 1
        after = {s["name"]: s["data"] for s in client.get("/api/v1/conversations/series/volume").json()["series"]}
        assert sum(after["conversations"].values()) == 1 and sum(after["messages"].values()) == 1
        rating = {s["name"]: s["data"] for s in client.get("/api/v1/conversations/series/rating").json()["series"]}
        assert sum(rating["positive"].values()) == 0
    with server.db.reader() as conn:
        from sqlalchemy import select

        from convolens.store.tables import end_user, message

        assert (
            conn.execute(
                select(end_user.c.pk).where(end_user.c.external_id == "alice", end_user.c.project_pk == project.pk)
            ).first()
            is None
        )
        texts = list(conn.execute(select(message.c.content).where(message.c.project_pk == project.pk)).scalars())
        assert texts == ["bob here"]


def test_users_erase_cli(tmp_path: Path) -> None:
    import os
    import subprocess

    env = {**os.environ, "CONVOLENS_HOME": str(tmp_path)}
    env.pop("CONVOLENS_DATABASE_URL", None)
    cli = CLI
    subprocess.run([*cli, "tokens", "create", "--project", "p"], env=env, check=True, capture_output=True)
    db = Database(f"sqlite:///{tmp_path / 'convolens.sqlite3'}")
    from convolens.schemas.ingest import IngestBatch
    from convolens.store.ingest import apply_batch
    from convolens.store.projects import get_project_pk
    from convolens.timeutil import utcnow

    with db.writer() as conn:
        pk = get_project_pk(conn, "p")
        apply_batch(
            conn,
            pk,
            IngestBatch.model_validate(
                {
                    "events": [
                        {"type": "message", "conversation_id": "c", "role": "user", "content": "x", "user_id": "carol"}
                    ]
                }
            ),
            utcnow(),
        )
    out = subprocess.run([*cli, "users", "erase", "--project", "p", "carol"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and orjson.loads(out.stdout)["erased"] == {
        "end_users": 1,
        "conversations": 1,
        "messages": 1,
        "topic_phrases": 0,
    }
    again = subprocess.run([*cli, "users", "erase", "--project", "p", "carol"], env=env, capture_output=True, text=True)
    assert again.returncode == 1 and "no end user" in again.stderr
    db.dispose()


# -- logs and metrics --------------------------------------------------------------------------------


def test_json_logs_with_request_ids_and_no_secrets(tmp_path: Path) -> None:
    """The real `convolens serve`, its log output captured whole."""
    import httpx

    from conftest import ServeProcess

    log_path = tmp_path / "serve.log"
    server = ServeProcess(tmp_path / "home", project="logs", log_level="debug", log_path=log_path)
    server.start()
    token, base = server.token, server.base_url
    try:
        headers = {"Authorization": f"Bearer {token}"}
        ok = httpx.get(
            f"{base}/api/v1/conversations/secret-conv-id?tenant_id=t", headers={**headers, "X-Request-ID": "req-123"}
        )
        httpx.post(
            f"{base}/api/v1/ingest",
            headers=headers,
            json={
                "events": [
                    {"type": "message", "conversation_id": "c", "role": "user", "content": "my password is hunter2"}
                ]
            },
        )
        httpx.post(f"{base}/api/v1/ingest", headers=headers, content=b"{broken hunter2")
        httpx.get(f"{base}/api/v1/conversations", headers={"Authorization": "Bearer cl_wrong-token-value"})
    finally:
        server.stop()
    assert ok.headers["x-request-id"] == "req-123"
    text = log_path.read_text()
    lines = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = [entry for entry in lines if entry["logger"] == "convolens.access"]
    assert len(access) >= 5
    assert any(
        e["request_id"] == "req-123" and e["route"] == "/api/v1/conversations/{conversation_id}" and e["status"] == 404
        for e in access
    )
    assert {e["status"] for e in access} >= {202, 401, 404}
    assert all(len(e["request_id"]) >= 7 and e["duration_ms"] >= 0 for e in access)
    for secret in (token, "cl_wrong-token-value", "hunter2", "secret-conv-id"):
        assert secret not in text


def test_metrics(server: RunningServer) -> None:
    project = make_project(server.db, "metrics")
    with server.client(project.token) as client:
        posted = client.post(
            "/api/v1/ingest",
            json={
                "events": [
                    {"type": "message", "conversation_id": "c", "role": "user", "content": "x"},
                    {"type": "message", "conversation_id": "c", "role": "user", "content": "y"},
                ],
                "client": {"sdk": "test", "dropped": 7, "retries": 2},
            },
        )
        assert posted.status_code == 202, posted.text
    # Two messages the server's worker cannot take (leased far ahead), so that the pending gauge has
    # something to count however fast enrichment is.
    with server.db.writer() as conn:
        batch = IngestBatch.model_validate({"events": [
            {"type": "message", "conversation_id": "held", "role": "user", "content": f"held {i}"} for i in range(2)
        ]})  # fmt: skip
        apply_batch(conn, project.pk, batch, utcnow())
        conn.execute(
            update(message)
            .where(message.c.project_pk == project.pk, message.c.content.like("held %"))
            .values(lease_owner="test", lease_until=utcnow() + timedelta(hours=1))
        )
    deadline = time.monotonic() + 30
    while True:  # the gauge is recounted every few seconds, not on every scrape
        with server.client() as client:
            body = client.get("/metrics").text
        values = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        if values["convolens_enrichment_pending_messages"] >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert values["convolens_ingested_messages_total"] >= 2
    assert values["convolens_client_dropped_events_total"] >= 7
    assert values["convolens_client_retries_total"] >= 2
    assert values["convolens_enrichment_pending_messages"] >= 2
    with server.db.writer() as conn:  # let the worker have them after all
        conn.execute(update(message).where(message.c.lease_owner == "test").values(lease_until=None))
    assert any(
        k.startswith('convolens_http_requests_total{method="POST",route="/api/v1/ingest",status="202"}') for k in values
    )
    assert "convolens_http_request_duration_seconds_bucket" in body
    assert project.name not in body


def test_asyncio_available() -> None:
    # body.py relies on asyncio.wait_for raising the builtin TimeoutError (Python 3.11+).
    async def slow() -> None:
        await asyncio.sleep(1)

    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(slow(), 0.01))
