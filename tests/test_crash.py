"""Crashes and outages: SIGKILL of the API server mid-stream, and a PostgreSQL that goes away.

Acknowledged means stored: every batch that got a 2xx is in the database exactly once, whatever
happened after. With the SDK's spool, every message the app logged arrives exactly once.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from conftest import ServeProcess
from convolens import Client
from convolens.store.db import Database
from convolens.store.tables import conversation, message


def _counts(db: Database, project_prefix_ids: set[str]) -> tuple[int, int]:
    with db.reader() as conn:
        ids = list(conn.execute(select(message.c.id).where(message.c.id.in_(list(project_prefix_ids)))).scalars())
    return len(ids), len(set(ids))


def _consistent_counts(db: Database, conversation_ids: list[str]) -> None:
    """A conversation's message_count matches its rows: no half-applied batch survived a crash."""
    with db.reader() as conn:
        rows = conn.execute(
            select(conversation.c.id, conversation.c.message_count, func.count(message.c.pk))
            .select_from(conversation.outerjoin(message, message.c.conversation_pk == conversation.c.pk))
            .where(conversation.c.id.in_(conversation_ids))
            .group_by(conversation.c.id, conversation.c.message_count)
        ).all()
    for cid, counted, actual in rows:
        assert counted == actual, (cid, counted, actual)


@pytest.fixture
def serve(database_url: str, tmp_path: Path):
    server = ServeProcess(tmp_path / "home", database_url, project=f"crash-{uuid.uuid4().hex[:6]}")
    server.start()
    yield server
    server.stop()


def test_acknowledged_batches_survive_sigkill(serve: ServeProcess) -> None:
    rng = random.Random(7)
    run = uuid.uuid4().hex[:8]
    batches = [
        [
            {
                "type": "message",
                "conversation_id": f"{run}-c{b % 20}",
                "id": f"{run}-b{b}-m{i}",
                "role": "user",
                "content": f"batch {b} message {i}",
            }
            for i in range(25)
        ]
        for b in range(240)
    ]
    acked: set[str] = set()
    pending = list(range(len(batches)))
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(
            base_url=serve.base_url, headers={"Authorization": f"Bearer {serve.token}"}, timeout=5
        ) as client:
            while pending and not stop.is_set():
                b = pending[0]
                try:
                    response = client.post("/api/v1/ingest", json={"events": batches[b]})
                except httpx.HTTPError:
                    time.sleep(0.02)
                    continue  # not acknowledged: a real client resends it
                if response.status_code == 202:
                    acked.update(e["id"] for e in batches[b])
                    pending.pop(0)
                else:
                    time.sleep(0.02)

    sender = threading.Thread(target=stream)
    sender.start()
    kills = 0
    # Random points mid-stream, counted in acknowledged batches rather than seconds, so that a fast
    # machine cannot finish the stream before the last kill.
    for kill_after in sorted(rng.sample(range(10, 200), 3)):
        deadline = time.monotonic() + 60
        while len(batches) - len(pending) < kill_after and time.monotonic() < deadline:
            time.sleep(0.002)
        serve.kill()
        kills += 1 if pending else 0  # only a kill with batches still unacknowledged counts
        time.sleep(rng.uniform(0.0, 0.3))
        serve.start()
    sender.join(120)
    stop.set()
    assert not pending, f"{len(pending)} batches never acknowledged"
    assert kills == 3
    every_id = {e["id"] for batch in batches for e in batch}
    stored, distinct = _counts(serve.db(), every_id)
    assert acked == every_id
    assert stored == distinct == len(every_id)  # each exactly once
    _consistent_counts(serve.db(), [f"{run}-c{i}" for i in range(20)])


def test_the_sdk_spool_delivers_exactly_once_through_sigkills(serve: ServeProcess, tmp_path: Path) -> None:
    rng = random.Random(11)
    client = Client(
        serve.token,
        base_url=serve.base_url,
        spool_dir=tmp_path / "spool",
        flush_interval=0.05,
        max_retries=2,
        batch_size=200,
    )
    run = uuid.uuid4().hex[:8]
    logged = []
    kill_at = sorted(rng.sample(range(500, 4500), 3))
    for i in range(5000):
        if kill_at and i == kill_at[0]:
            kill_at.pop(0)
            serve.kill()
            serve.start()
        logged.append(client.log_message(f"{run}-c{i % 50}", "user", f"message {i}"))
        if i % 200 == 0:
            time.sleep(0.02)
    assert client.flush(120), client.stats
    client.shutdown(5)
    stored, distinct = _counts(serve.db(), set(logged))
    assert stored == distinct == 5000
    _consistent_counts(serve.db(), [f"{run}-c{i}" for i in range(50)])


