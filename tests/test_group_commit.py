"""Writes on SQLite: concurrent ingest requests committed together (group commit), each isolated from
the others' failures; one writer at a time across processes (the file lock); several API processes on
one SQLite file (``convolens serve --workers``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import IntegrityError

from conftest import ServeProcess, new_ids_batch
from convolens.schemas.ingest import IngestBatch
from convolens.store import migrate, projects
from convolens.store.db import Database, FairLock, FileWriteLock
from convolens.store.ingest import NewIdsBatch, apply_batch, new_id
from convolens.store.tables import conversation, message
from convolens.timeutil import utcnow
from lock_support import announced


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
    """Hold the turn to commit a group so that callers queue up behind it; returns an event that is set
    once ``jobs`` pieces of work are waiting and the turn is let go (they are then committed together)."""
    release = threading.Event()

    def hold() -> None:
        assert db.groups._turn.acquire(timeout=5)
        deadline = time.monotonic() + 30
        while len(db.groups._queued) < jobs and time.monotonic() < deadline:
            time.sleep(0.005)
        db.groups._turn.release()
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
    # One group for all eight, not eight commits.
    assert len(commits) == 1
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


def _statements(db: Database) -> list[str]:
    """Every statement SQLite runs on the write connection from now on (PostgreSQL: nothing seen)."""
    seen: list[str] = []
    if db.is_sqlite:
        with db.write_engine.connect() as conn:
            conn.connection.driver_connection.set_trace_callback(seen.append)  # type: ignore[union-attr]
    return seen


def _in_threads(calls: list) -> None:  # type: ignore[type-arg]
    threads = [threading.Thread(target=call) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


def test_new_id_batches_of_one_group_are_written_as_one(own_db: Database) -> None:
    db = own_db
    with db.writer() as conn:
        pk, _ = projects.ensure_project(conn, f"combine-{new_id()}")
    works = [new_ids_batch(pk, f"u{i % 2}", messages=i + 1) for i in range(5)]
    statements = _statements(db)
    commits: list[int] = []
    event.listen(db.write_engine, "commit", lambda _conn: commits.append(1))
    done = _hold_write_turn_until_queued(db, len(works))
    outcomes: dict[int, object] = {}
    _in_threads([lambda i=i: outcomes.__setitem__(i, db.write(works[i])) for i in range(len(works))])
    assert done.wait(5)
    assert len(commits) == 1  # one transaction for the five (PostgreSQL included)
    # Each caller gets its own outcome, indexed within its own batch, as if written alone.
    for i, work in enumerate(works):
        outcome = outcomes[i]
        assert outcome.created_messages == i + 1
        assert [r.index for r in outcome.results] == list(range(i + 2))
        assert [r.id for r in outcome.results] == [e.id for e in work.batch.events]
        assert {r.status for r in outcome.results} == {"created"}
    if db.is_sqlite:  # one statement per table for the five, in one savepoint, no look-up of their ids
        assert len([s for s in statements if s.startswith("INSERT INTO conversation ")]) == 1
        assert len([s for s in statements if s.startswith("INSERT INTO end_user ")]) == 1
        assert len([s for s in statements if s.startswith("SAVEPOINT")]) == 1
        assert not [s for s in statements if s.startswith("SELECT")]
    with db.reader() as conn:
        rows = conn.execute(
            select(conversation.c.pk, conversation.c.message_count, conversation.c.metadata).where(
                conversation.c.project_pk == pk
            )
        ).all()
        assert sorted((r.message_count, r.metadata["n"]) for r in rows) == [(n, n) for n in range(1, 6)]
        positions: dict[int, list[int]] = {}
        for conversation_pk, position in conn.execute(
            select(message.c.conversation_pk, message.c.position).where(message.c.project_pk == pk)
        ):
            positions.setdefault(conversation_pk, []).append(position)
        assert sorted(sorted(p) for p in positions.values()) == [list(range(n)) for n in range(1, 6)]


class _Row:
    """Combinable work that writes one row; "bad" writes a NULL where the table forbids it, so that the
    database fails the statement (and, on PostgreSQL, the transaction until rolled back to a savepoint)."""

    combine_key = "rows"

    def __init__(self, table: str, name: str) -> None:
        self.table, self.name = table, name

    def _insert(self, conn, names: list[str]) -> None:  # type: ignore[no-untyped-def]
        for name in names:
            value = None if name == "bad" else name
            conn.execute(text(f"INSERT INTO {self.table} (name) VALUES (:n)"), {"n": value})

    def __call__(self, conn):  # type: ignore[no-untyped-def]
        self._insert(conn, [self.name])
        return self.name

    def run_together(self, conn, works):  # type: ignore[no-untyped-def]
        self._insert(conn, [work.name for work in works])
        return [f"{work.name} (together)" for work in works]


def test_combined_work_that_fails_is_done_one_at_a_time(own_db: Database) -> None:
    db = own_db
    table = f"t_{new_id()}"
    with db.writer() as conn:
        conn.execute(text(f"CREATE TABLE {table} (name TEXT NOT NULL)"))

    def group(names: list[str]) -> dict[str, object]:
        done = _hold_write_turn_until_queued(db, len(names))
        got: dict[str, object] = {}

        def write(name: str) -> None:
            try:
                got[name] = db.write(_Row(table, name))
            except IntegrityError as exc:
                got[name] = exc

        _in_threads([lambda n=n: write(n) for n in names])
        assert done.wait(5)
        return got

    assert group(["a", "b"]) == {"a": "a (together)", "b": "b (together)"}
    got = group(["c", "bad", "d"])
    assert got["c"] == "c" and got["d"] == "d" and isinstance(got["bad"], IntegrityError)
    with db.reader() as conn:
        names = sorted(conn.execute(text(f"SELECT name FROM {table}")).scalars())
    assert names == ["a", "b", "c", "d"]  # the failed combined run left nothing; "bad" rolled back alone
    with db.writer() as conn:
        conn.execute(text(f"DROP TABLE {table}"))


def test_ids_are_new_skips_the_look_up_of_stored_ids(sqlite_db: Database) -> None:
    db = sqlite_db
    pk = _project(db)
    for ids_are_new, selects in ((False, 2), (True, 0)):
        work = new_ids_batch(pk, "u", messages=3)
        statements = _statements(db)
        outcome = db.write(lambda conn, w=work, n=ids_are_new: apply_batch(conn, pk, w.batch, utcnow(), ids_are_new=n))
        assert outcome.created_messages == 3
        assert len([s for s in statements if s.startswith("SELECT")]) == selects


def _awkward_batch(pk: int) -> NewIdsBatch:
    """A batch whose values are hard to carry: COPY's text format escapes tabs, newlines and backslashes."""
    work = new_ids_batch(pk, "awkward", messages=2)
    first, second = work.batch.events[1:]
    first.content, first.metadata, first.rating = "tab\there\nnew line \\N back\\slash é 😀", {"k": "v\t"}, 1
    first.timestamp = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    second.content, second.extra, second.model, second.name = "", {"thought": "x\ny"}, "gpt-x", "tool\\name"
    second.timestamp = datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC)
    return work


