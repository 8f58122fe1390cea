"""The users page's topics of new and returning users on both backends: kept per day by the rollup worker
(store/topic_newness.py), equal to a recomputation from the topic links after ingest, enrichment, a late
message, a topic redefined, erasure and pruning, whether the days are rolled up or still marked; read
without touching a message, a link or a conversation; filled by the migration for links already stored."""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta

from sqlalchemy import event, func, select

from conftest import Project, make_project
from convolens.store import end_users, erasure, retention, topic_newness, topics
from convolens.store.db import Database
from convolens.store.tables import conversation, end_user, message_topic, topic, topic_day_newness
from convolens.timeutil import utcnow
from test_user_figures import drain, write

DAY0 = datetime(2026, 9, 1)
TEXTS = ["I need a refund", "환불은 어떻게 받나요?", "the app is broken again", "what is the weather", "broken refund"]
# Whole days, a window with partial edge days, one inside a single day, and everything.
WINDOWS = [
    (DAY0, DAY0 + timedelta(days=29, hours=23, minutes=59, seconds=59, microseconds=999999)),
    (DAY0 + timedelta(days=3, hours=7), DAY0 + timedelta(days=17, hours=5)),
    (DAY0 + timedelta(days=9, hours=1), DAY0 + timedelta(days=9, hours=22)),
    (datetime(2000, 1, 1), datetime(2100, 1, 1)),
]


def seed(db: Database, project: Project, conversations: int = 40) -> None:
    """Users whose conversations spread over four weeks: each has links in their first week and after."""
    rng = random.Random(5)
    events: list[dict] = []
    for c in range(conversations):
        at = DAY0 + timedelta(days=rng.randint(0, 27), hours=rng.randint(0, 23), minutes=rng.randint(0, 59))
        events.append({"type": "conversation", "id": f"c{c}", "user_id": f"u{rng.randint(0, 6)}"})
        for i in range(rng.randint(1, 4)):
            user = i % 2 == 0
            events.append(
                {
                    "type": "message",
                    "conversation_id": f"c{c}",
                    "id": f"c{c}-{i}",
                    "role": "user" if user else "assistant",
                    "content": rng.choice(TEXTS) if user else "Here you are.",
                    "timestamp": (at + timedelta(minutes=30 * i)).isoformat() + "Z",
                }
            )
    # A conversation without a user: its links are not anyone's, new or returning.
    events.append({"type": "conversation", "id": "anon"})
    events.append({"type": "message", "conversation_id": "anon", "id": "anon-0", "role": "user",
                   "content": "refund", "timestamp": (DAY0 + timedelta(days=4)).isoformat() + "Z"})  # fmt: skip
    write(db, project.pk, events)


def recomputed(db: Database, project: Project, start: datetime, end: datetime) -> list[tuple[str, int, int]]:
    """(topic, new, returning) from the links and their users' first seen, in Python."""
    with db.reader() as conn:
        rows = conn.execute(
            select(topic.c.name, message_topic.c.created_at, end_user.c.first_seen)
            .select_from(
                message_topic.join(topic, topic.c.pk == message_topic.c.topic_pk)
                .join(conversation, conversation.c.pk == message_topic.c.conversation_pk)
                .join(end_user, end_user.c.pk == conversation.c.end_user_pk)
            )
            .where(message_topic.c.project_pk == project.pk, topic.c.status == "active")
        ).all()
    counts: dict[str, list[int]] = {}
    for name, created, first_seen in rows:
        if start <= created <= end:
            pair = counts.setdefault(name, [0, 0])
            pair[0 if created < first_seen + timedelta(days=topic_newness.NEW_USER_DAYS) else 1] += 1
    ordered = sorted(counts.items(), key=lambda item: (-sum(item[1]), item[0]))
    return [(name, new, old) for name, (new, old) in ordered]


def shown(db: Database, project: Project, start: datetime, end: datetime) -> list[tuple[str, int, int]]:
    with db.reader() as conn:
        return end_users.topics_by_newness(conn, project.pk, start, end, limit=50)


def assert_match(db: Database, project: Project) -> None:
    for start, end in WINDOWS:
        assert shown(db, project, start, end) == recomputed(db, project, start, end), (start, end)


def stored_rows(db: Database, project: Project) -> dict[tuple[str, int], tuple[int, int]]:
    t = topic_day_newness.c
    with db.reader() as conn:
        return {
            (day, topic_pk): (new, old)
            for day, topic_pk, new, old in conn.execute(
                select(t.day, t.topic_pk, t.new_links, t.returning_links).where(t.project_pk == project.pk)
            )
        }


