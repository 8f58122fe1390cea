"""What the worker computes for each message. ``VERSION`` goes up whenever a model or a rule changes,
so that ``convolens reenrich`` can bring old messages up to date.

Every message with text gets its language. User messages — what the product team asks about: what
users want and how they feel — also get an embedding, a sentiment and their topics. Assistant
replies are long, repeat the question's subject and carry the model's mood, not the user's.
"""

from __future__ import annotations

import numpy as np

from convolens.enrich import embedding, language, sentiment, topics
from convolens.enrich.topics import TopicMatcher
from convolens.store.enrichment import EnrichmentResult, PendingMessage, TopicHit

VERSION = 2


def is_user_text(m: PendingMessage) -> bool:
    return m.role == "user" and m.kind == "message" and bool(m.content.strip())


def enrich(
    messages: list[PendingMessage], matchers: dict[int, list[TopicMatcher]] | None = None
) -> list[EnrichmentResult]:
    """Results for a batch; ``matchers`` are the compiled topics of each project (by project key)."""
    matchers = matchers or {}
    user = [m for m in messages if is_user_text(m)]
    vectors = embedding.embed([m.content for m in user]) if user else np.zeros((0, embedding.DIMENSIONS))
    moods = sentiment.score([m.content for m in user], vectors)
    per_user = {m.pk: (vectors[i], moods[i]) for i, m in enumerate(user)}
    results = []
    for m in messages:
        lang = language.detect(m.content) if m.kind != "event" else None
        if m.pk not in per_user:
            results.append(EnrichmentResult(pk=m.pk, language=lang, sentiment=None))
            continue
        vector, mood = per_user[m.pk]
        hits = [
            TopicHit(hit.topic_pk, hit.score, hit.reason)
            for hit in topics.match(m.content, vector, matchers.get(m.project_pk, []))
        ]
        results.append(
            EnrichmentResult(
                pk=m.pk,
                language=lang,
                sentiment=mood.score,
                sentiment_label=mood.label,
                vector=embedding.to_bytes(vector),
                topics=hits,
            )
        )
    return results