def test_messages_read_back_the_same_however_they_were_written(own_db: Database) -> None:
    """On PostgreSQL a batch of new ids goes in with COPY, any other with INSERT: the stored rows agree."""
    db = own_db
    with db.writer() as conn:
        pk, _ = projects.ensure_project(conn, f"copy-{new_id()}")
    stored = []
    for ids_are_new in (True, False):
        work = _awkward_batch(pk)
        outcome = db.write(lambda conn, w=work, n=ids_are_new: apply_batch(conn, pk, w.batch, utcnow(), ids_are_new=n))
        assert outcome.created_messages == 2
        with db.reader() as conn:
            rows = conn.execute(
                select(message.c.position, message.c.role, message.c.kind, message.c.name, message.c.content,
                       message.c.created_at, message.c.metadata, message.c.extra, message.c.rating, message.c.model)
                .where(message.c.id.in_([e.id for e in work.batch.events[1:]]))
                .order_by(message.c.position)
            ).all()  # fmt: skip
        stored.append([tuple(r) for r in rows])
    assert stored[0] == stored[1]
    assert stored[0][0][4] == "tab\there\nnew line \\N back\\slash é 😀"
    assert stored[0][0][5] == datetime(2026, 1, 2, 3, 4, 5, 678901)
    assert (stored[0][0][6], stored[0][1][7], stored[0][1][3]) == ({"k": "v\t"}, {"thought": "x\ny"}, "tool\\name")


