"""Writes on SQLite: concurrent ingest requests committed together (group commit), each isolated from
the others' failures; one writer at a time across processes (the file lock); several API processes on
one SQLite file (``convolens serve --workers``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event, func, select, text

from conftest import ServeProcess
from convolens.schemas.ingest import IngestBatch
from convolens.store import migrate, projects
from convolens.store.db import Database, FileWriteLock
from convolens.store.ingest import apply_batch
from convolens.store.tables import conversation, message
from convolens.timeutil import utcnow


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    migrate.upgrade(db)
    yield db
    db.dispose()


def _project(db: Database) -> int:
    with db.writer() as conn:
        pk, _ = projects.ensure_project(conn, "group")
    return pk


def _batch(cid: str, messages: int = 3) -> IngestBatch:
    events = [{"type": "conversation", "id": cid, "user_id": f"u-{cid}"}]
    events += [
        {"type": "message", "conversation_id": cid, "id": f"{cid}-{i}", "role": "user", "content": f"m{i}"}
        for i in range(messages)
    ]
    return IngestBatch.model_validate({"events": events})


def _hold_write_turn_until_queued(db: Database, jobs: int) -> threading.Event:
    """Hold the write turn so that callers queue up behind it; returns an event that releases it once
    ``jobs`` pieces of work are waiting (they are then committed by one leader, together)."""
    release = threading.Event()

    def hold() -> None:
        with db.writer():
            deadline = time.monotonic() + 30
            while len(db._queued) < jobs and time.monotonic() < deadline:
                time.sleep(0.005)
        release.set()

    threading.Thread(target=hold).start()
    time.sleep(0.05)
    return release


def test_concurrent_writes_share_commits_and_all_land(sqlite_db: Database) -> None:
    db = sqlite_db
    pk = _project(db)
    commits = []
    event.listen(db.write_engine, "commit", lambda _conn: commits.append(1))
    done = _hold_write_turn_until_queued(db, 8)
    outcomes: list[int] = []

    def write(i: int) -> None:
        outcomes.append(db.write(lambda conn: apply_batch(conn, pk, _batch(f"c{i}"), utcnow())).created_messages)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert done.wait(5)
    assert sorted(outcomes) == [3] * 8
    # The holder's transaction and then one group for all eight, not eight commits.
    assert len(commits) == 2
    with db.reader() as conn:
        assert conn.execute(select(func.count()).select_from(message)).scalar() == 24
        # Positions were reserved per conversation inside the shared transaction.
        positions = conn.execute(select(message.c.position).order_by(message.c.position)).scalars().all()
        assert positions == sorted([0, 1, 2] * 8)


def test_a_failing_request_in_a_group_rolls_back_alone(sqlite_db: Database) -> None:
    db = sqlite_db
    pk = _project(db)
    done = _hold_write_turn_until_queued(db, 3)
    errors: dict[str, BaseException] = {}

    def good(cid: str) -> None:
        db.write(lambda conn: apply_batch(conn, pk, _batch(cid), utcnow()))

    def bad() -> None:
        def work(conn):  # type: ignore[no-untyped-def]
            apply_batch(conn, pk, _batch("bad"), utcnow())  # written, then undone with its savepoint
            raise ValueError("this request fails after writing")

        try:
            db.write(work)
        except ValueError as exc:
            errors["bad"] = exc

    threads = [threading.Thread(target=good, args=("a",)), threading.Thread(target=bad)]
    threads.append(threading.Thread(target=good, args=("b",)))
    for t in threads:
        t.start()
        time.sleep(0.02)  # a, bad, b: the failing one in the middle of the group
    for t in threads:
        t.join(30)
    assert done.wait(5)
    assert isinstance(errors.get("bad"), ValueError)
    with db.reader() as conn:
        ids = set(conn.execute(select(conversation.c.id)).scalars())
        assert ids == {"a", "b"}
        assert conn.execute(select(func.count()).select_from(message)).scalar() == 6


def test_an_error_in_a_group_of_one_is_the_callers_and_leaves_nothing(sqlite_db: Database) -> None:
    db = sqlite_db
    pk = _project(db)

    def work(conn):  # type: ignore[no-untyped-def]
        apply_batch(conn, pk, _batch("solo"), utcnow())
        raise KeyError("solo")

    with pytest.raises(KeyError):
        db.write(work)
    with db.reader() as conn:
        assert conn.execute(select(func.count()).select_from(conversation)).scalar() == 0
    assert db.write(lambda conn: conn.execute(text("SELECT 41 + 1")).scalar()) == 42


def test_the_file_lock_keeps_another_process_waiting(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3-writelock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from convolens.store.db import FileWriteLock
                lock = FileWriteLock({str(path)!r})
                assert lock.acquire(5)
                print("held", flush=True)
                sys.stdin.readline()
                lock.release()
                print("released", flush=True)
                time.sleep(30)
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "held"
        lock = FileWriteLock(str(path))
        assert lock.acquire(timeout=0.3) is False  # another process holds it
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        assert lock.acquire(timeout=5) is True
        lock.release()
        lock.close()
    finally:
        holder.kill()
        holder.wait(10)


def test_two_processes_write_one_sqlite_file_without_losing_a_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    db = Database(url)
    migrate.upgrade(db)
    _project(db)
    script = textwrap.dedent(
        f"""
        import sys
        from convolens.schemas.ingest import IngestBatch
        from convolens.store.db import Database
        from convolens.store.ingest import apply_batch
        from convolens.timeutil import utcnow
        db = Database({url!r})
        name = sys.argv[1]
        for i in range(150):
            cid = f"{{name}}-{{i}}"
            batch = IngestBatch.model_validate({{"events": [
                {{"type": "message", "conversation_id": cid, "id": cid, "role": "user", "content": "x"}}]}})
            db.write(lambda conn: apply_batch(conn, 1, batch, utcnow()))
        print("ok")
        """
    )
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", script, name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name in ("left", "right")
    ]
    for w in writers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        assert out.strip() == "ok"
    with db.reader() as conn:
        assert conn.execute(select(func.count()).select_from(message)).scalar() == 300
    db.dispose()


def test_serve_with_two_api_processes_on_sqlite(tmp_path: Path) -> None:
    """``convolens serve --workers 2``: both processes answer, every message is stored once, and the
    embedded worker (one process beside them) enriches what they stored."""
    server = ServeProcess(tmp_path, serve_args=["--workers", "2"], extra_env={"CONVOLENS_MODEL_THREADS": "1"})
    server.start()
    try:
        headers = {"Authorization": f"Bearer {server.token}"}
        errors: list[str] = []

        def send(k: int) -> None:
            with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as http:
                for i in range(10):
                    cid = f"w{k}-{i}"
                    events = [{"type": "conversation", "id": cid, "user_id": f"u{i % 3}"}] + [
                        {"type": "message", "conversation_id": cid, "id": f"{cid}-{j}", "role": "user",
                         "content": f"hello number {j}"}
                        for j in range(5)
                    ]  # fmt: skip
                    response = http.post("/api/v1/ingest", json={"events": events})
                    if response.status_code != 202:
                        errors.append(response.text)

        threads = [threading.Thread(target=send, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        db = server.db()
        with db.reader() as conn:
            assert conn.execute(select(func.count()).select_from(message)).scalar() == 300
            assert conn.execute(select(func.count(func.distinct(message.c.id)))).scalar() == 300
        deadline = time.monotonic() + 180
        while True:
            with db.reader() as conn:
                pending = conn.execute(
                    select(func.count()).select_from(message).where(message.c.enriched_version.is_(None))
                ).scalar()
            if pending == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert pending == 0
        db.dispose()
        children = subprocess.run(
            ["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True
        ).stdout.split()  # type: ignore[union-attr]
        assert len(children) >= 3  # two API processes and the worker (uvicorn may add a helper)
    finally:
        server.stop()
