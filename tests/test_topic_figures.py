"""Per-topic figures for a product manager (store/topic_figures.py), on both backends: trend against the
previous period, the emerging flag, thumbs-down share, negative share and the unhappy ranking,
languages, representative messages with near-duplicates collapsed, and a bounded number of statements."""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta

import numpy as np
from sqlalchemy import event, select

from conftest import Project, make_project
from convolens.schemas.ingest import IngestBatch
from convolens.store import enrichment, rollups, topic_figures, topics
from convolens.store.db import Database
from convolens.store.enrichment import EnrichmentResult, TopicHit
from convolens.store.ingest import apply_batch
from convolens.store.tables import message
from convolens.timeutil import utcnow

LAST = utcnow().date() - timedelta(days=1)
FIRST = LAST - timedelta(days=13)  # a 14-day range: its last 7 days are "this week", the 7 before "last week"
PREVIOUS = FIRST - timedelta(days=14)
DIM = 512


def _unit(*parts: tuple[int, float]) -> bytes:
    v = np.zeros(DIM, dtype=np.float32)
    for index, weight in parts:
        v[index] = weight
    return (v / np.linalg.norm(v)).astype(np.float16).tobytes()


class Builder:
    """Messages for a project's topics, stored through the ingest path and saved through the enrichment
    store's lease (as the worker would), with the language, sentiment, vector and topic given."""

    def __init__(self, db: Database, project: Project) -> None:
        self.db, self.project = db, project
        self.events: list[dict] = []
        self.results: dict[str, tuple] = {}
        self.n = 0

    def topic(self, name: str) -> int:
        with self.db.writer() as conn:
            return topics.create(
                conn, self.project.pk, name=name, kind="keyword", definition={"keywords": [name]}, now=utcnow()
            )

    def user(
        self,
        topic_pk: int,
        day: date,
        text: str | None = None,
        *,
        label: str = "neutral",
        language: str = "en",
        vector: bytes | None = None,
        reply_rating: int | None = None,
    ) -> None:
        self.n += 1
        conv, mid = f"c{self.n}", f"m{self.n}"
        at = datetime.combine(day, datetime.min.time()) + timedelta(hours=10, seconds=self.n)
        stamp = at.isoformat() + "Z"
        self.events.append({"type": "conversation", "id": conv, "user_id": f"u{self.n % 7}"})
        content = text or f"question {self.n} about topic {topic_pk}"
        self.events.append({"type": "message", "conversation_id": conv, "id": mid, "role": "user",
                            "content": content, "timestamp": stamp})  # fmt: skip
        if reply_rating is not None:
            self.events.append({"type": "message", "conversation_id": conv, "id": f"r{self.n}", "role": "assistant",
                                "content": "an answer", "timestamp": stamp, "rating": reply_rating})  # fmt: skip
        sentiment = {"negative": -0.6, "neutral": 0.0, "positive": 0.6}[label]
        self.results[mid] = (topic_pk, label, sentiment, language, vector or _unit((self.n % 500 + 10, 1.0)))

    def store(self) -> None:
        with self.db.writer() as conn:
            for start in range(0, len(self.events), 500):
                batch = IngestBatch.model_validate({"events": self.events[start : start + 500]})
                apply_batch(conn, self.project.pk, batch, utcnow())
        self.events = []
        owner = f"test-{self.project.name}"
        with self.db.writer() as conn:
            claimed = enrichment._claim_in(conn, self.project.pk, owner, 100_000, timedelta(minutes=5), utcnow())
            ids = dict(
                conn.execute(select(message.c.pk, message.c.id).where(message.c.project_pk == self.project.pk)).all()
            )
            results = []
            for m in claimed:
                got = self.results.get(ids[m.pk])
                if got is None:  # an assistant reply: a language only, as the pipeline gives it
                    results.append(EnrichmentResult(m.pk, "en", None))
                    continue
                topic_pk, label, sentiment, language, vector = got
                results.append(EnrichmentResult(m.pk, language, sentiment, label, vector, [TopicHit(topic_pk, 1.0)]))
            enrichment.save(conn, owner, 1, results)


