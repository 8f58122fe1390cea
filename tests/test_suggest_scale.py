"""Suggested topics over a pool larger than the sample they are fitted on: every message of the pool is
assigned, a chunk at a time, with the languages the enrichment stored; the store reads the pool as keys,
a sample, and chunks of vectors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import insert, select, update

from conftest import REPO, make_project, separate_database
from convolens.enrich import embedding, suggest
from convolens.enrich import language as languages_of
from convolens.store import suggestions, topics
from convolens.store.db import Database
from convolens.store.tables import message, message_embedding, message_topic
from convolens.timeutil import utcnow
from test_suggestion_timing import _add_enriched


def test_a_pool_larger_than_the_sample_is_assigned_chunk_by_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [json.loads(line) for line in (REPO / "tests" / "data" / "topics.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in rows]
    truth = np.unique([r["topic"] for r in rows], return_inverse=True)[1]
    base = embedding.embed(texts)
    languages = [languages_of.detect(t) for t in texts]
    copies = 4  # each message four times, jittered: 2,032 messages, fitted on 400 of them
    rng = np.random.default_rng(1)
    vectors = np.concatenate([base + rng.normal(0, 0.01, base.shape).astype(np.float32) for _ in range(copies)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    monkeypatch.setattr(suggest, "FIT_SAMPLE", 400)
    monkeypatch.setattr(suggest, "CHUNK", 300)
    clusters = suggest.cluster(vectors, texts * copies, languages=languages * copies)
    assert 8 <= len(clusters) <= 16, [c.name for c in clusters]
    members = np.concatenate([c.members for c in clusters])
    assert len(np.unique(members)) == len(members)  # no message in two suggestions
    assert len(members) >= 0.8 * len(vectors)  # the pool's messages, not the sample's 400
    # A message and its copies land together, as they would with the whole pool in memory.
    where = np.full(len(vectors), -1)
    for k, c in enumerate(clusters):
        where[c.members] = k
    together = (where.reshape(copies, -1) == where[: len(texts)]).all(axis=0)
    assert together[where[: len(texts)] >= 0].mean() >= 0.95
    purity = [np.bincount(truth[c.members % len(texts)]).max() / len(c.members) for c in clusters]
    assert np.average(purity, weights=[len(c.members) for c in clusters]) >= 0.85
    assert all(len(c.members) >= 20 for c in clusters)  # sizes counted on the pool (≥ 1% of 2,032)


@pytest.fixture
def pool_db(database_url: str, tmp_path: Path) -> Iterator[Database]:
    with separate_database(database_url, tmp_path, "pool") as database:
        yield database


def test_the_pool_is_read_as_keys_a_sample_and_chunks(pool_db: Database) -> None:
    project = make_project(pool_db, "pool")
    pks = _add_enriched(pool_db, project, 45)
    with pool_db.writer() as conn:
        for i, pk in enumerate(pks):  # each vector says which message it is; languages as stored
            vector = np.array([i, 1, 0, 0], dtype=np.float16).tobytes()
            conn.execute(update(message_embedding).where(message_embedding.c.message_pk == pk).values(vector=vector))
            conn.execute(update(message).where(message.c.pk == pk).values(language="ko" if i % 2 else "en"))
        conn.execute(update(message).where(message.c.pk == pks[0]).values(content="long " * 20_000))
        topic_pk = topics.create(conn, project.pk, name="Covered", kind="keyword", definition={}, now=utcnow())
        conversation = conn.execute(select(message.c.conversation_pk).where(message.c.pk == pks[0])).scalar_one()
        conn.execute(
            insert(message_topic),
            [{"message_pk": pk, "topic_pk": topic_pk, "project_pk": project.pk, "conversation_pk": conversation,
              "created_at": utcnow(), "score": 1.0} for pk in pks[10:16]],
        )  # fmt: skip
    uncovered = [pk for i, pk in enumerate(pks) if not 10 <= i < 16]
    with pool_db.reader() as conn:
        pool = suggestions.read_pool(conn, project.pk, sample=12)
        newest = suggestions.read_pool(conn, project.pk, limit=20)
        whole = suggestions.read_pool(conn, project.pk)
    # A sampled text is cut (a message may hold 100,000 characters; 20,000 are sampled).
    assert max(len(t) for t in whole.sample.texts) == suggestions.SAMPLE_CHARS
    assert pool.pks.tolist() == uncovered and pool.size == 39 and pool.newest == pks[-1]
    assert newest.pks.tolist() == uncovered[-20:]  # the newest, when the pool is limited
    sample = pool.sample
    assert len(sample.positions) == 12 and len(sample.texts) == 12
    index = [pks.index(int(k)) for k in pool.pks[sample.positions]]
    assert sample.vectors[:, 0].tolist() == index
    assert sample.languages == ["ko" if i % 2 else "en" for i in index]
    seen = []
    for positions, vectors, languages in suggestions.pool_chunks(pool_db.reader, pool, size=8):
        assert [pks.index(int(k)) for k in pool.pks[positions]] == vectors[:, 0].astype(int).tolist()
        assert languages == ["ko" if int(v) % 2 else "en" for v in vectors[:, 0]]
        seen += positions.tolist()
    assert seen == list(range(39))  # every message of the pool once, none a topic covers
