"""The connections kept for the token look-up (store/token_connections.py): reused, bounded, renewed after a restart."""

from __future__ import annotations

import threading

import psycopg
from sqlalchemy import event, text

from convolens.store.db import Database


def _connects(db: Database) -> list[int]:
    opened: list[int] = []
    event.listen(db._held._engine, "connect", lambda *_: opened.append(1))
    return opened


def _backend_pid(conn) -> int:  # type: ignore[no-untyped-def]
    if conn.dialect.name == "postgresql":
        return conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    return id(conn.connection.dbapi_connection)


def test_reads_reuse_one_connection_and_see_every_commit(own_db: Database) -> None:
    db = own_db
    opened = _connects(db)
    with db.writer() as conn:
        conn.execute(text("CREATE TABLE held_probe (n INTEGER)"))
    try:
        seen = []
        for n in range(5):
            with db.writer() as conn:
                conn.execute(text("INSERT INTO held_probe (n) VALUES (:n)"), {"n": n})
            seen.append(db.read_held(lambda c: c.exec_driver_sql("SELECT count(*) FROM held_probe").scalar_one()))
        assert seen == [1, 2, 3, 4, 5]  # autocommit: no snapshot held between reads
        assert len(opened) == 1
    finally:
        with db.writer() as conn:
            conn.execute(text("DROP TABLE held_probe"))


def test_more_concurrent_reads_than_kept_connections_go_through_the_pool(own_db: Database) -> None:
    db = own_db
    opened = _connects(db)
    size = db.HELD_CONNECTIONS
    inside = threading.Barrier(size + 1)
    release = threading.Event()
    held_pids: list[int] = []

    def slow(conn) -> int:  # type: ignore[no-untyped-def]
        held_pids.append(_backend_pid(conn))
        inside.wait(10)
        release.wait(10)
        return 1

    threads = [threading.Thread(target=db.read_held, args=(slow,)) for _ in range(size)]
    for t in threads:
        t.start()
    inside.wait(10)  # every kept connection is in use now
    extra = db.read_held(_backend_pid)
    release.set()
    for t in threads:
        t.join(10)
    assert len(opened) == size and len(set(held_pids)) == size
    assert extra not in held_pids  # the extra read took a pooled connection instead of opening more


def test_a_kept_connection_cut_by_the_server_is_replaced_without_an_error(postgres_url: str) -> None:
    db = Database(postgres_url)
    try:
        pids = [db.read_held(_backend_pid)]
        with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
        pids.append(db.read_held(_backend_pid))  # the dead one is dropped, the read retried
        assert pids[1] != pids[0]
        assert db.read_held(_backend_pid) == pids[1]
    finally:
        db.dispose()
