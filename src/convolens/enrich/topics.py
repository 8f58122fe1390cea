"""Topic matching: which of a project's topics a user message is about.

- keyword: any of the topic's words or phrases occurs as a whole word (case-insensitive; in scripts
  written without spaces — Chinese, Japanese, Thai — a plain substring, since there are no word edges,
  and in Korean a word start, since particles attach to the end of the word). All keyword topics of a
  project are one Aho-Corasick automaton (``KeywordIndex``): one pass over a message finds them all,
  whatever the number of topics;
- semantic: the message's embedding is close to the topic's (its description and example phrases,
  best match wins) — cosine similarity at or above the topic's threshold, calibrated on
  ``tests/data/topics.jsonl`` by ``bench/topic_quality.py``;
- suggested: the same test against the centroid of the cluster it came from;
- llm: judged by an OpenAI-compatible model (``enrich.llm``); matched here only when one is configured.
"""

from __future__ import annotations

import _sre  # type: ignore[import-not-found]
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from re import _casefix  # type: ignore[attr-defined]
from typing import Any

import ahocorasick
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
    keywords: list[str] = field(default_factory=list)
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


# How a keyword's edges must fall: scripts without spaces match anywhere, Korean at a word start
# (particles attach to the end: 환불 in 환불은), every other script at both word edges.
ANYWHERE, WORD_START, WHOLE_WORD = 0, 1, 2


def edges_of(keyword: str) -> int:
    if _script_of(keyword, ("CJK", "HIRAGANA", "KATAKANA", "THAI")):
        return ANYWHERE
    if _script_of(keyword, ("HANGUL",)):
        return WORD_START
    return WHOLE_WORD


# -- case folding exactly as ``re.IGNORECASE`` compares characters ---------------------------------
# sre lowercases each character with the simple (one-to-one) Unicode mapping and also treats a few
# lowercase letters as equal (dotless i and i, long s and s, micro and mu, ...: re._casefix). Folding
# every character to one representative of that class keeps one character per character, so positions
# in the folded text are positions in the message, and ``search`` reports what the per-topic regex did.
_EQUAL_LOWER = {lower: min(lower, *others) for lower, others in _casefix._EXTRA_CASES.items()}


class _FoldTable(dict[int, str]):
    """``str.translate`` table filled on first use of each character."""

    def __missing__(self, code: int) -> str:
        char = chr(code)
        if char.isspace():  # \s in a phrase's regex; str.split() and \s agree on what a space is
            folded = " "
        else:
            lower = _sre.unicode_tolower(code)
            folded = chr(_EQUAL_LOWER.get(lower, lower))
        if len(self) < 65536:  # bounded: text in every script of Unicode must not grow it without end
            self[code] = folded
        return folded


_FOLD = _FoldTable()
_SPACE_RUN = re.compile(" {2,}")


def _folded(text: str) -> tuple[str, list[int], list[int]]:
    """The text folded, with each run of spaces as one (a phrase's words match across any run), and
    where the positions of the folded text move against the message's: ``(folded, at, shift)``."""
    folded = text.translate(_FOLD)
    at, shift = [0], [0]
    if "  " not in folded:
        return folded, at, shift
    parts, kept, moved = [], 0, 0
    for run in _SPACE_RUN.finditer(folded):
        parts.append(folded[kept : run.start() + 1])  # the run's first space stays
        at.append(run.start() + 1 - moved)  # where the text after the run starts in the folded text
        moved += run.end() - run.start() - 1
        shift.append(moved)
        kept = run.end()
    parts.append(folded[kept:])
    return "".join(parts), at, shift


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"  # what sre's \w is in a str pattern


