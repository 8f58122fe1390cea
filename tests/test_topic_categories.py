"""Topic categories: the upper level of the topic map. Stored by the clustering run with ids that stay
while most of their topics stay; read through the topics API and ``/api/v1/metrics?level=category``,
where a message counts once in a category however many of its topics it is in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from conftest import Project, RunningServer, separate_database
from convolens.enrich import embedding
from convolens.store import categories, suggestions, topics
from convolens.store.db import Database
from convolens.store.tables import topic
from convolens.timeutil import utcnow

# The encoder's width: the session's server matches every stored suggestion against real messages.
DIMENSIONS = embedding.DIMENSIONS


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIMENSIONS).astype(np.float32)
    return v / np.linalg.norm(v)


def _suggestion(seed: int, jitter: int = 0) -> suggestions.Suggestion:
    centre = _unit(seed) + 0.05 * _unit(1000 + jitter) if jitter else _unit(seed)
    return suggestions.Suggestion(
        name=f"topic {seed}", keywords=[f"k{seed}"], phrases=[f"phrase {seed}"],
        centroid=centre / np.linalg.norm(centre), conversation_ids=[f"c{seed}"], size=10, threshold=0.5,
    )  # fmt: skip


def _group(name: str, indexes: list[int]) -> suggestions.CategorySuggestion:
    return suggestions.CategorySuggestion(name, _unit(hash(name) % 1000), indexes)


def _run(db: Database, project: Project, found: list, grouped: list) -> dict[str, int]:
    with db.writer() as conn:
        return suggestions.replace(conn, project.pk, found, utcnow(), grouped)


def _category_of(db: Database, project: Project) -> dict[str, int | None]:
    """Each suggestion's name -> its category pk."""
    with db.reader() as conn:
        rows = conn.execute(select(topic.c.name, topic.c.category_pk).where(topic.c.project_pk == project.pk))
        return {name: pk for name, pk in rows}


def _names(db: Database, project: Project) -> dict[int, str]:
    with db.reader() as conn:
        return {c.pk: c.name for c in categories.list_categories(conn, project.pk)}


def test_a_category_keeps_its_id_while_most_of_its_topics_stay(db: Database, project: Project) -> None:
    # Run 1: six suggestions in two categories.
    first = [_suggestion(s) for s in range(6)]
    counts = _run(db, project, first, [_group("Billing", [0, 1, 2]), _group("Delivery", [3, 4, 5])])
    assert counts["categories_new"] == 2
    before = _category_of(db, project)
    billing, delivery = before["topic 0"], before["topic 3"]
    assert billing is not None and delivery is not None and billing != delivery
    assert {before[f"topic {s}"] for s in (0, 1, 2)} == {billing}
    assert {before[f"topic {s}"] for s in (3, 4, 5)} == {delivery}

    # Run 2: the same clusters (centres moved a little: the same suggestions), a new one, and topic 2
    # moved to the other category; the categories come back under other names.
    second = [_suggestion(s, jitter=1) for s in range(6)] + [_suggestion(6)]
    counts = _run(db, project, second, [_group("Payments", [0, 1, 6]), _group("Shipping", [2, 3, 4, 5])])
    assert (counts["kept"], counts["new"], counts["categories_kept"], counts["categories_new"]) == (6, 1, 2, 0)
    after = _category_of(db, project)
    assert after["topic 0"] == after["topic 1"] == after["topic 6"] == billing  # 2 of its 3 stayed
    assert after["topic 2"] == after["topic 3"] == delivery  # all of its 3 stayed, one joined
    assert _names(db, project) == {billing: "Billing", delivery: "Delivery"}  # names stay with the ids

    # Run 3: Delivery's four topics scatter one to a category: none of the new ones is mostly Delivery.
    counts = _run(
        db, project, second,
        [_group("A", [0, 1, 6, 2]), _group("B", [3]), _group("C", [4]), _group("D", [5])],
    )  # fmt: skip
    assert (counts["categories_kept"], counts["categories_new"], counts["categories_dropped"]) == (1, 3, 1)
    names = _names(db, project)
    assert billing in names and delivery not in names
    assert _category_of(db, project)["topic 5"] not in (None, billing, delivery)


