"""A clustering run that finds the same suggestion again, barely moved, keeps its matches: redefining it
deleted every match, marked its rollup days and backfilled the project again on each run, under the
write lock (issue 22: ~7 ms of lock per thousand matches, a run each time the pool grew by a fifth)."""

from __future__ import annotations

import numpy as np
from sqlalchemy import func, insert, select

from conftest import Project
from convolens.enrich import embedding
from convolens.store import suggestions, topics
from convolens.store.db import Database
from convolens.store.tables import conversation, message, message_topic, rollup_dirty
from convolens.timeutil import utcnow


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=embedding.DIMENSIONS).astype(np.float32)
    return v / np.linalg.norm(v)


def _moved(seed: int, by: float) -> np.ndarray:
    """The centre of ``seed`` moved towards another direction: cosine to the old one falls with ``by``."""
    v = _unit(seed) + by * _unit(10_000 + seed)
    return v / np.linalg.norm(v)


def _found(centre: np.ndarray, name: str, threshold: float = 0.5) -> suggestions.Suggestion:
    return suggestions.Suggestion(
        name=name, keywords=[name], phrases=[name], centroid=centre, conversation_ids=[name], size=40,
        threshold=threshold,
    )  # fmt: skip


def _matches(db: Database, topic_pk: int) -> int:
    with db.reader() as conn:
        return conn.execute(select(func.count()).where(message_topic.c.topic_pk == topic_pk)).scalar_one()


def test_a_suggestion_found_again_barely_moved_keeps_its_matches(db: Database, project: Project) -> None:
    now = utcnow()
    with db.writer() as conn:
        suggestions.replace(conn, project.pk, [_found(_unit(1), "a"), _found(_unit(2), "b")], now)
        (a, b) = [t.pk for t in topics.list_topics(conn, project.pk, ("suggested",))]
        conv = conn.execute(
            insert(conversation).returning(conversation.c.pk),
            [dict(project_pk=project.pk, id="c", started_at=now, last_message_at=now, message_count=6, created_at=now)],
        ).scalar_one()
        pks = (
            conn.execute(
                insert(message).returning(message.c.pk),
                [
                    dict(
                        project_pk=project.pk,
                        conversation_pk=conv,
                        id=f"m{i}",
                        position=i,
                        role="user",
                        kind="message",
                        content="x",
                        created_at=now,
                        ingested_at=now,
                    )
                    for i in range(6)
                ],
            )
            .scalars()
            .all()
        )
        # What the backfill would have matched: three messages each.
        conn.execute(
            insert(message_topic),
            [
                dict(message_pk=pk, topic_pk=t, project_pk=project.pk, conversation_pk=conv, created_at=now, score=0.9)
                for t, chunk in ((a, pks[:3]), (b, pks[3:]))
                for pk in chunk
            ],
        )
        stored = {t.pk: t for t in topics.list_topics(conn, project.pk, ("suggested",))}
        dirty_before = conn.execute(
            select(func.count()).select_from(rollup_dirty).where(rollup_dirty.c.project_pk == project.pk)
        ).scalar_one()

    # The next run: "a" moved a hair (cosine ~0.999) with the same threshold, "b" moved far enough to be
    # redefined (cosine ~0.9, still the same suggestion), and both were named anew.
    still, far = _moved(1, 0.05), _moved(2, 0.5)
    assert float(still @ _unit(1)) > suggestions.STILL_CENTRE > float(far @ _unit(2)) > suggestions.SAME_TOPIC
    with db.writer() as conn:
        counts = suggestions.replace(conn, project.pk, [_found(still, "a2", 0.51), _found(far, "b2")], utcnow())
        after = {t.pk: t for t in topics.list_topics(conn, project.pk, ("suggested",))}
        dirty_after = conn.execute(
            select(func.count()).select_from(rollup_dirty).where(rollup_dirty.c.project_pk == project.pk)
        ).scalar_one()
    assert (counts["kept"], counts["still"], counts["new"]) == (2, 1, 0)

    # "a" keeps what it matches by (centre, threshold), its matches and its finished backfill; what it
    # shows (keywords, phrases, samples, size) is this run's.
    assert _matches(db, a) == 3
    assert after[a].centroid == stored[a].centroid
    assert after[a].definition["threshold"] == stored[a].definition["threshold"] == 0.5
    assert after[a].definition["keywords"] == ["a2"] and after[a].samples == ["a2"]
    assert after[a].backfill_cursor == stored[a].backfill_cursor
    # "b" is redefined: matches gone, new centre, backfilled again.
    assert _matches(db, b) == 0
    assert after[b].centroid != stored[b].centroid
    assert after[b].definition["keywords"] == ["b2"]
    assert dirty_after >= dirty_before
