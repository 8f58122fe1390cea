"""The users' running figures on both backends: after ingest, enrichment, rating changes, erasure and a
rebuild they equal a recomputation from the messages; the users page and the read API sort by every
column, the averages included."""

from __future__ import annotations

import random
import re
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import case, func, select

from conftest import Project, make_project
from convolens.schemas.ingest import IngestBatch
from convolens.store import end_users, erasure, user_figures
from convolens.store.db import Database
from convolens.store.ingest import apply_batch
from convolens.store.tables import conversation, end_user, message, rollup_dirty, rollup_state, user_day_figures
from convolens.store.tables import user_figures as figures_table
from convolens.timeutil import utcnow
from convolens.worker.runner import Worker
from figures_support import same_figures

DAY0 = datetime(2026, 10, 5)
TEXTS = ["I need a refund, this is terrible", "Thanks, that works perfectly!", "환불은 어떻게 받나요?", "still broken"]


def write(db: Database, project_pk: int, events: list[dict]) -> None:
    with db.writer() as conn:
        apply_batch(conn, project_pk, IngestBatch.model_validate({"events": events}), utcnow())


def seed(db: Database, project: Project, conversations: int = 30) -> None:
    rng = random.Random(3)
    events: list[dict] = []
    for c in range(conversations):
        at = DAY0 + timedelta(days=rng.randint(0, 9), hours=rng.randint(0, 23))
        events.append({"type": "conversation", "id": f"c{c}", "user_id": f"u{rng.randint(0, 5)}"})
        for i in range(rng.randint(1, 5)):
            user = i % 2 == 0
            events.append(
                {
                    "type": "message",
                    "conversation_id": f"c{c}",
                    "id": f"c{c}-{i}",
                    "role": "user" if user else "assistant",
                    "content": rng.choice(TEXTS) if user else "Here you are.",
                    "timestamp": (at + timedelta(minutes=50 * i)).isoformat() + "Z",
                    **({} if user else {"rating": rng.choice([1, -1, None])}),
                }
            )
    # A user whose only conversation has no sentiment or rating yet: sorts last by the averages.
    events.append({"type": "conversation", "id": "quiet", "user_id": "u-quiet"})
    events.append({"type": "event", "conversation_id": "quiet", "id": "quiet-e", "name": "opened"})
    write(db, project.pk, events)


def drain(db: Database, project: Project | None = None) -> None:
    """Run a worker until nothing is left; with ``project``, also until no other worker (a test server's
    embedded one) holds a day of it or left one marked."""
    for _ in range(300):
        Worker(db, rollup_settle=timedelta(0), rollup_rest=0.0).drain()
        if project is None:
            return
        with db.reader() as conn:
            busy = conn.execute(
                select(func.count())
                .select_from(rollup_state)
                .where(rollup_state.c.project_pk == project.pk, rollup_state.c.lease_owner.is_not(None))
            ).scalar_one()
            busy += conn.execute(
                select(func.count()).select_from(rollup_dirty).where(rollup_dirty.c.project_pk == project.pk)
            ).scalar_one()
        if not busy:
            return
        time.sleep(0.1)
    raise AssertionError("the project's days stayed leased or marked")


def recomputed(db: Database, project: Project) -> dict[str, tuple]:
    """(conversations, messages, avg sentiment, avg rating) per user id, from the base tables."""
    with db.reader() as conn:
        conversations = dict(
            conn.execute(
                select(end_user.c.external_id, func.count(conversation.c.pk))
                .select_from(end_user.outerjoin(conversation, conversation.c.end_user_pk == end_user.c.pk))
                .where(end_user.c.project_pk == project.pk)
                .group_by(end_user.c.external_id)
            ).all()
        )
        rows = conn.execute(
            select(
                end_user.c.external_id,
                func.count(message.c.pk),
                func.avg(case((message.c.role == "user", message.c.sentiment))),
                func.avg(message.c.rating),
            )
            .select_from(
                end_user.join(conversation, conversation.c.end_user_pk == end_user.c.pk).join(
                    message, message.c.conversation_pk == conversation.c.pk
                )
            )
            .where(end_user.c.project_pk == project.pk, message.c.kind != "event")
            .group_by(end_user.c.external_id)
        ).all()
    out = {uid: (n, 0, None, None) for uid, n in conversations.items()}
    for uid, n, sentiment, rating in rows:
        out[uid] = (
            conversations[uid],
            n,
            None if sentiment is None else round(float(sentiment), 3),
            None if rating is None else round(float(rating), 3),
        )
    return out


def page_figures(db: Database, project: Project, sort: str = "user_id", descending: bool = False) -> list[tuple]:
    with db.reader() as conn:
        rows, total = end_users.users_page(
            conn, project.pk, search=None, sort=sort, descending=descending, page=1, per_page=1000
        )
    assert total == len(rows)
    return [(r.user_id, r.conversations, r.messages, r.avg_sentiment, r.avg_rating) for r in rows]


