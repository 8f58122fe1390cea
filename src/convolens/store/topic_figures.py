"""What a product manager reads per topic, for a date range: volume and its trend against the previous
period of equal length, average sentiment, thumbs-down share, languages, the share of unhappy messages,
three representative messages and an *emerging* flag (new this week, or doubled since last week).

A bounded number of statements whatever the number of topics (``figures`` runs the same ones for one
topic as for a hundred):

- defined (active) topics: volume, sentiment and ratings from the rollups' ``topic`` dimension
  (``metrics.day_figures``: rollups for clean whole days, the base tables for the rest);
- suggested topics, which are not rolled up (every clustering run redefines them): one grouped count of
  their links in the same days;
- languages and the share of negative messages: one statement over each topic's newest
  ``STATS_POOL`` messages in the range (the rollups cannot cross topic with language or sentiment label);
- outcomes: conversations on the topic that started in the range, per outcome (each once in its latest
  outcome) — from the rollups for defined topics, one grouped count for suggested ones;
- representative messages: one statement over each topic's newest ``SAMPLE_POOL`` messages with their
  embeddings, ranked by cosine to the topic's centre (its stored centroid, else the pool's mean), with
  near-duplicates collapsed. Stored text is already PII-scrubbed.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Connection, and_, case, func, select, union_all
from sqlalchemy.sql import FromClause

from convolens.store import metrics
from convolens.store.dialect import bucket
from convolens.store.outcome_fields import OUTCOMES
from convolens.store.tables import conversation, message, message_embedding, message_topic
from convolens.store.topics import TopicRow

# Trend against the previous period: ±25% (a quarter more or less) before we call it a change.
TREND_STEP = 0.25
# Emerging: at least this many messages in the last 7 days, and none the 7 before or at least twice as many.
EMERGING_MIN = 10
EMERGING_FACTOR = 2.0
STATS_POOL = 1000  # newest messages per topic read for languages and the negative share
SAMPLE_POOL = 60  # newest messages per topic among which the representative ones are chosen
SAMPLES = 3
DUPLICATE_COSINE = 0.95
SAMPLE_CHARS = 400
# SQLite refuses a compound SELECT of more than 500 parts; topics are capped far below (a hundred defined).
_UNION_CHUNK = 200

TREND_RULE = (
    f"new: no messages in the previous period of equal length; growing / shrinking: at least "
    f"{TREND_STEP:.0%} more / fewer messages than in it; steady otherwise; no earlier data: the project "
    f"has no messages before the range"
)
EMERGING_RULE = (
    f"at least {EMERGING_MIN} messages in the last 7 days of the range, and none (in a project "
    f"that had messages before) or at most half as many in the 7 days before"
)


@dataclass
class Sample:
    message_id: str
    conversation_id: str
    text: str
    created_at: datetime
    translation: str | None = None  # into the project's language, where translation is on (worker/translation.py)


@dataclass
class TopicFigures:
    pk: int
    name: str
    kind: str
    status: str
    messages: int = 0  # user messages in the range (a message counts once in each of its topics)
    previous_messages: int = 0  # in the previous period of equal length
    this_week: int = 0  # the last 7 days of the range
    last_week: int = 0  # the 7 days before
    avg_sentiment: float | None = None
    ratings_up: int = 0
    ratings_down: int = 0
    negative: int = 0  # of the newest STATS_POOL messages: how many read as negative
    labelled: int = 0  # … and how many have a sentiment label
    # {outcome: conversations}: those on the topic that started in the range, each in its latest outcome.
    outcomes: dict[str, int] = field(default_factory=dict)
    languages: list[tuple[str, int]] = field(default_factory=list)  # of the newest STATS_POOL, largest first
    samples: list[Sample] = field(default_factory=list)
    # The same choice among the pool's negative messages: what the unhappy users said.
    unhappy_samples: list[Sample] = field(default_factory=list)
    centre: np.ndarray | None = field(default=None, repr=False)  # for the topic map
    # Whether the project has messages from before the range / before the last 7 days: without them a
    # topic is not "new", everything is (a project's first month would call every topic new and emerging).
    history: bool = True
    week_history: bool = True

    @property
    def trend(self) -> str:
        """``new``, ``growing``, ``shrinking``, ``steady``, or ``quiet`` (no messages in either period)."""
        return trend(self.messages, self.previous_messages, self.history)

    @property
    def emerging(self) -> bool:
        return emerging(self.this_week, self.last_week, self.week_history)

    @property
    def thumbs_down_share(self) -> float | None:
        rated = self.ratings_up + self.ratings_down
        return self.ratings_down / rated if rated else None

    @property
    def negative_share(self) -> float | None:
        return self.negative / self.labelled if self.labelled else None

    @property
    def unresolved_share(self) -> float | None:
        """Unresolved among the topic's conversations with a verdict (resolved, unresolved, abandoned)."""
        judged = sum(self.outcomes.get(o, 0) for o in metrics.JUDGED)
        return self.outcomes.get("unresolved", 0) / judged if judged else None

    @property
    def unhappy(self) -> float:
        """Volume x negative share: about how many of the range's messages on this topic were unhappy."""
        return self.messages * (self.negative_share or 0.0)

    def as_json(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "previous_messages": self.previous_messages,
            "trend": self.trend,
            "this_week": self.this_week,
            "last_week": self.last_week,
            "emerging": self.emerging,
            "avg_sentiment": None if self.avg_sentiment is None else round(self.avg_sentiment, 4),
            "ratings_up": self.ratings_up,
            "ratings_down": self.ratings_down,
            "thumbs_down_share": _rounded(self.thumbs_down_share),
            "negative_share": _rounded(self.negative_share),
            "unhappy_messages": round(self.unhappy, 1),
            "outcomes": {o: self.outcomes.get(o, 0) for o in OUTCOMES},
            "unresolved_share": _rounded(self.unresolved_share),
            "languages": [{"language": lang, "messages": n} for lang, n in self.languages],
            "samples": [_sample_json(s) for s in self.samples],
            "unhappy_samples": [_sample_json(s) for s in self.unhappy_samples],
        }