def test_a_category_an_admin_put_a_topic_in_outlives_its_suggestions(db: Database, project: Project) -> None:
    _run(db, project, [_suggestion(s) for s in range(4)], [_group("Billing", [0, 1]), _group("Delivery", [2, 3])])
    billing = _category_of(db, project)["topic 0"]
    with db.writer() as conn:
        pk = topics.create(conn, project.pk, name="Refunds", kind="keyword", definition={"keywords": ["refund"]},
                           now=utcnow())  # fmt: skip
        categories.assign(conn, project.pk, pk, billing)
    # The next run finds only Delivery's topics: Billing's suggestions go, Billing stays for Refunds.
    counts = _run(db, project, [_suggestion(2), _suggestion(3)], [_group("Delivery", [0, 1])])
    assert counts["dropped"] == 2 and counts["categories_dropped"] == 0
    assert _category_of(db, project)["Refunds"] == billing
    assert billing in _names(db, project)


# -- the API ----------------------------------------------------------------------------------------


def _exchange(cid: str, text: str, day: str) -> list[dict]:
    return [
        {"type": "conversation", "id": cid, "user_id": f"user-{cid}"},
        {"type": "message", "conversation_id": cid, "id": f"{cid}-u", "role": "user", "content": text,
         "timestamp": f"{day}T10:00:00Z"},
        {"type": "message", "conversation_id": cid, "id": f"{cid}-a", "role": "assistant", "content": "Sure.",
         "timestamp": f"{day}T10:00:05Z", "model": "gpt-4o-mini", "input_tokens": 1000, "output_tokens": 10},
    ]  # fmt: skip


