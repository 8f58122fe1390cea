"""What the worker computes for each message. ``VERSION`` goes up whenever a model or a rule changes,
so that ``convolens reenrich`` can bring old messages up to date.

Every message with text gets its language. User messages — what the product team asks about: what
users want and how they feel — also get an embedding, a sentiment and their topics. Assistant
replies are long, repeat the question's subject and carry the model's mood, not the user's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from convolens.enrich import embedding, language, sentiment, topics
from convolens.enrich.llm import LlmJudge
from convolens.enrich.topics import NO_TOPICS, ProjectTopics, TopicMatcher
from convolens.store.enrichment import EnrichmentResult, PendingMessage, TopicHit

VERSION = 4
# Every step sees at most this prefix of a message (a few pages: what a message is about is at its
# start), so one huge message costs bounded CPU in the worker, however long the content bound allows.
MAX_CHARS = 20_000


def is_user_text(m: PendingMessage) -> bool:
    return m.role == "user" and m.kind == "message" and bool(m.content.strip())


def llm_hits(
    judge: LlmJudge | None, items: list[tuple[int, str]], matchers: Iterable[TopicMatcher]
) -> dict[int, list[TopicHit]]:
    """LLM topics of (key, text) items: one model call per item and LLM topic, a few at a time."""
    llm_topics = [t for t in matchers if t.kind == "llm" and t.prompt]
    if judge is None or not llm_topics or not items:
        return {}
    pairs = [(key, text, t) for key, text in items for t in llm_topics]
    verdicts = judge.judge_many([(t.prompt or "", text) for _, text, t in pairs])
    hits: dict[int, list[TopicHit]] = {}
    for (key, _, t), verdict in zip(pairs, verdicts, strict=True):
        if verdict is not None and verdict.verdict:
            hits.setdefault(key, []).append(TopicHit(t.pk, 1.0, verdict.reason))
    return hits


def enrich(
    messages: list[PendingMessage],
    matchers: dict[int, ProjectTopics] | None = None,
    judge_for: Callable[[int], LlmJudge | None] | None = None,
) -> list[EnrichmentResult]:
    """Results for a batch; ``matchers`` are the compiled topics of each project (by project key);
    LLM topics are judged only where ``judge_for(project key)`` gives a judge (a configured provider)."""
    matchers = matchers or {}
    prefix = {m.pk: m.content[:MAX_CHARS] for m in messages}
    user = [m for m in messages if is_user_text(m)]
    texts = [prefix[m.pk] for m in user]
    pending = embedding.embed_async(texts) if user else None
    # Meanwhile, on this thread: languages and VADER (measured: x1.1 on user messages, bench/README.md).
    languages = {m.pk: language.detect(prefix[m.pk]) if m.kind != "event" else None for m in messages}
    compounds = sentiment.lexicon_scores(texts)
    vectors = pending.result() if pending is not None else np.zeros((0, embedding.DIMENSIONS))
    moods = sentiment.score(texts, vectors, compounds, [m.previous_assistant for m in user])
    per_user = {m.pk: (vectors[i], moods[i]) for i, m in enumerate(user)}
    judged: dict[int, list[TopicHit]] = {}
    for project_pk in {m.project_pk for m in user}:
        items = [(m.pk, prefix[m.pk]) for m in user if m.project_pk == project_pk]
        judge = judge_for(project_pk) if judge_for is not None else None
        judged.update(llm_hits(judge, items, matchers.get(project_pk, NO_TOPICS)))
    results = []
    for m in messages:
        lang = languages[m.pk]
        if m.pk not in per_user:
            results.append(EnrichmentResult(pk=m.pk, language=lang, sentiment=None))
            continue
        vector, mood = per_user[m.pk]
        hits = [
            TopicHit(hit.topic_pk, hit.score, hit.reason)
            for hit in topics.match(prefix[m.pk], vector, matchers.get(m.project_pk, NO_TOPICS))
        ] + judged.get(m.pk, [])
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