def _sample_json(s: Sample) -> dict[str, Any]:
    return {
        "message_id": s.message_id,
        "conversation_id": s.conversation_id,
        "text": s.text,
        "translation": s.translation,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def trend(current: int, previous: int, history: bool = True) -> str:
    """``unknown`` when the project has no messages before the range: nothing to compare with."""
    if not history:
        return "unknown"
    if current == 0 and previous == 0:
        return "quiet"
    if previous == 0:
        return "new"
    if current >= previous * (1 + TREND_STEP):
        return "growing"
    if current <= previous * (1 - TREND_STEP):
        return "shrinking"
    return "steady"


def emerging(this_week: int, last_week: int, history: bool = True) -> bool:
    """New this week (in a project that had messages before it) or doubled since last week, with a floor
    so that 3 → 6 does not raise a flag."""
    if this_week < EMERGING_MIN:
        return False
    return history if last_week == 0 else this_week >= EMERGING_FACTOR * last_week


@dataclass(frozen=True)
class _Periods:
    """Day labels of the range, the previous period of equal length and the two weeks ending the range."""

    first: date
    last: date

    @property
    def length(self) -> timedelta:
        return self.last - self.first + timedelta(days=1)

    @property
    def previous_first(self) -> date:
        return self.first - self.length

    @property
    def week_first(self) -> date:
        return self.last - timedelta(days=6)

    @property
    def earliest(self) -> date:
        return min(self.previous_first, self.last - timedelta(days=13))

    def add(self, figures: TopicFigures, day: date, messages: int) -> None:
        if self.first <= day <= self.last:
            figures.messages += messages
        elif self.previous_first <= day < self.first:
            figures.previous_messages += messages
        if self.week_first <= day <= self.last:
            figures.this_week += messages
        elif self.week_first - timedelta(days=7) <= day < self.week_first:
            figures.last_week += messages


def _start(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time())


def _end(day: date) -> datetime:
    return datetime.combine(day, datetime.max.time())


def figures(
    conn: Connection, project_pk: int, topics: list[TopicRow], *, first: date, last: date
) -> list[TopicFigures]:
    """The figures of these topics (the project's, active or suggested) for the whole days [first, last],
    in the order given."""
    periods = _Periods(first, last)
    out = {t.pk: TopicFigures(t.pk, t.name, t.kind, t.status) for t in topics}
    if not out:
        return []
    first_message = conn.execute(
        select(func.min(message.c.created_at)).where(message.c.project_pk == project_pk)
    ).scalar()
    for f in out.values():
        f.history = first_message is not None and first_message < _start(first)
        f.week_history = first_message is not None and first_message < _start(periods.week_first)
    active = {t.pk for t in topics if t.status == "active"}
    suggested = [t.pk for t in topics if t.status != "active"]
    if active:
        _rolled_up(conn, project_pk, periods, out, active)
    if suggested:
        _live(conn, project_pk, periods, out, suggested)
    window = (_start(first), _end(last))
    _languages_and_mood(conn, project_pk, list(out), window, out)
    _representatives(conn, project_pk, topics, window, out)
    return [out[t.pk] for t in topics]


def _rolled_up(
    conn: Connection, project_pk: int, periods: _Periods, out: dict[int, TopicFigures], active: set[int]
) -> None:
    sentiment: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for day, value, summary, _conversations, _users in metrics.day_figures(
        conn, project_pk, start=_start(periods.earliest), end=_end(periods.last), dimension="topic"
    ):
        if not value.isdigit() or int(value) not in active:
            continue
        figures, when = out[int(value)], date.fromisoformat(day)
        periods.add(figures, when, summary.messages)
        if periods.first <= when <= periods.last:
            for outcome, count in summary.outcomes.items():
                figures.outcomes[outcome] = figures.outcomes.get(outcome, 0) + count
            figures.ratings_up += summary.ratings_up
            figures.ratings_down += summary.ratings_down
            sentiment[figures.pk][0] += summary.sentiment_sum
            sentiment[figures.pk][1] += summary.sentiment_count
    for pk, (total, count) in sentiment.items():
        out[pk].avg_sentiment = total / count if count else None


def _live(
    conn: Connection, project_pk: int, periods: _Periods, out: dict[int, TopicFigures], suggested: list[int]
) -> None:
    """Suggested topics from their links: messages per day, and the range's sentiment (ratings: none, the
    rollups' reply attribution is for defined topics)."""
    day = bucket(conn, message_topic.c.created_at, "day")
    in_range = and_(
        message_topic.c.created_at >= _start(periods.first), message_topic.c.created_at <= _end(periods.last)
    )
    in_range_sentiment = case((in_range, message.c.sentiment))
    rows = conn.execute(
        select(
            message_topic.c.topic_pk, day, func.count(), func.sum(in_range_sentiment), func.count(in_range_sentiment)
        )
        .select_from(message_topic.join(message, message.c.pk == message_topic.c.message_pk))
        .where(
            message_topic.c.project_pk == project_pk,
            message_topic.c.topic_pk.in_(suggested),
            message_topic.c.created_at >= _start(periods.earliest),
            message_topic.c.created_at <= _end(periods.last),
        )
        .group_by(message_topic.c.topic_pk, day)
    )
    sentiment: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for topic_pk, label, count, s_sum, s_count in rows:
        periods.add(out[topic_pk], date.fromisoformat(label), count)
        sentiment[topic_pk][0] += float(s_sum or 0.0)
        sentiment[topic_pk][1] += s_count
    for pk, (total, count) in sentiment.items():
        out[pk].avg_sentiment = total / count if count else None
    # Outcomes as the rollups count them for defined topics: the conversations that started in the range.
    started = and_(conversation.c.started_at >= _start(periods.first), conversation.c.started_at <= _end(periods.last))
    outcomes = conn.execute(
        select(message_topic.c.topic_pk, conversation.c.outcome, func.count(conversation.c.pk.distinct()))
        .select_from(message_topic.join(conversation, conversation.c.pk == message_topic.c.conversation_pk))
        .where(
            message_topic.c.project_pk == project_pk,
            message_topic.c.topic_pk.in_(suggested),
            conversation.c.outcome.is_not(None),
            started,
        )
        .group_by(message_topic.c.topic_pk, conversation.c.outcome)
    )
    for topic_pk, outcome, count in outcomes:
        out[topic_pk].outcomes[outcome] = count


_LINKED = message_topic.join(message, message.c.pk == message_topic.c.message_pk)


def _newest(  # type: ignore[no-untyped-def]
    conn: Connection,
    project_pk: int,
    topic_pks: list[int],
    window: tuple[datetime, datetime],
    columns: tuple,
    limit: int,
    source: FromClause = _LINKED,
):
    """Rows of ``columns`` for each topic's newest ``limit`` messages in the window: one UNION ALL of
    per-topic index walks (message_topic by topic and time) rather than a scan of the whole range."""
    for chunk_start in range(0, len(topic_pks), _UNION_CHUNK):
        parts = []
        for pk in topic_pks[chunk_start : chunk_start + _UNION_CHUNK]:
            inner = (
                select(*columns)
                .select_from(source)
                .where(
                    message_topic.c.topic_pk == pk,
                    message_topic.c.project_pk == project_pk,
                    message_topic.c.created_at >= window[0],
                    message_topic.c.created_at <= window[1],
                )
                .order_by(message_topic.c.created_at.desc(), message_topic.c.message_pk.desc())
                .limit(limit)
                .subquery()
            )
            parts.append(select(inner))
        yield from conn.execute(parts[0] if len(parts) == 1 else union_all(*parts))


def _languages_and_mood(
    conn: Connection,
    project_pk: int,
    topic_pks: list[int],
    window: tuple[datetime, datetime],
    out: dict[int, TopicFigures],
) -> None:
    languages: dict[int, Counter[str]] = defaultdict(Counter)
    columns = (message_topic.c.topic_pk.label("topic_pk"), message.c.language, message.c.sentiment_label)
    for topic_pk, language, label in _newest(conn, project_pk, topic_pks, window, columns, STATS_POOL):
        figures = out[topic_pk]
        if language:
            languages[topic_pk][language] += 1
        if label:
            figures.labelled += 1
            figures.negative += label == "negative"
    for pk, counts in languages.items():
        out[pk].languages = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:5]


