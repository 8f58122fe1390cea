"""Coverage: per topic (defined and suggested), how many test cases ask about it, how they did in their
test set's latest finished run, and the busy topics no test case covers.

A test case covers a topic when its last user message matches the topic as a production message would
(enrich/topics.py: keywords on the text, semantic and suggested topics on its embedding, which the
workers compute shortly after an upload). LLM topics are not matched here (that would cost a provider
call per case and topic): they show no coverage. Only each test set's latest version counts, at most
``MAX_COVERAGE_CASES`` cases.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import Connection

from convolens.enrich import embedding
from convolens.enrich import topics as matching
from convolens.store import evaluations, topic_figures, topics

_compiled: dict[tuple[int, object], matching.TopicMatcher] = {}
_lock = threading.Lock()


def _matcher(row: topics.TopicRow) -> matching.TopicMatcher | None:
    """A topic compiled once per definition (a semantic topic embeds its examples when compiled)."""
    if row.kind == "llm":
        return None
    key = (row.pk, row.updated_at)
    with _lock:
        found = _compiled.get(key)
    if found is None:
        centroid = embedding.from_bytes(row.centroid) if row.centroid else None
        found = matching.compile_topic(row.pk, row.name, row.kind, row.definition, centroid)
        with _lock:
            if len(_compiled) > 10_000:
                _compiled.clear()
            _compiled[key] = found
    return found


@dataclass
class TopicCoverage:
    pk: int
    name: str
    kind: str
    status: str
    messages: int  # the topic's user messages in the window (production volume)
    cases: list[tuple[str, str]] = field(default_factory=list)  # (test set, case)
    passed: int = 0  # items of the covering cases in their sets' latest finished runs that passed
    evaluated: int = 0

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.evaluated if self.evaluated else None

    def as_json(self) -> dict:
        return {
            "id": str(self.pk),
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "messages": self.messages,
            "test_cases": len(self.cases),
            "last_run": {"passed": self.passed, "evaluated": self.evaluated, "pass_rate": self.pass_rate},
            "matchable": self.kind != "llm",
        }


@dataclass
class Coverage:
    topics: list[TopicCoverage]
    cases: int
    not_embedded: int  # cases whose embedding the workers have not computed yet (semantic topics skip them)

    @property
    def uncovered_busy(self) -> list[TopicCoverage]:
        """Topics with production messages in the window and no test case, busiest first."""
        found = [t for t in self.topics if t.messages and not t.cases and t.kind != "llm"]
        return sorted(found, key=lambda t: -t.messages)


def coverage(conn: Connection, project_pk: int, first: date, last: date) -> Coverage:
    rows = topics.list_topics(conn, project_pk, ("active", "suggested"))
    volumes = {f.pk: f.messages for f in topic_figures.figures(conn, project_pk, rows, first=first, last=last)}
    return coverage_of(conn, project_pk, rows, volumes)


def coverage_of(conn: Connection, project_pk: int, rows: list[topics.TopicRow], volumes: dict[int, int]) -> Coverage:
    """Coverage of the topics ``rows`` whose production volumes a page has already read (the Topics page)."""
    cases = evaluations.latest_cases(conn, project_pk)
    outcomes = evaluations.last_run_passes(conn, project_pk)
    compiled = [m for m in (_matcher(r) for r in rows) if m is not None]
    project_topics = matching.ProjectTopics.of(compiled)
    found = {r.pk: TopicCoverage(r.pk, r.name, r.kind, r.status, volumes.get(r.pk, 0)) for r in rows}
    not_embedded = 0
    for case in cases:
        vector = embedding.from_bytes(case.vector) if case.vector else None
        if vector is None:
            not_embedded += 1
        for hit in matching.match(case.text, vector, project_topics):
            covered = found[hit.topic_pk]
            covered.cases.append((case.set_name, case.name))
            passes = outcomes.get((case.set_name, case.name), [])
            covered.evaluated += len(passes)
            covered.passed += sum(passes)
    listed = sorted(found.values(), key=lambda t: (-t.messages, t.name))
    return Coverage(listed, len(cases), not_embedded)