class KeywordIndex:
    r"""The keyword topics of one project as one automaton: a message is read once for all of them.

    For each topic, ``search`` gives the same first match a regex search of the topic's keywords would
    (``(?<!\w)one\s+phrase(?!\w)|…`` with ``re.IGNORECASE``): the leftmost, and at equal starts the
    keyword listed first. Work is linear in the message (each keyword is at most ``max_keyword_chars``
    long, so at most that many keywords end at one position) plus one step per keyword found.
    """

    def __init__(self, topics: list[tuple[int, list[str]]]) -> None:
        self._automaton = ahocorasick.Automaton()
        # Per distinct folded keyword: [(edges, [(topic slot, keyword position), …]), …]
        self._entries: list[list[tuple[int, list[tuple[int, int]]]]] = []
        self._lengths: list[int] = []
        self.topic_pks = [pk for pk, _ in topics]
        ids: dict[str, int] = {}
        for slot, (_, keywords) in enumerate(topics):
            position = 0
            for keyword in keywords:
                words = keyword.split()
                if not words:
                    continue
                key = " ".join(words).translate(_FOLD)
                if key not in ids:
                    ids[key] = len(self._entries)
                    self._automaton.add_word(key, ids[key])
                    self._entries.append([])
                    self._lengths.append(len(key))
                groups = self._entries[ids[key]]
                edges = edges_of(keyword)
                group = next((g for e, g in groups if e == edges), None)
                if group is None:
                    group = []
                    groups.append((edges, group))
                group.append((slot, position))
                position += 1
        self._groups = sum(len(g) for g in self._entries)
        if self._entries:
            self._automaton.make_automaton()

    def __len__(self) -> int:
        return len(self.topic_pks)

    def search(self, text: str) -> dict[int, str]:
        """``{topic key: the text of its first match}`` for the topics the text is about."""
        if not self._entries or not text:
            return {}
        folded, at, shift = _folded(text)
        best: dict[int, tuple[int, int, int]] = {}  # slot: (start, keyword position, end)
        resolved: set[tuple[int, int]] = set()
        last = len(text)
        for end_at, key_id in self._automaton.iter(folded):
            start_at = end_at + 1 - self._lengths[key_id]
            start = start_at + shift[bisect_right(at, start_at) - 1]
            end = end_at + 1 + shift[bisect_right(at, end_at) - 1]
            for edges, group in self._entries[key_id]:
                if (key_id, edges) in resolved:
                    continue  # hits come in order of their end, so a keyword's first fit is its leftmost
                if edges != ANYWHERE and start > 0 and _is_word(text[start - 1]):
                    continue
                if edges == WHOLE_WORD and end < last and _is_word(text[end]):
                    continue
                resolved.add((key_id, edges))
                for slot, position in group:
                    found = best.get(slot)
                    if found is None or (start, position) < found[:2]:
                        best[slot] = (start, position, end)
            if len(resolved) == self._groups:
                break
        return {self.topic_pks[slot]: text[start:end] for slot, (start, _, end) in best.items()}


def compile_topic(
    pk: int, name: str, kind: str, definition: dict[str, Any], centroid: np.ndarray | None = None
) -> TopicMatcher:
    """A matcher for one stored topic (semantic topics embed their examples here, once per load)."""
    if kind == "keyword":
        return TopicMatcher(pk, name, kind, keywords=[str(k) for k in definition.get("keywords", [])])
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


@dataclass(frozen=True)
class ProjectTopics:
    """A project's compiled topics, with its keyword topics in one ``KeywordIndex``."""

    matchers: list[TopicMatcher]
    keywords: KeywordIndex

    @classmethod
    def of(cls, matchers: list[TopicMatcher]) -> ProjectTopics:
        keyword_topics = [(t.pk, t.keywords) for t in matchers if t.kind == "keyword"]
        return cls(list(matchers), KeywordIndex(keyword_topics))

    def __iter__(self) -> Iterator[TopicMatcher]:
        return iter(self.matchers)


NO_TOPICS = ProjectTopics([], KeywordIndex([]))


def match(text: str, vector: np.ndarray | None, topics: ProjectTopics) -> list[TopicMatch]:
    """The keyword, semantic and suggested topics of one message (LLM topics are judged separately)."""
    keyword_hits = topics.keywords.search(text) if len(topics.keywords) else {}
    found = []
    for topic in topics.matchers:
        if topic.kind == "keyword":
            if topic.pk in keyword_hits:
                found.append(TopicMatch(topic.pk, 1.0, f"contains {keyword_hits[topic.pk]!r}"))
        elif topic.kind in ("semantic", "suggested") and vector is not None and topic.vectors is not None:
            if not len(topic.vectors) or not vector.any():
                continue
            similarity = float(np.max(topic.vectors @ vector))
            if similarity >= topic.threshold:
                found.append(TopicMatch(topic.pk, round(similarity, 4)))
    return found