def test_a_wrong_claim_of_new_ids_never_duplicates_a_message(own_db: Database) -> None:
    db = own_db
    with db.writer() as conn:
        pk, _ = projects.ensure_project(conn, f"claim-{new_id()}")
    work = new_ids_batch(pk, "u", messages=2)
    assert db.write(work).created_messages == 2
    again = NewIdsBatch(pk, work.batch)  # the same ids, claimed new again
    if db.is_sqlite:
        db.write(again)  # the INSERT ignores a stored id
    else:
        with pytest.raises(IntegrityError):  # COPY has no ON CONFLICT: the claim fails, whole
            db.write(again)
    with db.reader() as conn:
        count = conn.execute(select(func.count()).select_from(message).where(message.c.project_pk == pk)).scalar()
    assert count == 2


def test_a_postgresql_group_outlives_its_kept_connection(postgres_url: str) -> None:
    """Groups on PostgreSQL run on a connection kept without a pre-ping: when it has died, the group's
    work is written again through the pool, and the next group connects anew."""
    db = Database(postgres_url)
    migrate.upgrade(db)
    try:
        with db.writer() as conn:
            pk, _ = projects.ensure_project(conn, f"kept-{new_id()}")
        assert db.write(new_ids_batch(pk, "u", messages=2)).created_messages == 2
        kept = db.groups.connection().connection.driver_connection.info.backend_pid
        with db.writer() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": kept}).scalar()
        assert db.write(new_ids_batch(pk, "u", messages=3)).created_messages == 3
        assert db.write(new_ids_batch(pk, "u", messages=4)).created_messages == 4
        assert db.groups.connection().connection.driver_connection.info.backend_pid != kept
        with db.reader() as conn:
            stored = conn.execute(select(func.count()).select_from(message).where(message.c.project_pk == pk))
            assert stored.scalar() == 9
    finally:
        db.dispose()


def test_the_fair_lock_is_handed_on_in_arrival_order_past_waiters_whose_event_came() -> None:
    lock = FairLock()
    assert lock.acquire(timeout=1)
    order: list[str] = []
    committed = threading.Event()  # a follower's work, done by someone else meanwhile

    def wait(name: str, wake: threading.Event | None = None) -> None:
        got = lock.acquire(timeout=10, wake=wake)
        order.append(f"{name}:{'lock' if got else 'released'}")
        if got:
            lock.release()

    threads = []
    for name, wake in (("a", None), ("follower", committed), ("b", None)):
        threads.append(threading.Thread(target=wait, args=(name, wake)))
        threads[-1].start()
        time.sleep(0.05)  # in this order
    committed.set()
    threads[1].join(5)
    assert order == ["follower:released"]  # at once, without the lock, which is still held
    lock.release()
    for t in threads:
        t.join(5)
    assert order == ["follower:released", "a:lock", "b:lock"]
    assert lock.acquire(timeout=0.1)  # free again: nothing was left waiting or holding


def test_a_fair_lock_waiter_that_times_out_does_not_get_it_later() -> None:
    lock = FairLock()
    assert lock.acquire(timeout=1)
    assert lock.acquire(timeout=0.05) is False
    lock.release()
    assert lock.acquire(timeout=0.1)  # not handed to the waiter that gave up


def test_new_ids_sort_by_the_time_they_were_made() -> None:
    earlier = [new_id() for _ in range(1000)]
    time.sleep(0.002)
    later = new_id()
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in earlier)
    assert len(set(earlier)) == 1000
    assert max(earlier) < later  # a millisecond later sorts after: index inserts stay side by side


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
        from convolens.schemas.ingest import ConversationEvent, IngestBatch, MessageEvent
        from convolens.store.db import Database
        from convolens.store.ingest import NewIdsBatch, apply_batch, new_id
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


def test_a_worker_lets_an_api_write_waiting_for_the_lock_go_before_its_next_transaction(tmp_path: Path) -> None:
    """Ingestion first. The worker's saves ran back to back: it released the lock and took it again at
    once, beating an API process that polls for it, so a request waited for several saves. Now the
    API's wait is announced and a yielding lock lets it go first."""
    path = str(tmp_path / "x.sqlite3-writelock")
    worker, api = FileWriteLock(path, yields=True), FileWriteLock(path)
    order: list[str] = []

    def api_write() -> None:
        assert api.acquire(5)
        order.append("api")
        time.sleep(0.05)  # its transaction
        api.release()

    assert worker.acquire(5)
    waiting = threading.Thread(target=api_write)
    waiting.start()
    deadline = time.monotonic() + 10
    while not announced(path):
        assert time.monotonic() < deadline, "the API's wait was not announced"
        time.sleep(0.001)
    worker.release()
    assert worker.acquire(5)  # the worker's next transaction, at once
    order.append("worker")
    worker.release()
    waiting.join(10)
    assert order == ["api", "worker"]
    assert not announced(path)  # released with the API's lock
    worker.close()
    api.close()


