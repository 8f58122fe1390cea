"""What the worker computes for each message. ``VERSION`` goes up whenever a model or a rule changes,
so that ``convolens reenrich`` can bring old messages up to date.

Today: the language of every message with text. Sentiment, embeddings and topics join here (enrichment
issue), each behind its own module in ``convolens.enrich``.
"""

from __future__ import annotations

from convolens.enrich import language
from convolens.store.enrichment import EnrichmentResult, PendingMessage

VERSION = 1


def enrich(messages: list[PendingMessage]) -> list[EnrichmentResult]:
    results = []
    for m in messages:
        lang = language.detect(m.content) if m.kind != "event" else None
        results.append(EnrichmentResult(pk=m.pk, language=lang, sentiment=None))
    return results