def assert_figures_match(db: Database, project: Project) -> None:
    expected = recomputed(db, project)
    shown = {uid: (c, m, s, r) for uid, c, m, s, r in page_figures(db, project)}
    assert same_figures(shown, expected, 0.001), (shown, expected)
    # Conversations by latest outcome, kept running too (the page no longer counts them at each view).
    with db.reader() as conn:
        counted: dict[str, dict[str, int]] = {}
        for uid, outcome, n in conn.execute(
            select(end_user.c.external_id, conversation.c.outcome, func.count())
            .select_from(end_user.join(conversation, conversation.c.end_user_pk == end_user.c.pk))
            .where(end_user.c.project_pk == project.pk, conversation.c.outcome.in_(user_figures.OUTCOMES))
            .group_by(end_user.c.external_id, conversation.c.outcome)
        ):
            counted.setdefault(uid, {})[outcome] = n
        rows, _ = end_users.users_page(
            conn, project.pk, search=None, sort="user_id", descending=False, page=1, per_page=1000
        )
    assert {r.user_id: r.outcomes for r in rows if r.outcomes} == counted
    assert sum(sum(c.values()) for c in counted.values()) > 0


@pytest.fixture
def users(db: Database) -> Project:
    project = make_project(db, "figures")
    seed(db, project)
    drain(db, project)  # enrichment (sentiment) and the rollups, with the users' figures
    return project


def test_figures_equal_the_messages_through_changes(db: Database, users: Project) -> None:
    assert_figures_match(db, users)
    figures = recomputed(db, users)
    assert any(s is not None for _, _, s, _ in figures.values())  # enrichment ran: averages to compare
    assert any(r is not None for _, _, _, r in figures.values())
    # Rating changes, and a new conversation on an old day, move them.
    write(db, users.pk, [{"type": "rating", "conversation_id": "c1", "message_id": "c1-1", "rating": -1}])
    write(db, users.pk, [{"type": "rating", "conversation_id": "c2", "message_id": "c2-1", "rating": 1}])
    write(
        db,
        users.pk,
        [
            {"type": "conversation", "id": "late", "user_id": "u1"},
            {"type": "message", "conversation_id": "late", "id": "late-0", "role": "user",
             "content": "this is awful", "timestamp": (DAY0 + timedelta(days=2)).isoformat() + "Z"},
            {"type": "message", "conversation_id": "late", "id": "late-1", "role": "assistant",
             "content": "sorry", "timestamp": (DAY0 + timedelta(days=2)).isoformat() + "Z", "rating": -1},
        ],
    )  # fmt: skip
    drain(db, users)
    assert_figures_match(db, users)
    assert recomputed(db, users) != figures
    # Erasure: the user's rows go at once, the others stay right after their days are redone.
    with db.reader() as conn:
        u2 = conn.execute(
            select(end_user.c.pk).where(end_user.c.project_pk == users.pk, end_user.c.external_id == "u2")
        ).scalar_one()
    with db.writer() as conn:
        assert erasure.erase_end_user(conn, users.pk, "u2") is not None
    with db.reader() as conn:
        assert conn.execute(select(func.count()).where(figures_table.c.end_user_pk == u2)).scalar_one() == 0
        assert conn.execute(select(func.count()).where(user_day_figures.c.end_user_pk == u2)).scalar_one() == 0
    drain(db, users)
    assert "u2" not in {row[0] for row in page_figures(db, users)}
    assert_figures_match(db, users)


def test_rebuild_recomputes_the_figures(db: Database, users: Project) -> None:
    expected = page_figures(db, users)
    with db.writer() as conn:
        conn.execute(figures_table.update().where(figures_table.c.project_pk == users.pk).values(messages=999))
        assert user_figures.rebuild(conn, users.pk, utcnow()) >= 10  # the seed's days were marked
    assert all(m == 0 for _, _, m, _, _ in page_figures(db, users))  # until the worker redoes the days
    drain(db, users)
    assert page_figures(db, users) == expected