def test_a_worker_waits_for_a_burst_s_writes_to_pause_not_for_a_gap_between_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst's writes come with gaps of a millisecond or two between them (the API parses and scrubs the
    next requests). The worker's lock went in at the first gap it saw, and took a turn (and a batch's CPU)
    every few commits: a Context burst was stored at ~650 conversations/s with the worker on against ~830
    with it off. It now waits until it has seen no write for a while (a long quiet here, so that a slow
    machine's late wake-ups do not open one)."""
    import fcntl

    monkeypatch.setattr(FileWriteLock, "QUIET_SECONDS", 0.3)
    monkeypatch.setattr(FileWriteLock, "YIELD_SECONDS", 30.0)
    path = str(tmp_path / "x.sqlite3-writelock")
    burst = os.open(f"{path}.announce", os.O_RDWR | os.O_CREAT, 0o600)
    stop = threading.Event()
    ended: list[float] = []

    def writes() -> None:
        for _ in range(100):  # ~0.5 s of writes of 2 ms with gaps of 3 ms
            fcntl.flock(burst, fcntl.LOCK_SH)
            time.sleep(0.002)
            fcntl.flock(burst, fcntl.LOCK_UN)
            if stop.is_set():
                break
            time.sleep(0.003)
        ended.append(time.monotonic())

    worker = FileWriteLock(path, yields=True)
    stream = threading.Thread(target=writes)
    stream.start()
    try:
        while not announced(path):
            time.sleep(0.0005)
        assert worker.acquire(timeout=60)
        took = time.monotonic()
        worker.release()
    finally:
        stop.set()
        stream.join(30)
        os.close(burst)
        worker.close()
    assert ended and took >= ended[0], "the worker went in between two of the burst's writes"


def test_an_idle_worker_takes_the_lock_without_waiting_for_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quiet a yielding lock waits for is counted from the last write it saw: a worker that has seen
    none (an idle server) goes at once, transaction after transaction, as before."""
    from convolens.store.writer import process_lock as db_module

    path = str(tmp_path / "x.sqlite3-writelock")
    worker = FileWriteLock(path, yields=True)
    sleeps: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(db_module.time, "sleep", lambda s: (sleeps.append(s), real_sleep(s)))
    try:
        for _ in range(20):
            assert worker.acquire(timeout=5)
            worker.release()
    finally:
        worker.close()
    assert sleeps == []


def test_a_worker_still_takes_its_turn_under_writes_announced_without_end(tmp_path: Path) -> None:
    import fcntl

    path = str(tmp_path / "x.sqlite3-writelock")
    endless = os.open(f"{path}.announce", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(endless, fcntl.LOCK_SH)  # as a steady stream of ingest would keep it
    worker = FileWriteLock(path, yields=True)
    try:
        assert worker.acquire(timeout=FileWriteLock.YIELD_SECONDS + 10) is True
        worker.release()
    finally:
        os.close(endless)
        worker.close()


def test_an_api_write_is_not_held_by_a_worker_stopped_in_the_middle_of_its_check(tmp_path: Path) -> None:
    """A yielding lock checks for announced writes by holding the announce file exclusively for an instant.
    A worker's thread preempted in that instant (it runs niced) held every API write that came to announce
    itself, for as long as it stayed off the CPU; here, indefinitely. The write goes on unannounced."""
    import fcntl

    path = str(tmp_path / "x.sqlite3-writelock")
    probe = os.open(f"{path}.announce", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(probe, fcntl.LOCK_EX)  # the check, never finished
    api = FileWriteLock(path)
    got: list[bool] = []
    writing = threading.Thread(target=lambda: got.append(api.acquire(5)), daemon=True)
    try:
        writing.start()
        writing.join(10)
        assert got == [True], "the API's write waited on the worker's check"
        api.release()
        # Unannounced, its release must not drop a lock it never had: the check still holds the file.
        assert announced(path)
    finally:
        os.close(probe)
        api.close()
    # With the file free again, a write announces itself as before.
    assert api.acquire(5)
    assert announced(path)
    api.release()
    assert not announced(path)
    api.close()
