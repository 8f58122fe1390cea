"""The store on both backends: write, read back, idempotent retries, pagination, windows, isolation."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from conftest import Project, make_project
from convolens.schemas.ingest import IngestBatch
from convolens.store import conversation_reads, metrics, migrate
from convolens.store.db import Database
from convolens.store.ingest import apply_batch
from convolens.store.tables import metadata

T0 = datetime(2026, 3, 10, 12, 0, 0)


def write(db: Database, project: Project, events: list[dict], now: datetime = T0):
    with db.writer() as conn:
        return apply_batch(conn, project.pk, IngestBatch.model_validate({"events": events}), now)


def conversation_events(cid: str, at: datetime, n: int = 2, user: str = "u1", **conv) -> list[dict]:
    events = [{"type": "conversation", "id": cid, "user_id": user, **conv}]
    for i in range(n):
        events.append(
            {
                "type": "message",
                "conversation_id": cid,
                "id": f"{cid}-m{i}",
                "role": "user" if i % 2 == 0 else "assistant",
                "content": f"message {i} of {cid}",
                "timestamp": (at + timedelta(seconds=i)).isoformat(),
            }
        )
    return events


def test_migrations_match_the_tables(db: Database) -> None:
    migrate.upgrade(db)  # a second run is a no-op
    with db.write_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        if db.dialect == "sqlite":
            diff = _without_inline_reference_options(conn, diff)
    # The search index is made by migration 0013 alone (store/search.py): SQLite's FTS5 table and its
    # shadow tables, PostgreSQL's trigram index, which SQLAlchemy's metadata cannot describe per backend.
    search_objects = [d for d in diff if _name(d).startswith("message_search") or _name(d) == "ix_message_content_trgm"]
    assert search_objects, "the search index exists"
    assert [d for d in diff if d not in search_objects] == []


def _name(d) -> str:  # type: ignore[no-untyped-def]
    return getattr(d[1], "name", "") or "" if isinstance(d, tuple) else ""


def _without_inline_reference_options(conn, diff: list) -> list:  # type: ignore[no-untyped-def]
    """SQLite adds a column's reference only inline (``ALTER TABLE … ADD COLUMN … REFERENCES … ON DELETE``),
    and SQLAlchemy reflects no ON DELETE from an inline reference: alembic then sees the foreign key as
    removed and added again. Such a pair is dropped here once SQLite itself reports the expected action."""
    removed = {(d[1].parent.name, tuple(e.parent.name for e in d[1].elements)): d for d in diff if d[0] == "remove_fk"}
    kept = []
    for d in diff:
        key = (
            (d[1].parent.name, tuple(e.parent.name for e in d[1].elements)) if d[0] in ("add_fk", "remove_fk") else None
        )
        if d[0] == "add_fk" and key in removed:
            actions = {
                (row[3], row[6]) for row in conn.exec_driver_sql(f"PRAGMA foreign_key_list({key[0]})").all()
            }  # (column, on_delete)
            if all((column, (d[1].ondelete or "NO ACTION").upper()) in actions for column in key[1]):
                removed.pop(key)
                continue
        kept.append(d)
    return [d for d in kept if d[0] != "remove_fk" or d in removed.values()]


def test_write_and_read_back(db: Database, project: Project) -> None:
    outcome = write(
        db, project, conversation_events("c1", T0, 3, tenant_id="acme", metadata={"plan": "pro", "n": 3, "beta": True})
    )
    assert [r.status for r in outcome.results] == ["created"] * 4
    with db.reader() as conn:
        view = conversation_reads.get_conversation(conn, project.pk, "c1")
    assert view is not None
    assert (view.tenant_id, view.user_id, view.message_count) == ("acme", "u1", 3)
    assert view.metadata == {"plan": "pro", "n": 3, "beta": True}
    assert [m.content for m in view.messages] == ["message 0 of c1", "message 1 of c1", "message 2 of c1"]
    assert [m.position for m in view.messages] == [0, 1, 2]
    assert view.started_at == T0 and view.last_message_at == T0 + timedelta(seconds=2)


def test_retried_batch_never_duplicates(db: Database, project: Project) -> None:
    events = conversation_events("c1", T0, 4)
    write(db, project, events)
    again = write(db, project, events)
    assert [r.status for r in again.results[1:]] == ["duplicate"] * 4
    assert again.created_messages == 0
    with db.reader() as conn:
        view = conversation_reads.get_conversation(conn, project.pk, "c1")
        totals = conversation_reads.project_totals(conn, project.pk)
    assert view.message_count == 4 and len(view.messages) == 4
    assert totals == {"conversations": 1, "messages": 4}


def test_duplicate_inside_one_batch(db: Database, project: Project) -> None:
    events = conversation_events("c1", T0, 1)
    outcome = write(db, project, events + events[1:])
    assert [r.status for r in outcome.results] == ["created", "created", "duplicate"]


def test_messages_append_across_batches_in_order(db: Database, project: Project) -> None:
    write(db, project, conversation_events("c1", T0, 2))
    write(
        db,
        project,
        [{"type": "message", "conversation_id": "c1", "id": "late", "role": "user", "content": "third"}],
        now=T0 + timedelta(hours=1),
    )
    with db.reader() as conn:
        view = conversation_reads.get_conversation(conn, project.pk, "c1")
    assert [m.id for m in view.messages] == ["c1-m0", "c1-m1", "late"]
    assert view.last_message_at == T0 + timedelta(hours=1)


def test_ratings_feedback_and_unknown_targets(db: Database, project: Project) -> None:
    write(db, project, conversation_events("c1", T0, 2))
    outcome = write(
        db,
        project,
        [
            {"type": "rating", "conversation_id": "c1", "message_id": "c1-m1", "rating": -1},
            {"type": "feedback", "conversation_id": "c1", "feedback": "too slow"},
            {"type": "rating", "conversation_id": "nope", "message_id": "x", "rating": 1},
            {"type": "feedback", "conversation_id": "nope", "feedback": "x"},
        ],
    )
    assert [r.status for r in outcome.results] == ["updated", "updated", "not_found", "not_found"]
    with db.reader() as conn:
        view = conversation_reads.get_conversation(conn, project.pk, "c1")
    assert view.messages[1].rating == -1 and view.feedback == "too slow"


def test_pagination_is_complete_and_ordered(db: Database, project: Project) -> None:
    for i in range(23):
        write(db, project, conversation_events(f"c{i:02d}", T0 + timedelta(minutes=i), 2))
    seen: list[str] = []
    window = {"start": T0 - timedelta(days=1), "end": T0 + timedelta(days=1)}
    for page in (1, 2, 3):
        with db.reader() as conn:
            result = conversation_reads.list_conversations(conn, project.pk, page=page, per_page=10, **window)
        assert result.total == 23 and result.page_count == 3
        seen += [c.id for c in result.items]
        assert all(len(c.messages) == 2 for c in result.items)
    assert seen == [f"c{i:02d}" for i in reversed(range(23))]


def test_time_window_and_tenant_filter(db: Database, project: Project) -> None:
    write(db, project, conversation_events("old", T0 - timedelta(days=10), 2, tenant_id="a"))
    write(db, project, conversation_events("new", T0, 2, tenant_id="b"))
    with db.reader() as conn:
        recent = conversation_reads.list_conversations(
            conn, project.pk, start=T0 - timedelta(days=1), end=T0 + timedelta(1)
        )
        everything = conversation_reads.list_conversations(
            conn, project.pk, start=T0 - timedelta(days=30), end=T0 + timedelta(1)
        )
        tenant_a = conversation_reads.list_conversations(
            conn, project.pk, start=T0 - timedelta(days=30), end=T0 + timedelta(1), tenant_id="a"
        )
    assert [c.id for c in recent.items] == ["new"]
    assert [c.id for c in everything.items] == ["new", "old"]
    assert [c.id for c in tenant_a.items] == ["old"]


def test_projects_are_isolated(db: Database, project: Project) -> None:
    other = make_project(db, "other")
    write(db, project, conversation_events("same-id", T0, 2))
    write(db, other, conversation_events("same-id", T0, 3))
    with db.reader() as conn:
        mine = conversation_reads.get_conversation(conn, project.pk, "same-id")
        theirs = conversation_reads.get_conversation(conn, other.pk, "same-id")
        assert conversation_reads.get_conversation(conn, other.pk, "c-of-first") is None
    assert (mine.message_count, theirs.message_count) == (2, 3)
    assert {m.content for m in mine.messages}.isdisjoint({"message 2 of same-id"})


@pytest.mark.parametrize(
    "period,expected",
    [
        ("day", {"2026-03-09": 1.0, "2026-03-10": 2.0, "2026-03-11": 0.0}),
        ("week", {"2026-03-09": 3.0}),
        ("month", {"2026-03-01": 3.0}),
    ],
)
def test_volume_buckets(db: Database, project: Project, period: str, expected: dict) -> None:
    write(db, project, conversation_events("a", datetime(2026, 3, 9, 23, 59), 2))
    write(db, project, conversation_events("b", datetime(2026, 3, 10, 0, 1), 2))
    write(db, project, conversation_events("c", datetime(2026, 3, 10, 18, 0), 2))
    with db.reader() as conn:
        series = metrics.context_series(
            conn, project.pk, "volume", start=datetime(2026, 3, 9), end=datetime(2026, 3, 11, 12), period=period
        )
    assert series["conversations"] == expected
    assert sum(series["messages"].values()) == 6


def test_rating_series(db: Database, project: Project) -> None:
    write(db, project, conversation_events("a", T0, 4))
    write(
        db,
        project,
        [
            {"type": "rating", "conversation_id": "a", "message_id": "a-m1", "rating": 1},
            {"type": "rating", "conversation_id": "a", "message_id": "a-m3", "rating": -1},
            {"type": "rating", "conversation_id": "a", "message_id": "a-m0", "rating": 1},
        ],
    )
    with db.reader() as conn:
        series = metrics.context_series(
            conn, project.pk, "rating", start=T0 - timedelta(days=1), end=T0 + timedelta(1), period="day"
        )
    assert series["positive"]["2026-03-10"] == 2.0
    assert series["negative"]["2026-03-10"] == 1.0
    assert series["average"] == {"2026-03-10": pytest.approx(1 / 3, abs=1e-3)}


def test_end_users_first_and_last_seen(db: Database, project: Project) -> None:
    from sqlalchemy import select

    from convolens.store.tables import end_user

    write(db, project, conversation_events("a", T0, 2, user="alice"))
    write(db, project, conversation_events("b", T0 - timedelta(days=3), 2, user="alice"))
    with db.reader() as conn:
        row = conn.execute(
            select(end_user.c.first_seen, end_user.c.last_seen).where(
                end_user.c.project_pk == project.pk, end_user.c.external_id == "alice"
            )
        ).one()
    assert row.first_seen == T0 - timedelta(days=3)
    assert row.last_seen == T0 + timedelta(seconds=1)


def test_a_snapshot_agrees_with_itself_while_plain_reads_see_each_commit(db: Database) -> None:
    """``snapshot()`` keeps one view across a concurrent commit; on PostgreSQL ``reader()`` (autocommit,
    so that no transaction is left to roll back) sees every commit at its next statement."""
    project = make_project(db, f"snap-{datetime.now().timestamp()}")
    write(db, project, conversation_events("s1", T0))

    def count(conn) -> int:  # type: ignore[no-untyped-def]
        return conn.exec_driver_sql(
            f"SELECT count(*) FROM conversation WHERE project_pk = {int(project.pk)}"
        ).scalar_one()

    with db.snapshot() as frozen, db.reader() as live:
        assert count(frozen) == 1 and count(live) == 1
        write(db, project, conversation_events("s2", T0))
        assert count(frozen) == 1  # still the first view
        assert count(live) == (1 if db.is_sqlite else 2)  # SQLite's reads hold a snapshot until they end
    if not db.is_sqlite:
        from psycopg.pq import TransactionStatus

        with db.reader() as conn:
            count(conn)
            assert conn.connection.dbapi_connection.info.transaction_status == TransactionStatus.IDLE


def test_driver_look_ups_are_never_prepared_on_postgresql(postgres_url: str) -> None:
    """A prepared statement may get a generic plan made while the table was small: the look-up of a
    batch's message ids became a ~1 s scan on a grown table that way. Look-ups by id lists are planned
    for their parameters every time; inserts may be prepared."""
    from convolens.store.driver import Statements

    db = Database(postgres_url)
    migrate.upgrade(db)
    try:
        with db.writer() as conn:
            sql = Statements(conn)
            for _ in range(12):  # past psycopg's prepare threshold of 5
                sql.select_by_ids("id", "message", 1, ["a", "b"])
            prepared = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'SELECT id FROM unnest%%'"
            ).scalar_one()
        assert prepared == 0
    finally:
        db.dispose()


def test_look_ups_by_id_find_the_project_s_rows_in_chunks(db: Database, project: Project) -> None:
    """Ingest's look-up of a batch's ids (an array joined to the table on PostgreSQL, an ``IN`` list on
    SQLite): the project's rows with those ids, none of another project's, across several chunks."""
    from convolens.store.driver import Statements

    other = make_project(db)
    events = [e for n in range(30) for e in conversation_events(f"c{n}", T0, n=1)]
    write(db, project, events)
    write(db, other, conversation_events("c-other", T0, n=1) + conversation_events("c1", T0, n=1))
    wanted = [f"c{n}-m0" for n in range(0, 30, 2)] + ["c-other-m0", "missing", "c1-m0"]
    with db.reader() as conn:
        sql = Statements(conn)
        found = sql.select_by_ids("id", "message", project.pk, wanted, chunk=4)
        conversations = sql.select_by_ids("id, pk", "conversation", other.pk, ["c1", "c-other", "c2"], chunk=2)
    assert sorted(row[0] for row in found) == sorted({f"c{n}-m0" for n in range(0, 30, 2)} | {"c1-m0"})
    assert len(found) == 16  # c1-m0 once: the other project's c1-m0 is not this project's
    assert sorted(row[0] for row in conversations) == ["c-other", "c1"]


def test_last_seen_moves_by_more_than_the_slack_on_postgresql(db: Database, project: Project) -> None:
    """On PostgreSQL a user's last_seen advances only when it moves by more than a minute, so a busy
    user's row is not locked by every batch; an earlier first_seen always applies. SQLite is exact."""
    from sqlalchemy import select

    from convolens.store.ingest import LAST_SEEN_SLACK
    from convolens.store.tables import end_user

    def seen() -> tuple[datetime, datetime]:
        with db.reader() as conn:
            row = conn.execute(
                select(end_user.c.first_seen, end_user.c.last_seen).where(
                    end_user.c.project_pk == project.pk, end_user.c.external_id == "bob"
                )
            ).one()
        return row.first_seen, row.last_seen

    write(db, project, conversation_events("s1", T0, 1, user="bob"))
    assert seen() == (T0, T0)
    soon = T0 + LAST_SEEN_SLACK / 2
    write(db, project, conversation_events("s2", soon, 1, user="bob"))
    assert seen() == (T0, T0 if not db.is_sqlite else soon)
    later = T0 + LAST_SEEN_SLACK * 2
    write(db, project, conversation_events("s3", later, 1, user="bob"))
    assert seen() == (T0, later)
    earlier = T0 - timedelta(seconds=5)  # within the slack, but first_seen moves whatever the amount
    write(db, project, conversation_events("s4", earlier, 1, user="bob"))
    assert seen() == (earlier, later)