@pytest.fixture
def categorised(db: Database, server: RunningServer, project: Project) -> Iterator[tuple[httpx.Client, dict]]:
    """Billing (Refunds, Invoices) and Delivery (Parcels) categories, Greetings uncategorised, and four
    conversations: one whose user message is in both of Billing's topics."""
    with db.writer() as conn:
        found = [categories.Found(name, _unit(i), []) for i, name in enumerate(("Billing", "Delivery"))]
        categories.place(conn, project.pk, found, utcnow())
        ids = {c.name: str(c.pk) for c in categories.list_categories(conn, project.pk)}
    client = server.client(project.admin_token)
    for name, word, category in (("Refunds", "refund", "Billing"), ("Invoices", "invoice", "Billing"),
                                 ("Parcels", "parcel", "Delivery"), ("Greetings", "hello", None)):  # fmt: skip
        body = {"name": name, "kind": "keyword", "keywords": [word]}
        if category:
            body["category_id"] = ids[category]
        response = client.post("/api/v1/topics", json=body)
        assert response.status_code == 201, response.text
    events = (
        _exchange("c1", "I need a refund for this invoice", "2026-11-02")
        + _exchange("c2", "A refund please", "2026-11-02")
        + _exchange("c3", "Where is my parcel?", "2026-11-03")
        + _exchange("c4", "hello, my invoice is wrong", "2026-11-03")
    )
    assert client.post("/api/v1/ingest", json={"events": events}).status_code == 202
    deadline = time.monotonic() + 60
    while any(
        m["sentiment"] is None
        for c in ("c1", "c2", "c3", "c4")
        for m in client.get(f"/api/v1/conversations/{c}").json()["messages"]
        if m["role"] == "user"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    yield client, ids
    client.close()


WINDOW = {"start_time": "2026-11-01T00:00:00Z", "end_time": "2026-11-04T00:00:00Z", "period": "week"}


def _totals(client: httpx.Client, **params: str) -> dict[str, dict]:
    response = client.get("/api/v1/metrics", params={**WINDOW, "group_by": "topic", **params})
    assert response.status_code == 200, response.text
    out = {}
    for s in response.json()["series"]:
        (week,) = s["data"].values()
        out[s["group"]] = week
    return out


def test_category_figures_count_each_message_once(categorised: tuple[httpx.Client, dict]) -> None:
    client, _ = categorised
    by_topic = _totals(client)
    assert {t: f["messages"] for t, f in by_topic.items()} == {"Refunds": 2, "Invoices": 2, "Parcels": 1,
                                                               "Greetings": 1}  # fmt: skip
    by_category = _totals(client, level="category")
    assert set(by_category) == {"Billing", "Delivery", "Uncategorised"}
    billing = by_category["Billing"]
    # c1's message is in Refunds and Invoices: once in Billing (3 messages, not 2 + 2), and its reply's
    # tokens once too (three conversations' replies, not four).
    assert (billing["messages"], billing["conversations"], billing["users"]) == (3, 3, 3)
    assert billing["input_tokens"] == 3000
    assert (by_category["Delivery"]["messages"], by_category["Uncategorised"]["messages"]) == (1, 1)
    assert by_category["Delivery"] == by_topic["Parcels"]
    # level=topic is the default, and unchanged
    assert _totals(client, level="topic") == by_topic


@pytest.mark.parametrize(
    "params", [{"group_by": "topic", "level": "everything"}, {"group_by": "language", "level": "category"}]
)
def test_a_bad_level_is_a_422_naming_it(api: httpx.Client, params: dict) -> None:
    response = api.get("/api/v1/metrics", params=params)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "level"


def test_topics_carry_their_category(categorised: tuple[httpx.Client, dict]) -> None:
    client, ids = categorised
    listed = {t["name"]: t["category"] for t in client.get("/api/v1/topics").json()["topics"]}
    assert listed == {
        "Refunds": {"id": ids["Billing"], "name": "Billing"},
        "Invoices": {"id": ids["Billing"], "name": "Billing"},
        "Parcels": {"id": ids["Delivery"], "name": "Delivery"},
        "Greetings": None,
    }
    found = client.get("/api/v1/topic_categories").json()
    assert [(c["name"], len(c["topics"])) for c in found["categories"]] == [("Billing", 2), ("Delivery", 1)]
    # An admin moves a topic: PUT with another category, or none.
    parcels = next(t for t in client.get("/api/v1/topics").json()["topics"] if t["name"] == "Parcels")
    body = {"name": "Parcels", "kind": "keyword", "keywords": ["parcel"], "category_id": ids["Billing"]}
    moved = client.put(f"/api/v1/topics/{parcels['id']}", json=body).json()
    assert moved["category"]["name"] == "Billing"
    # Only its category changed: its matches stay, no backfill starts over.
    assert moved["backfill"] == parcels["backfill"] and moved["updated_at"] == parcels["updated_at"]
    assert _totals(client)["Parcels"]["messages"] == 1
    body.pop("category_id")
    assert client.put(f"/api/v1/topics/{parcels['id']}", json=body).json()["category"] is None


@pytest.mark.parametrize("category_id", ["999999999", "abc", "1" * 30])
def test_an_unknown_category_is_a_422_naming_the_field(
    server: RunningServer, project: Project, category_id: str
) -> None:
    body = {"name": "Refunds", "kind": "keyword", "keywords": ["refund"], "category_id": category_id}
    with server.client(project.admin_token) as client:
        response = client.post("/api/v1/topics", json=body)
    assert response.status_code == 422, response.text
    assert "category_id" in response.text


@pytest.fixture
def own_db(database_url: str, tmp_path: Path) -> Iterator[Database]:
    """A database of the test's own: it migrates down and up."""
    with separate_database(database_url, tmp_path, "migrated") as database:
        yield database


def test_the_migration_down_and_up_keeps_every_match(own_db: Database) -> None:
    """On SQLite, dropping the column copies the topic table, and dropping the old one would delete
    every match by cascade."""
    from alembic import command
    from sqlalchemy import func, insert

    from convolens.store import migrate, projects
    from convolens.store.tables import conversation, message, message_topic

    now = utcnow()
    with own_db.writer() as conn:
        pk, _ = projects.ensure_project(conn, "migrated")
        topic_pk = topics.create(conn, pk, name="a", kind="keyword", definition={"keywords": ["a"]}, now=now)
        conv = conn.execute(
            insert(conversation).values(project_pk=pk, id="c", started_at=now, last_message_at=now, created_at=now)
        ).inserted_primary_key[0]
        row = {"project_pk": pk, "conversation_pk": conv, "id": "m", "position": 0, "role": "user", "kind": "text"}
        msg = conn.execute(
            insert(message).values(**row, content="a", created_at=now, ingested_at=now)
        ).inserted_primary_key[0]
        conn.execute(insert(message_topic).values(message_pk=msg, topic_pk=topic_pk, project_pk=pk,
                                                  conversation_pk=conv, created_at=now, score=1.0))  # fmt: skip
    config = migrate.alembic_config()
    with own_db.write_engine.connect() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0008")
        conn.commit()
    with own_db.write_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(message_topic)).scalar_one() == 1
    migrate.upgrade(own_db)
    with own_db.reader() as conn:
        assert conn.execute(select(func.count()).select_from(message_topic)).scalar_one() == 1
        assert topics.get(conn, pk, topic_pk).category_pk is None
