"""Topic matching: which of a project's topics a user message is about.

- keyword: any of the topic's words or phrases occurs as a whole word (case-insensitive; in scripts
  written without spaces — Chinese, Japanese, Thai — a plain substring, since there are no word edges,
  and in Korean a word start, since particles attach to the end of the word);
- semantic: the message's embedding is close to the topic's (its description and example phrases,
  best match wins) — cosine similarity at or above the topic's threshold, calibrated on
  ``tests/data/topics.jsonl`` by ``bench/topic_quality.py``;
- suggested: the same test against the centroid of the cluster it came from;
- llm: judged by an OpenAI-compatible model (``enrich.llm``); matched here only when one is configured.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convolens.enrich import embedding

# Calibrated by bench/topic_quality.py (5 examples a topic, 12 topics): F1 0.61 at 0.35, 0.71 at 0.40,
# 0.72 at 0.45 (precision 0.81, recall 0.65), 0.66 at 0.50. A topic can set its own.
SEMANTIC_THRESHOLD = 0.45
SUGGESTED_THRESHOLD = 0.45
KINDS = ("keyword", "semantic", "llm", "suggested")


@dataclass
class TopicMatcher:
    pk: int
    name: str
    kind: str
    pattern: re.Pattern[str] | None = None
    vectors: np.ndarray | None = None
    threshold: float = SEMANTIC_THRESHOLD
    prompt: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicMatch:
    topic_pk: int
    score: float
    reason: str | None = None


def _script_of(text: str, prefixes: tuple[str, ...]) -> bool:
    return any(unicodedata.name(ch, "").startswith(prefixes) for ch in text)


def keyword_pattern(keywords: list[str]) -> re.Pattern[str] | None:
    parts = []
    for keyword in keywords:
        words = keyword.split()
        if not words:
            continue
        body = r"\s+".join(re.escape(w) for w in words)
        if _script_of(keyword, ("CJK", "HIRAGANA", "KATAKANA", "THAI")):
            parts.append(body)
        elif _script_of(keyword, ("HANGUL",)):  # Korean attaches particles to the word: 환불 in 환불은
            parts.append(rf"(?<!\w){body}")
        else:
            parts.append(rf"(?<!\w){body}(?!\w)")
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


def compile_topic(
    pk: int, name: str, kind: str, definition: dict[str, Any], centroid: np.ndarray | None = None
) -> TopicMatcher:
    """A matcher for one stored topic (semantic topics embed their examples here, once per load)."""
    if kind == "keyword":
        return TopicMatcher(pk, name, kind, pattern=keyword_pattern(list(definition.get("keywords", []))))
    if kind == "semantic":
        phrases = [p for p in [definition.get("description"), *definition.get("examples", [])] if p]
        vectors = embedding.embed(phrases) if phrases else np.zeros((0, embedding.DIMENSIONS), np.float32)
        if centroid is not None:  # an accepted suggestion keeps its cluster's centre as one more example
            vectors = np.vstack([vectors, centroid[None, :]])
        threshold = float(definition.get("threshold") or SEMANTIC_THRESHOLD)
        return TopicMatcher(pk, name, kind, vectors=vectors, threshold=threshold)
    if kind == "suggested":
        vectors = centroid[None, :] if centroid is not None else np.zeros((0, embedding.DIMENSIONS), np.float32)
        threshold = float(definition.get("threshold") or SUGGESTED_THRESHOLD)
        return TopicMatcher(pk, name, kind, vectors=vectors, threshold=threshold)
    if kind == "llm":
        return TopicMatcher(pk, name, kind, prompt=str(definition.get("prompt", "")))
    raise ValueError(f"unknown topic kind {kind!r}")


def match(text: str, vector: np.ndarray | None, matchers: list[TopicMatcher]) -> list[TopicMatch]:
    """The keyword, semantic and suggested topics of one message (LLM topics are judged separately)."""
    found = []
    for topic in matchers:
        if topic.kind == "keyword":
            hit = topic.pattern.search(text) if topic.pattern else None
            if hit:
                found.append(TopicMatch(topic.pk, 1.0, f"contains {hit.group(0)!r}"))
        elif topic.kind in ("semantic", "suggested") and vector is not None and topic.vectors is not None:
            if not len(topic.vectors) or not vector.any():
                continue
            similarity = float(np.max(topic.vectors @ vector))
            if similarity >= topic.threshold:
                found.append(TopicMatch(topic.pk, round(similarity, 4)))
    return found
