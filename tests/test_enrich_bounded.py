"""Enrichment looks at a bounded prefix of each message, so one huge message costs bounded CPU in the
worker: a keyword past the prefix is not matched, and scripts past it do not decide the language."""

from __future__ import annotations

from datetime import UTC, datetime

from convolens.enrich import language, pipeline
from convolens.enrich.topics import ProjectTopics, compile_topic
from convolens.store.enrichment import PendingMessage


def _message(pk: int, content: str) -> PendingMessage:
    return PendingMessage(pk, 1, 1, "user", "message", content, datetime.now(UTC))


def test_steps_see_only_the_prefix_of_a_huge_message() -> None:
    filler = "the order arrived late and the box was damaged " * 2000  # ~94,000 characters
    assert len(filler) > pipeline.MAX_CHARS
    refunds = compile_topic(7, "Refunds", "keyword", {"keywords": ["refund"]})
    early, late = pipeline.enrich(
        [_message(1, "refund please, " + filler), _message(2, filler + " refund please")],
        {1: ProjectTopics.of([refunds])},
    )
    assert [hit.topic_pk for hit in early.topics] == [7]
    assert late.topics == []
    assert early.language == late.language == "en"


def test_language_is_decided_on_the_first_characters() -> None:
    text = "I would like to change the delivery address of my order. " * 80 + "배송지를 변경하고 싶습니다. " * 5000
    assert language.detect(text) == "en"
