"""Scale-out on the real PostgreSQL: two ``convolens serve`` processes and two ``convolens worker``
processes on one database, the test itself round-robining batches across both servers. Every message is
stored once and enriched once; a worker SIGKILLed while it holds claimed work leaves it to the other
when its lease runs out."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import func, select

from conftest import CLI, ServeProcess, _admin_url
from convolens.store import migrate
from convolens.store.db import Database
from convolens.store.tables import message

LEASE_SECONDS = 4
BATCH = 32
BATCHES = 40
MESSAGES_PER_BATCH = 50


@pytest.fixture
def own_postgres() -> Iterator[str]:
    """A database of its own: the session's servers run embedded workers that would take the queue."""
    admin, _handle = _admin_url()
    if not admin:
        pytest.fail("no PostgreSQL reachable")
    name = f"convolens_scale_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = admin.partition("?")
    url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    yield url.replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_worker(url: str, home: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "CONVOLENS_HOME": str(home), "CONVOLENS_DATABASE_URL": url, "CONVOLENS_MODEL_THREADS": "1"}
    with log.open("w") as out:
        return subprocess.Popen(
            [*CLI, "worker", "--batch-size", str(BATCH), "--lease-seconds", str(LEASE_SECONDS), "--log-level", "debug"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def enriched_in_log(log: Path) -> int:
    return sum(int(n) for n in re.findall(r"enriched (\d+) messages", log.read_text()))


def count(db: Database, *conditions) -> int:  # type: ignore[no-untyped-def]
    with db.reader() as conn:
        return conn.execute(select(func.count()).select_from(message).where(*conditions)).scalar_one()


def test_two_servers_and_two_workers_on_one_postgres(own_postgres: str, tmp_path: Path) -> None:
    db = Database(own_postgres)
    migrate.upgrade(db)
    servers = [
        ServeProcess(tmp_path / f"api{i}", own_postgres, project="scale", extra_env={"CONVOLENS_EMBEDDED_WORKER": "0"})
        for i in range(2)
    ]
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers: list[subprocess.Popen] = []
    try:
        for server in servers:
            server.start()
        workers = [start_worker(own_postgres, tmp_path / f"w{i}", logs[i]) for i in range(2)]
        sent: list[str] = []
        lock = threading.Lock()

        def send(batch_no: int) -> None:
            server = servers[batch_no % 2]  # round robin, as a load balancer would
            events = []
            for i in range(MESSAGES_PER_BATCH):
                mid = f"b{batch_no}-m{i}"
                text = f"message {i} of batch {batch_no}: how do I get a refund?"
                events.append({"type": "message", "conversation_id": f"c{batch_no % 7}-{i % 5}", "id": mid,
                               "role": "user", "content": text})  # fmt: skip
            response = httpx.post(
                f"{server.base_url}/api/v1/ingest",
                json={"events": events},
                headers={"Authorization": f"Bearer {server.token}"},
                timeout=60,
            )
            assert response.status_code == 202, response.text
            with lock:
                sent.extend(e["id"] for e in events)

        threads = [threading.Thread(target=send, args=(n,)) for n in range(BATCHES)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        total = BATCHES * MESSAGES_PER_BATCH
        assert len(sent) == total
        assert count(db) == total  # stored exactly once (ids are unique per project)
        with db.reader() as conn:
            assert len(set(conn.execute(select(message.c.id)).scalars())) == total

        # Kill the first worker while it holds claimed work.
        victim = workers[0]
        deadline = time.monotonic() + 120
        victim_name = None
        while victim_name is None:
            assert time.monotonic() < deadline, "the first worker never claimed work"
            with db.reader() as conn:
                owners = set(
                    conn.execute(select(message.c.lease_owner).where(message.c.lease_owner.is_not(None))).scalars()
                )
            victim_name = next((o for o in owners if o.split(":")[1] == str(victim.pid)), None)
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        orphaned = count(db, message.c.lease_owner == victim_name, message.c.enriched_version.is_(None))

        deadline = time.monotonic() + 240
        while count(db, message.c.enriched_version.is_(None)) > 0:
            assert time.monotonic() < deadline, "the surviving worker did not finish"
            assert workers[1].poll() is None, logs[1].read_text()[-2000:]
            time.sleep(0.5)
        assert count(db, message.c.lease_owner.is_not(None)) == 0
        assert count(db, message.c.sentiment.is_(None)) == 0  # every one of them really went through the pipeline
        workers[1].send_signal(signal.SIGTERM)
        workers[1].wait(30)
        survivor, killed = enriched_in_log(logs[1]), enriched_in_log(logs[0])
        # Never enriched twice: the logged saves add up to the total, but for at most the one batch the
        # killed worker may have committed in the instant before it could log it.
        assert total - BATCH <= survivor + killed <= total
        assert survivor >= orphaned  # what the dead worker held was taken over
        assert orphaned > 0 or killed > 0  # it really was killed mid-work
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        for server in servers:
            server.stop()
        db.dispose()