def _days(first: date, count: int) -> list[date]:
    return [first + timedelta(days=i % 7) for i in range(count)]


def _figures(db: Database, project: Project) -> dict[str, topic_figures.TopicFigures]:
    with db.reader() as conn:
        rows = topics.list_topics(conn, project.pk, ("active", "suggested"))
        return {f.name: f for f in topic_figures.figures(conn, project.pk, rows, first=FIRST, last=LAST)}


def _refresh_rollups(db: Database, project: Project) -> None:
    quick = {"settle": timedelta(0), "lease": timedelta(seconds=60), "rest": 0.0}
    while True:
        with db.writer() as conn:
            due = rollups.claim(conn, "figures-test", utcnow(), **quick, project_pk=project.pk)
        if not due:
            return
        for day in due:
            with db.snapshot() as conn:
                result = rollups.compute(conn, day)
            with db.writer() as conn:
                rollups.store(conn, "figures-test", result, utcnow(), 0.0)


def test_trend_emerging_ratings_and_unhappy_ranking(db: Database) -> None:
    project = make_project(db, "figures")
    b = Builder(db, project)
    this_week, last_week = LAST - timedelta(days=6), FIRST
    fresh, doubling, small, fading = (b.topic(n) for n in ("fresh", "doubling", "small", "fading"))
    # fresh: nothing before, 20 this week; half of them unhappy; 3 of its 4 rated replies thumbs down.
    for i, day in enumerate(_days(this_week, 20)):
        b.user(
            fresh, day, label="negative" if i % 2 else "neutral", reply_rating=(-1 if i < 3 else 1) if i < 4 else None
        )
    # doubling: 10 last week, 25 this week, 20 in the previous period; a fifth unhappy.
    for i, day in enumerate(_days(last_week, 10) + _days(this_week, 25) + _days(PREVIOUS, 20)):
        b.user(doubling, day, label="negative" if i % 5 == 0 else "positive", language="de" if i % 3 else "en")
    # small: 3 last week, 6 this week (doubled but tiny), 9 in the previous period; all unhappy.
    for day in _days(last_week, 3) + _days(this_week, 6) + _days(PREVIOUS, 9):
        b.user(small, day, label="negative")
    # fading: 20 in the previous period, 5 now, nobody unhappy.
    for day in _days(PREVIOUS, 20) + _days(this_week, 5):
        b.user(fading, day, label="positive")
    b.store()

    live = _figures(db, project)
    _refresh_rollups(db, project)
    rolled = _figures(db, project)
    assert {k: v.as_json() for k, v in live.items()} == {k: v.as_json() for k, v in rolled.items()}
    f = rolled
    assert (f["fresh"].messages, f["fresh"].previous_messages, f["fresh"].trend) == (20, 0, "new")
    assert (f["fresh"].this_week, f["fresh"].last_week, f["fresh"].emerging) == (20, 0, True)
    assert (f["doubling"].this_week, f["doubling"].last_week, f["doubling"].emerging) == (25, 10, True)
    assert (f["doubling"].messages, f["doubling"].previous_messages, f["doubling"].trend) == (35, 20, "growing")
    assert (f["small"].this_week, f["small"].last_week, f["small"].emerging) == (6, 3, False)
    assert f["small"].trend == "steady"
    assert (f["fading"].trend, f["fading"].emerging) == ("shrinking", False)

    assert (f["fresh"].ratings_down, f["fresh"].ratings_up, f["fresh"].thumbs_down_share) == (3, 1, 0.75)
    assert f["doubling"].thumbs_down_share is None
    assert f["fresh"].negative_share == 0.5 and f["doubling"].negative_share == 7 / 35
    assert f["doubling"].languages == [("de", 23), ("en", 12)]
    # Volume x negative share: fresh ≈ 10 unhappy messages, small 9, doubling 7; fading none.
    # What the unhappy users said: negative messages only, near the topic's centre like the samples.
    negative = {mid for mid, result in b.results.items() if result[1] == "negative"}
    assert len(f["fresh"].unhappy_samples) == 3 and {s.message_id for s in f["fresh"].unhappy_samples} <= negative
    assert f["fading"].unhappy_samples == []
    ranked = topic_figures.unhappiest(list(f.values()))
    assert [r.name for r in ranked] == ["fresh", "small", "doubling"]