_PUNCTUATION = re.compile(r"[^\w]+")


def normalized(text: str) -> str:
    """Text as compared for duplicates: case, accents' composition, punctuation and spacing ignored."""
    return _PUNCTUATION.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _representatives(
    conn: Connection,
    project_pk: int,
    topics: list[TopicRow],
    window: tuple[datetime, datetime],
    out: dict[int, TopicFigures],
) -> None:
    columns = (
        message_topic.c.topic_pk.label("topic_pk"),
        message.c.id.label("message_id"),
        conversation.c.id.label("conversation_id"),
        func.substr(message.c.content, 1, SAMPLE_CHARS + 1).label("text"),
        func.substr(message.c.translation, 1, SAMPLE_CHARS + 1).label("translation"),
        message.c.created_at,
        message_topic.c.score,
        message.c.sentiment_label,
        message_embedding.c.vector,
    )
    pool: dict[int, list[Any]] = defaultdict(list)
    source = _LINKED.join(conversation, conversation.c.pk == message.c.conversation_pk).outerjoin(
        message_embedding, message_embedding.c.message_pk == message.c.pk
    )
    for row in _newest(conn, project_pk, [t.pk for t in topics], window, columns, SAMPLE_POOL, source):
        pool[row.topic_pk].append(row)
    for t in topics:
        rows = pool.get(t.pk, [])
        vectors = [_vector(r.vector) for r in rows]
        centre = _vector(t.centroid) if t.centroid else None
        with_vectors = [v for v in vectors if v is not None]
        if centre is None and with_vectors:
            centre = np.mean(with_vectors, axis=0)
        if centre is not None and np.linalg.norm(centre) > 0:
            centre = centre / np.linalg.norm(centre)
        out[t.pk].centre = centre
        out[t.pk].samples = pick(rows, vectors, centre)
        negative = [i for i, r in enumerate(rows) if r.sentiment_label == "negative"]
        out[t.pk].unhappy_samples = pick([rows[i] for i in negative], [vectors[i] for i in negative], centre)