def make_topics(db: Database, project: Project) -> dict[str, int]:
    with db.writer() as conn:
        return {
            name: topics.create(conn, project.pk, name=name, kind="keyword", definition={"keywords": words},
                                now=utcnow())
            for name, words in (("Refunds", ["refund", "환불"]), ("Broken", ["broken"]))
        }  # fmt: skip


def newness_project(db: Database, prefix: str) -> Project:
    project = make_project(db, prefix)
    make_topics(db, project)
    seed(db, project)
    drain(db, project)  # enrichment matches the topics; the worker rolls the days up
    return project


def test_figures_equal_the_links_through_changes(db: Database) -> None:
    project = newness_project(db, "newness")
    figures = recomputed(db, project, *WINDOWS[-1])
    # Both kinds of link in both topics, so that a wrong split would show.
    assert {name for name, _, _ in figures} == {"Refunds", "Broken"}
    assert all(new and old for _, new, old in figures), figures
    assert stored_rows(db, project)  # the worker kept them
    assert_match(db, project)

    # A late message on an old day: marked, so read live until redone, then stored.
    old_day = DAY0 + timedelta(days=20, hours=3)
    write(db, project.pk, [
        {"type": "conversation", "id": "late", "user_id": "u1"},
        {"type": "message", "conversation_id": "late", "id": "late-0", "role": "user",
         "content": "refund refund", "timestamp": old_day.isoformat() + "Z"},
    ])  # fmt: skip
    drain(db, project)
    assert recomputed(db, project, *WINDOWS[-1]) != figures
    assert_match(db, project)

    # A topic redefined: its links go (the days it had are marked), the backfill matches again.
    with db.reader() as conn:
        broken = conn.execute(
            select(topic.c.pk).where(topic.c.project_pk == project.pk, topic.c.name == "Broken")
        ).scalar_one()
    with db.writer() as conn:
        topics.redefine(conn, project.pk, broken, utcnow(), name="Weather", definition={"keywords": ["weather"]})
    assert_match(db, project)  # the marked days are read live meanwhile
    drain(db, project)
    assert "Weather" in {name for name, _, _ in recomputed(db, project, *WINDOWS[-1])}
    assert_match(db, project)

    # Erasure: the user's links go, the marked days are read live and then redone.
    with db.writer() as conn:
        assert erasure.erase_end_user(conn, project.pk, "u2") is not None
    assert_match(db, project)
    drain(db, project)
    assert_match(db, project)

    # Pruning the oldest conversations.
    with db.writer() as conn:
        assert retention.prune_batch(conn, project.pk, DAY0 + timedelta(days=6), utcnow()).conversations
    assert_match(db, project)
    drain(db, project)
    assert_match(db, project)
    # What is stored equals what the worker would count now, day by day.
    with db.reader() as conn:
        counted = topic_newness.count_links(conn, project.pk, datetime(2000, 1, 1), datetime(2100, 1, 1))
    assert stored_rows(db, project) == {key: tuple(pair) for key, pair in counted.items()}


def test_the_users_page_reads_no_link_or_message(db: Database) -> None:
    """The rolled-up days come from ``topic_day_newness``: no query reads the topic links, the messages or
    the conversations (joining the window's links to their users took ~250 ms at 5M messages)."""
    project = newness_project(db, "newness-reads")
    start, end = WINDOWS[0]
    statements: list[str] = []
    with db.reader() as conn:
        event.listen(conn, "before_cursor_execute", lambda *args: statements.append(args[2]))
        rows = end_users.topics_by_newness(conn, project.pk, start, end)
    assert rows == recomputed(db, project, start, end) and rows
    assert statements
    assert not [s for s in statements if re.search(r"\b(message_topic|message|conversation|end_user)\b", s)]


def test_the_migration_fills_the_stored_links(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """0021 counts the links already stored, per day and topic, as the worker would."""
    from alembic import command

    from conftest import separate_database
    from convolens.store import migrate

    with separate_database(database_url, tmp_path, "topic_newness") as db:
        project = newness_project(db, "migrated")
        kept = stored_rows(db, project)
        assert kept
        config = migrate.alembic_config()
        with db.write_engine.connect() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0018")
            conn.commit()
        migrate.upgrade(db)
        assert stored_rows(db, project) == kept
        with db.reader() as conn:
            assert conn.execute(select(func.count()).select_from(topic_day_newness)).scalar_one() == len(kept)
        assert_match(db, project)