def test_the_rules_at_their_edges() -> None:
    assert topic_figures.emerging(20, 0) and topic_figures.emerging(25, 10) and topic_figures.emerging(10, 5)
    assert not topic_figures.emerging(6, 3) and not topic_figures.emerging(9, 0) and not topic_figures.emerging(19, 10)
    # A project's first week: nothing before it to be new against; doubling still counts.
    assert not topic_figures.emerging(20, 0, history=False) and topic_figures.emerging(20, 10, history=False)
    assert topic_figures.trend(20, 0, history=False) == "unknown"
    assert [topic_figures.trend(c, p) for c, p in ((5, 0), (125, 100), (124, 100), (75, 100), (76, 100), (0, 0))] == [
        "new", "growing", "steady", "shrinking", "steady", "quiet"
    ]  # fmt: skip


def test_representative_messages_are_central_and_not_repeated(db: Database) -> None:
    project = make_project(db, "samples")
    b = Builder(db, project)
    refunds = b.topic("refunds")
    day = LAST - timedelta(days=2)
    b.user(refunds, day, "How do I get a refund for my order?", vector=_unit((0, 1.0)))
    # Nearly the same vector as the first (cosine > 0.95), other words: collapsed.
    b.user(refunds, day, "How can I get my refund for the order", vector=_unit((0, 1.0), (1, 0.1)))
    # The same text as the first once case and punctuation are ignored, another vector: collapsed.
    b.user(refunds, day, "how do I get a REFUND for my order", vector=_unit((0, 0.5), (2, 1.0)))
    b.user(refunds, day, "Refund still not here after two weeks", vector=_unit((0, 0.8), (3, 0.6)))
    b.user(refunds, day, "Can the refund go to another card?", vector=_unit((0, 0.6), (4, 0.8)))
    for i in range(15):  # further from the topic's centre
        b.user(refunds, day, f"unrelated-ish remark {i}", vector=_unit((0, 0.3), (20 + i, 0.954)))
    b.store()
    samples = _figures(db, project)["refunds"].samples
    assert [s.text for s in samples] == [
        "How do I get a refund for my order?",
        "Refund still not here after two weeks",
        "Can the refund go to another card?",
    ]
    assert samples[0].message_id == "m1" and samples[0].conversation_id == "c1"


def test_a_new_project_has_no_new_or_emerging_topics(db: Database) -> None:
    project = make_project(db, "first-week")
    b = Builder(db, project)
    billing = b.topic("billing")
    for day in _days(LAST - timedelta(days=6), 20):
        b.user(billing, day)
    b.store()
    f = _figures(db, project)["billing"]
    assert (f.messages, f.this_week, f.trend, f.emerging) == (20, 20, "unknown", False)
    # Once the project has a message from before the range, the same topic is new, and emerging.
    earlier = b.topic("earlier")
    b.user(earlier, PREVIOUS)
    b.store()
    f = _figures(db, project)["billing"]
    assert (f.trend, f.emerging) == ("new", True)


def _statements(db: Database, project: Project) -> int:
    count = 0

    def counted(*_: object) -> None:
        nonlocal count
        if threading.current_thread() is threading.main_thread():
            count += 1

    event.listen(db.read_engine, "before_cursor_execute", counted)
    try:
        _figures(db, project)
    finally:
        event.remove(db.read_engine, "before_cursor_execute", counted)
    return count


def test_statements_do_not_grow_with_the_topics(db: Database) -> None:
    project = make_project(db, "bounded")
    b = Builder(db, project)
    day = LAST - timedelta(days=1)
    first = b.topic("topic 0")
    b.user(first, day)
    b.store()
    _refresh_rollups(db, project)
    one = _statements(db, project)
    for i in range(1, 50):
        b.user(b.topic(f"topic {i}"), day)
    b.store()
    _refresh_rollups(db, project)
    fifty = _statements(db, project)
    assert fifty == one and one < 12, (one, fifty)
    assert len(_figures(db, project)) == 50