def test_postgres_going_away_gives_503_and_service_resumes(tmp_path: Path) -> None:
    import pgserver

    pgdata = tmp_path / "pgdata"
    pg = pgserver.get_server(pgdata, cleanup_mode="stop")
    url = pg.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    from pgserver._commands import pg_ctl  # runs as the server's own user when we are root

    server = ServeProcess(tmp_path / "home", url, project="outage")
    server.start()
    headers = {"Authorization": f"Bearer {server.token}"}
    client = Client(
        server.token, base_url=server.base_url, spool_dir=tmp_path / "spool", flush_interval=0.05, max_retries=2
    )

    def batch(name: str) -> dict:
        return {
            "events": [
                {"type": "message", "conversation_id": name, "id": f"{name}-{i}", "role": "user", "content": name}
                for i in range(5)
            ]
        }

    try:
        assert httpx.post(f"{server.base_url}/api/v1/ingest", json=batch("before"), headers=headers).status_code == 202
        pg_ctl(["-m", "fast", "stop"], pgdata=pg.pgdata, user=pg.system_user, timeout=30)

        during = httpx.post(f"{server.base_url}/api/v1/ingest", json=batch("during"), headers=headers, timeout=30)
        assert during.status_code == 503 and int(during.headers["retry-after"]) >= 1
        assert "database" in during.json()["detail"]
        assert httpx.get(f"{server.base_url}/readyz", timeout=30).status_code == 503
        assert httpx.get(f"{server.base_url}/healthz").status_code == 200
        sdk_ids = [client.log_message("sdk-during", "user", f"m{i}") for i in range(20)]
        time.sleep(1.0)  # the SDK meets the 503s and keeps its events

        pg.ensure_postgres_running()  # the database comes back; the API server is not restarted
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.base_url}/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "service did not resume by itself"
            time.sleep(0.2)
        assert httpx.post(f"{server.base_url}/api/v1/ingest", json=batch("during"), headers=headers).status_code == 202
        assert httpx.post(f"{server.base_url}/api/v1/ingest", json=batch("after"), headers=headers).status_code == 202
        assert client.flush(60), client.stats
        db = server.db()
        with db.reader() as conn:
            stored = set(conn.execute(select(message.c.id)).scalars())
        db.dispose()
        assert {f"{n}-{i}" for n in ("before", "during", "after") for i in range(5)} <= stored
        assert set(sdk_ids) <= stored
    finally:
        client.shutdown(2)
        server.stop()
        pg.cleanup()


def test_a_full_disk_gives_503_loses_nothing_and_recovers(tmp_path: Path) -> None:
    """SQLite on a 4 MB tmpfs: fill it, get 503s, free space, and carry on without a restart."""
    import os
    import subprocess as sp

    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = sp.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"cannot mount a tmpfs to simulate a full disk: {mounted.stderr!r}")
        pytest.skip("mounting a tmpfs needs root (CI runs this)")
    try:
        filler = mount / "filler"
        filler.write_bytes(b"\0" * (1024 * 1024))  # freed later to make room again
        # No embedded worker: its writes would race the test's own for the last bytes of the disk.
        server = ServeProcess(mount / "home", extra_env={"CONVOLENS_EMBEDDED_WORKER": "0"})
        server.start()
        headers = {"Authorization": f"Bearer {server.token}"}
        acked: list[str] = []
        refused = None
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
            for b in range(200):
                events = [
                    {
                        "type": "message",
                        "conversation_id": f"c{b}",
                        "id": f"b{b}-{i}",
                        "role": "user",
                        "content": f"{b}-{i} " + "x" * 20_000,
                    }
                    for i in range(5)
                ]
                response = client.post("/api/v1/ingest", json={"events": events})
                if response.status_code == 202:
                    acked += [e["id"] for e in events]
                    continue
                refused = response
                break
            assert refused is not None, "the disk never filled"
            assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
            assert acked
            filler.unlink()  # space again; the server is not restarted
            retry = client.post(
                "/api/v1/ingest",
                json={
                    "events": [
                        {
                            "type": "message",
                            "conversation_id": "after",
                            "id": "after-1",
                            "role": "user",
                            "content": "ok",
                        }
                    ]
                },
            )
            assert retry.status_code == 202
            for message_id in acked[:: max(1, len(acked) // 10)]:
                conversation_id = "c" + message_id.split("-")[0][1:]
                got = client.get(f"/api/v1/conversations/{conversation_id}", params={})
                assert got.status_code == 200 and message_id in {m["id"] for m in got.json()["messages"]}
        server.stop()
        db = server.db()
        with db.reader() as conn:
            stored = set(conn.execute(select(message.c.id)).scalars())
        db.dispose()
        assert set(acked) | {"after-1"} <= stored
    finally:
        sp.run(["umount", "-l", str(mount)], capture_output=True)