def _vector(data: bytes | None) -> np.ndarray | None:
    return np.frombuffer(data, dtype=np.float16).astype(np.float32) if data else None


def pick(rows: list[Any], vectors: list[np.ndarray | None], centre: np.ndarray | None) -> list[Sample]:
    """Up to ``SAMPLES`` rows closest to ``centre`` (rows without a vector last, then by match score and
    recency), skipping any whose text equals a chosen one once normalized or whose cosine to one is
    over ``DUPLICATE_COSINE``."""

    def closeness(i: int) -> tuple[float, float, datetime]:
        v = vectors[i]
        similarity = (
            float(v @ centre) / (float(np.linalg.norm(v)) or 1.0) if v is not None and centre is not None else -2.0
        )
        return (similarity, float(rows[i].score), rows[i].created_at)

    chosen: list[int] = []
    seen: set[str] = set()
    for i in sorted(range(len(rows)), key=closeness, reverse=True):
        key = normalized(rows[i].text)
        if not key or key in seen:
            continue
        v = vectors[i]
        if v is not None and any(vectors[j] is not None and _cosine(v, vectors[j]) > DUPLICATE_COSINE for j in chosen):  # type: ignore[arg-type]
            continue
        chosen.append(i)
        seen.add(key)
        if len(chosen) == SAMPLES:
            break
    return [
        Sample(
            rows[i].message_id,
            rows[i].conversation_id,
            _cut(rows[i].text),
            rows[i].created_at,
            _cut(rows[i].translation) if rows[i].translation else None,
        )
        for i in chosen
    ]