@pytest.mark.parametrize("sort", end_users.SORTS)
def test_users_page_sorts_by_every_column(db: Database, users: Project, sort: str) -> None:
    with db.reader() as conn:
        pks = dict(
            conn.execute(select(end_user.c.external_id, end_user.c.pk).where(end_user.c.project_pk == users.pk)).all()
        )
        seen = {
            uid: (first, last)
            for uid, first, last in conn.execute(
                select(end_user.c.external_id, end_user.c.first_seen, end_user.c.last_seen).where(
                    end_user.c.project_pk == users.pk
                )
            )
        }
    figures = recomputed(db, users)
    # The page sorts by the stored averages at full precision; ``recomputed`` rounds to three places, and
    # sorting by those put two users whose averages differ in the fourth place in key order. So: the
    # stored averages are within half a unit of the recomputed ones' third place (on a rounding boundary,
    # -0.5425, the two sums round apart: figures_support), and the page's order is theirs (ties by the key).
    with db.reader() as conn:
        stored = {
            uid: (sentiment, rating)
            for uid, sentiment, rating in conn.execute(
                select(end_user.c.external_id, figures_table.c.avg_sentiment, figures_table.c.avg_rating)
                .select_from(end_user.outerjoin(figures_table, figures_table.c.end_user_pk == end_user.c.pk))
                .where(end_user.c.project_pk == users.pk)
            )
        }
    for uid, (sentiment, rating) in stored.items():
        for kept, base in ((sentiment, figures[uid][2]), (rating, figures[uid][3])):
            assert (kept is None) == (base is None) and (kept is None or abs(kept - base) <= 0.0005 + 1e-9), uid
    value = {
        "user_id": lambda uid: uid,
        "conversations": lambda uid: figures[uid][0],
        "messages": lambda uid: figures[uid][1],
        "avg_sentiment": lambda uid: stored[uid][0],
        "avg_rating": lambda uid: stored[uid][1],
        "first_seen": lambda uid: seen[uid][0],
        "last_seen": lambda uid: seen[uid][1],
    }[sort]
    for descending in (False, True):
        shown = [row[0] for row in page_figures(db, users, sort, descending)]
        present = [uid for uid in figures if value(uid) is not None]
        missing = sorted((uid for uid in figures if value(uid) is None), key=lambda uid: pks[uid])
        # Ties by the user's key; users without the figure last, either way.
        ordered = sorted(present, key=lambda uid: pks[uid])
        ordered.sort(key=value, reverse=descending)
        assert shown == ordered + missing, (sort, descending)
    if sort.startswith("avg_"):
        assert shown[-1] == "u-quiet"  # has no sentiment or rating at all


def test_read_api_lists_users_sorted_by_an_average(server, db: Database) -> None:  # type: ignore[no-untyped-def]
    project = make_project(db, "figures-api")
    seed(db, project)
    drain(db, project)
    figures = recomputed(db, project)
    with server.client(project.read_token) as client:
        body = client.get("/api/v1/users", params={"sort": "avg_sentiment", "order": "asc", "per_page": 3}).json()
        assert body["pagination"]["total_records"] == len(figures)
        sentiments = [u["avg_sentiment"] for u in body["users"]]
        lowest = sorted(s for _, _, s, _ in figures.values() if s is not None)[:3]
        assert same_figures(sentiments, lowest, 0.001), (sentiments, lowest)
        assert body["users"][0]["messages"] == figures[body["users"][0]["user_id"]][1]
        bad = client.get("/api/v1/users", params={"sort": "password"})
        assert bad.status_code == 422 and "sort" in bad.text


def test_the_users_page_reads_one_row_per_listed_user(db: Database, users: Project) -> None:
    """Its figures, outcomes included, come from the running figures: no query reads the conversations
    (counting a listed user's outcomes took 0.7-1.9 s at 5M messages for a user with 500,000 of them)."""
    from sqlalchemy import event

    statements: list[str] = []
    with db.reader() as conn:
        event.listen(conn, "before_cursor_execute", lambda *args: statements.append(args[2]))
        rows, _ = end_users.users_page(
            conn, users.pk, search=None, sort="last_seen", descending=True, page=1, per_page=50
        )
    assert rows and any(r.outcomes for r in rows)
    assert statements and not [s for s in statements if re.search(r"\bconversation\b", s)]


def test_the_migration_counts_the_outcomes_already_stored(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """0018 adds the outcome counts to figures already kept: every stored day's and each user's total,
    from the conversations' latest outcomes, so that a day the worker redoes later adds its difference."""
    from alembic import command

    from conftest import separate_database
    from convolens.store import migrate

    with separate_database(database_url, tmp_path, "user_outcomes") as db:
        project = make_project(db, "migrated")
        seed(db, project)
        drain(db, project)
        config = migrate.alembic_config()
        with db.write_engine.connect() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0017")
            conn.commit()
        migrate.upgrade(db)
        assert_figures_match(db, project)
        # And the worker keeps them from there: a new conversation marks its day, which is then redone.
        write(db, project.pk, [{"type": "conversation", "id": "late", "user_id": "u1"}])
        write(
            db,
            project.pk,
            [
                {"type": "message", "conversation_id": "late", "id": "late-0", "role": "user", "content": TEXTS[1]},
            ],
        )
        drain(db, project)
        assert_figures_match(db, project)