def _cut(text: str) -> str:
    return text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + "…"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norms if norms else 0.0


def unhappiest(rows: list[TopicFigures], limit: int = 5) -> list[TopicFigures]:
    """Topics ranked by volume x negative share (about how many unhappy messages), those with any."""
    return sorted((r for r in rows if r.unhappy > 0), key=lambda r: (-r.unhappy, -r.messages, r.name))[:limit]


def map_positions(rows: list[TopicFigures]) -> dict[int, tuple[float, float]]:
    """A 2-D projection of the topics' centres (their first two principal components), scaled to
    [0, 1] on each axis: topics about similar things land near each other. Topics without a centre
    (no embedded message in the range) are left out."""
    placed = [r for r in rows if r.centre is not None]
    if not placed:
        return {}
    matrix = np.stack([r.centre for r in placed])  # type: ignore[misc]
    matrix = matrix - matrix.mean(axis=0)
    if len(placed) < 3 or not np.any(matrix):
        coords = np.zeros((len(placed), 2))
        if len(placed) == 2:
            coords[:, 0] = [0.0, 1.0]
    else:
        u, s, _ = np.linalg.svd(matrix, full_matrices=False)
        coords = u[:, :2] * s[:2]
    out = {}
    span = np.ptp(coords, axis=0)
    low = coords.min(axis=0)
    for r, (x, y) in zip(placed, coords, strict=True):
        out[r.pk] = (
            float((x - low[0]) / span[0]) if span[0] else 0.5,
            float((y - low[1]) / span[1]) if span[1] else 0.5,
        )
    return out
