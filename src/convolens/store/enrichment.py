"""The enrichment work queue, kept in the message table itself: a message is pending until its
``enriched_version`` is set. Workers claim a batch with a lease (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so concurrent workers never take the same rows) and save results only while they still
hold the lease; a worker that dies leaves rows whose lease simply expires.

Saving a result replaces what an earlier enrichment of the same message stored (embedding, topics),
so re-enrichment is idempotent, and refreshes the sentiment trend and the outcome of the conversations it
touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)

from convolens.store import rollups, topics
from convolens.store.outcome_fields import to_mask
from convolens.store.tables import conversation, message, message_embedding, message_topic
from convolens.timeutil import utcnow

log = logging.getLogger("convolens.worker")

# A conversation's outcome is read from its end: at most its last this many messages, each cut to this
# prefix, so one refresh costs bounded memory and time however long a thread grows.
OUTCOME_WINDOW = 40
OUTCOME_CHARS = 2000

# A message whose enrichment failed this many times (its batch raised, and it raised again on its own, or
# a worker died holding it) is set aside: marked done with nothing found (``SET_ASIDE`` as its version),
# so that its project's queue moves on instead of retrying it forever. ``convolens reenrich`` tries again.
MAX_ATTEMPTS = 3
SET_ASIDE = 0

# A conversation's trend compares the mean sentiment of the later half of its user messages with the
# earlier half; a difference under this is "flat" (the scores of one message vary by about ±0.1).
TREND_STEP = 0.25


@dataclass(frozen=True)
class PendingMessage:
    pk: int
    project_pk: int
    conversation_pk: int
    role: str
    kind: str
    content: str
    created_at: datetime
    # A user message's context: the end of the assistant reply just before it in its conversation, if
    # any (whether it asked a question or stated something changes what the user's answer means).
    previous_assistant: str | None = None
    attempts: int = 1  # how many times it was claimed, this time included


@dataclass(frozen=True)
class TopicHit:
    topic_pk: int
    score: float
    reason: str | None = None


@dataclass(frozen=True)
class EnrichmentResult:
    pk: int
    language: str | None
    sentiment: float | None
    sentiment_label: str | None = None
    vector: bytes | None = None
    topics: list[TopicHit] = field(default_factory=list)
    # Into the project's language, where it differs and translation is on (worker/translation.py).
    translation: str | None = None


# How much of the previous assistant reply a claim brings along: its end, where a reply asks its
# question or comes to its point, whatever its length.
PREVIOUS_CHARS = 600

# The projects with pending work, in key order from ``:after``: one step of ix_message_pending_project
# per project (a loose index scan), however long any project's backlog is.
_PENDING_PROJECTS = text(
    """
    WITH RECURSIVE pending(project_pk) AS (
        SELECT (SELECT min(project_pk) FROM message WHERE enriched_version IS NULL AND project_pk > :after)
        UNION ALL
        SELECT (SELECT min(m.project_pk) FROM message AS m
                WHERE m.enriched_version IS NULL AND m.project_pk > pending.project_pk)
        FROM pending WHERE pending.project_pk IS NOT NULL
    )
    SELECT project_pk FROM pending WHERE project_pk IS NOT NULL LIMIT :most
    """
)


def projects_with_pending(conn: Connection, most: int, start: int = 0) -> list[int]:
    """Up to ``most`` projects with pending messages, in key order from the first above ``start``
    round to the start again (``start`` turns which projects come first when there are more)."""
    found = list(conn.execute(_PENDING_PROJECTS, {"after": start, "most": most}).scalars())
    if len(found) < most and start > 0:
        found += [pk for pk in conn.execute(_PENDING_PROJECTS, {"after": 0, "most": most}).scalars() if pk <= start]
    return found[:most]


def _claim_in(
    conn: Connection, project_pk: int, owner: str, limit: int, lease: timedelta, now: datetime
) -> list[PendingMessage]:
    free = or_(message.c.lease_until.is_(None), message.c.lease_until < now)
    before = message.alias("before")
    # The message just before, if it is an assistant reply: one step back along
    # ix_message_conversation_position, however many user messages a conversation holds.
    # SQLite's RETURNING names the updated table's columns unqualified, which inside this subquery
    # would mean the alias's own: the outer row is named in full.
    reply = and_(before.c.role == "assistant", before.c.kind == "message")
    outer_conversation, outer_position = literal_column("message.conversation_pk"), literal_column("message.position")
    previous_reply = (
        select(
            case(
                (
                    reply & (func.length(before.c.content) > PREVIOUS_CHARS),
                    func.substr(before.c.content, func.length(before.c.content) - (PREVIOUS_CHARS - 1)),
                ),
                (reply, before.c.content),
            )
        )
        .where(before.c.conversation_pk == outer_conversation, before.c.position < outer_position)
        .order_by(before.c.position.desc())
        .limit(1)
        .scalar_subquery()
    )
    candidates = (
        select(message.c.pk)
        .where(message.c.project_pk == project_pk, message.c.enriched_version.is_(None), free)
        .order_by(message.c.pk)
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite's single writer needs no lock hint
    )
    rows = conn.execute(
        update(message)
        .where(message.c.pk.in_(candidates.scalar_subquery()))
        .values(
            lease_owner=owner, lease_until=now + lease, enrich_attempts=func.coalesce(message.c.enrich_attempts, 0) + 1
        )
        .returning(
            message.c.pk,
            message.c.project_pk,
            message.c.conversation_pk,
            message.c.role,
            message.c.kind,
            message.c.content,
            message.c.created_at,
            case((message.c.role == "user", previous_reply)),
            message.c.enrich_attempts,
        )
    ).all()
    claimed = [PendingMessage(*row) for row in rows]
    tired = [m.pk for m in claimed if m.attempts > MAX_ATTEMPTS]
    if tired:
        set_aside(conn, tired)
    return [m for m in claimed if m.attempts <= MAX_ATTEMPTS]


def set_aside(conn: Connection, pks: list[int]) -> None:
    """Give up on these messages (see MAX_ATTEMPTS): done, with nothing found."""
    log.error("enrichment failed %d times for messages %s: set aside", MAX_ATTEMPTS, pks[:20])
    conn.execute(
        update(message)
        .where(message.c.pk.in_(pks), message.c.enriched_version.is_(None))
        .values(enriched_version=SET_ASIDE, lease_owner=None, lease_until=None)
    )


def release(conn: Connection, owner: str, pks: list[int], *, attempted: bool = True) -> None:
    """Hand back messages this worker could not enrich, to be claimed again at once (each claim counts
    as an attempt, so a message that always fails is set aside after MAX_ATTEMPTS). ``attempted=False``:
    the worker stopped before trying them (a server stop), which must not bring them nearer to that."""
    values: dict = {"lease_owner": None, "lease_until": None}
    if not attempted:
        values["enrich_attempts"] = message.c.enrich_attempts - 1
    conn.execute(
        update(message)
        .where(message.c.pk.in_(pks), message.c.lease_owner == owner, message.c.enriched_version.is_(None))
        .values(**values)
    )


def claim(
    conn: Connection, owner: str, limit: int, lease: timedelta, now: datetime, start: int = 0
) -> list[PendingMessage]:
    """Lease up to ``limit`` pending messages to ``owner``, shared among the projects with pending work:
    each gets an equal share of its oldest, and what one cannot use goes to the others. So a project
    that sent a million messages delays another's ten by one batch, not by its whole backlog.
    ``start``: where the turn begins among more projects than ``limit`` (the worker moves it on)."""
    projects = projects_with_pending(conn, max(1, limit), start)
    share = -(-limit // len(projects)) if projects else 0
    claimed: list[PendingMessage] = []
    hungry = []
    for project_pk in projects:
        got = _claim_in(conn, project_pk, owner, min(share, limit - len(claimed)), lease, now)
        claimed += got
        if len(got) == share:
            hungry.append(project_pk)
        if len(claimed) >= limit:
            break
    for project_pk in hungry:  # the shares the others left unused
        if len(claimed) >= limit:
            break
        claimed += _claim_in(conn, project_pk, owner, limit - len(claimed), lease, now)
    return sorted(claimed, key=lambda m: m.pk)


@dataclass(frozen=True)
class Turn:
    """One message of a transcript as the outcome rules read it (``vector``: a user message's embedding)."""

    role: str
    kind: str
    name: str | None
    content: str
    vector: bytes | None = None


# Transcripts by conversation key -> (outcome, signal names) by conversation key. The worker passes
# enrich/outcomes.assess_many: the store does not import enrich.
Assess = Callable[[Mapping[int, list[Turn]]], Mapping[int, tuple[str, list[str]]]]


@dataclass(frozen=True)
class Outcomes:
    assess: Assess
    version: int
    # What assesses a conversation again inside the save's transaction (it changed since ``assess`` read
    # it): cheaper where it can be, since the API's writes wait for that lock. ``assess`` when not given.
    reassess: Assess | None = None


# The most message text one save transaction rewrites, in characters (one longer message is saved
# alone). On SQLite the save holds the write lock that the API's writes wait for, and its cost grows
# with the text: each enriched row is rewritten whole and its text indexed for search. A batch of 32
# crafted 90,000-character messages held the lock for 50-70 ms of CPU (bench/abuse.py's p99 tail).
SAVE_CHARS = 64_000


def parts(results: list[EnrichmentResult], lengths: Mapping[int, int], chars: int | None = None) -> list[list[int]]:
    """The results' positions cut into consecutive runs of at most ``chars`` (default ``SAVE_CHARS``)
    characters of text (by ``lengths``, message key -> characters), each saved in a transaction of its own."""
    chars = SAVE_CHARS if chars is None else chars
    out: list[list[int]] = []
    used = 0
    for i, result in enumerate(results):
        length = lengths.get(result.pk, 0)
        if not out or (used + length > chars and out[-1]):
            out.append([])
            used = 0
        out[-1].append(i)
        used += length
    return out


def save(
    conn: Connection,
    owner: str,
    version: int,
    results: list[EnrichmentResult],
    outcomes: Outcomes | None = None,
    assessed: OutcomeWork | None = None,
    *,
    claimed: list[int] | None = None,
    lost: set[int] | frozenset[int] = frozenset(),
) -> list[int]:
    """Store results for the messages ``owner`` still holds; returns the keys it saved. With ``outcomes``,
    also store the outcome of each conversation touched: as ``assessed`` before this transaction
    (``assess_outcomes``) where the conversation is still as it was read, else assessed here.

    A claim saved in parts (``parts``) passes the whole claim as ``claimed`` (the messages whose own
    enrichment was assessed already, saved in this part or another) and, as ``lost``, the keys that an
    earlier part found leased to someone else."""
    # Which results are still this worker's, with what the links and marks below need of them: one read,
    # then one statement executed for every row (a statement built per row cost ~0.4 ms of SQLAlchemy
    # each, under SQLite's write lock). On PostgreSQL the rows are locked, so no other worker's claim can
    # take an expired lease in between.
    by_pk = {
        row.pk: row
        for row in conn.execute(
            select(message.c.pk, message.c.project_pk, message.c.conversation_pk, message.c.created_at)
            .where(message.c.pk.in_([r.pk for r in results]), message.c.lease_owner == owner)
            .with_for_update()
        )
    }
    saved = [r.pk for r in results if r.pk in by_pk]
    if not saved:
        return saved
    for translated in (False, True):
        rows = [
            {
                "b_pk": r.pk,
                "b_language": r.language,
                "b_sentiment": r.sentiment,
                "b_label": r.sentiment_label,
                **({"b_translation": r.translation} if translated else {}),
            }
            for r in results
            if r.pk in by_pk and (r.translation is not None) == translated
        ]
        if not rows:
            continue
        # A translation is only ever added: a re-enrichment past the day's cap keeps the earlier one.
        conn.execute(
            update(message)
            .where(message.c.pk == bindparam("b_pk"))
            .values(
                language=bindparam("b_language"),
                sentiment=bindparam("b_sentiment"),
                sentiment_label=bindparam("b_label"),
                enriched_version=version,
                lease_owner=None,
                lease_until=None,
                **({"translation": bindparam("b_translation")} if translated else {}),
            ),
            rows,
        )
    kept = [r for r in results if r.pk in by_pk]
    conn.execute(delete(message_embedding).where(message_embedding.c.message_pk.in_(saved)))
    conn.execute(delete(message_topic).where(message_topic.c.message_pk.in_(saved)))
    vectors = [
        {"message_pk": r.pk, "project_pk": by_pk[r.pk].project_pk, "vector": r.vector}
        for r in kept
        if r.vector is not None
    ]
    if vectors:
        conn.execute(insert(message_embedding), vectors)
    links = [
        {
            "message_pk": r.pk,
            "topic_pk": hit.topic_pk,
            "project_pk": by_pk[r.pk].project_pk,
            "conversation_pk": by_pk[r.pk].conversation_pk,
            "created_at": by_pk[r.pk].created_at,
            "score": hit.score,
            "reason": hit.reason,
        }
        for r in kept
        for hit in r.topics
    ]
    # A topic may have been deleted or dismissed while the worker held a compiled copy of it.
    alive = topics.existing(conn, {link["topic_pk"] for link in links})
    links = [link for link in links if link["topic_pk"] in alive]
    if links:
        conn.execute(insert(message_topic), links)
    touched = sorted({row.conversation_pk for row in by_pk.values()})
    refresh_trends(conn, touched)  # takes the conversations' locks, which the outcomes need too
    if outcomes is not None:
        batch = claimed if claimed is not None else [r.pk for r in results]
        lost = set(lost) | ({r.pk for r in results} - set(saved))
        save_outcomes(conn, touched, outcomes, assessed, batch, lost)
    days: dict[int, set[str]] = {}
    for row in by_pk.values():
        days.setdefault(row.project_pk, set()).add(rollups.day_of(row.created_at))
    # The conversations' outcomes count on the day they started (store/rollups.py), maybe an earlier one.
    for project_pk, started in rollups.start_days(conn, touched).items():
        days.setdefault(project_pk, set()).update(started)
    for project_pk, changed in days.items():
        rollups.mark(conn, project_pk, changed, utcnow())
    return saved


def trend(scores: list[float]) -> str | None:
    """up, flat or down: how the user's mood moved over a conversation (None with no scored message)."""
    if not scores:
        return None
    if len(scores) < 2:
        return "flat"
    half = len(scores) // 2
    earlier, later = scores[:half], scores[-half:]
    change = sum(later) / len(later) - sum(earlier) / len(earlier)
    return "up" if change >= TREND_STEP else "down" if change <= -TREND_STEP else "flat"


# The first key of the PostgreSQL advisory locks that let one worker at a time redo a conversation's trend.
_TREND_LOCK = 7301


def _lock_conversations(conn: Connection, conversation_pks: list[int]) -> None:
    if conn.dialect.name == "postgresql":
        # Two workers saving messages of one conversation at once would each read only their own
        # scores (READ COMMITTED), and the later commit would keep a trend of half the conversation.
        # The lock makes the second wait for the first's commit; its read that follows then sees both.
        # Only workers take it (ingestion never waits for it), in key order, until the commit.
        conn.execute(
            text(
                "SELECT pg_advisory_xact_lock(:space, (k % 2147483647)::int)"
                " FROM (SELECT k FROM unnest(CAST(:pks AS bigint[])) AS k ORDER BY k) AS ordered"
            ),
            {"space": _TREND_LOCK, "pks": conversation_pks},
        )


def refresh_trends(conn: Connection, conversation_pks: list[int]) -> None:
    if not conversation_pks:
        return
    _lock_conversations(conn, conversation_pks)
    rows = conn.execute(
        select(message.c.conversation_pk, message.c.sentiment)
        .where(
            message.c.conversation_pk.in_(conversation_pks),
            message.c.role == "user",
            message.c.sentiment.is_not(None),
        )
        .order_by(message.c.conversation_pk, message.c.position)
    )
    scores: dict[int, list[float]] = {pk: [] for pk in conversation_pks}
    for pk, value in rows:
        scores[pk].append(value)
    conn.execute(
        update(conversation).where(conversation.c.pk == bindparam("b_pk")).values(sentiment_trend=bindparam("b_trend")),
        [{"b_pk": pk, "b_trend": trend(values)} for pk, values in scores.items()],
    )


def transcripts(
    conn: Connection, conversation_pks: list[int], vectors: Mapping[int, bytes | None] | None = None
) -> dict[int, list[Turn]]:
    """The last ``OUTCOME_WINDOW`` messages of each conversation, oldest first, with user embeddings: one
    query for the whole batch. ``vectors`` (message key: vector) stand in for embeddings not stored yet."""
    ranked = (
        select(
            message.c.pk,
            message.c.conversation_pk,
            message.c.position,
            message.c.role,
            message.c.kind,
            message.c.name,
            func.substr(message.c.content, 1, OUTCOME_CHARS).label("content"),
            func.row_number()
            .over(partition_by=message.c.conversation_pk, order_by=message.c.position.desc())
            .label("rank"),
        )
        .where(message.c.conversation_pk.in_(conversation_pks))
        .subquery()
    )
    rows = conn.execute(
        select(ranked.c.pk, ranked.c.conversation_pk, ranked.c.role, ranked.c.kind, ranked.c.name, ranked.c.content)
        .add_columns(message_embedding.c.vector)
        .select_from(ranked.outerjoin(message_embedding, message_embedding.c.message_pk == ranked.c.pk))
        .where(ranked.c.rank <= OUTCOME_WINDOW)
        .order_by(ranked.c.conversation_pk, ranked.c.position)
    )
    out: dict[int, list[Turn]] = {pk: [] for pk in conversation_pks}
    for message_pk, pk, role, kind, name, content, vector in rows:
        if vectors is not None and message_pk in vectors:
            vector = vectors[message_pk]
        out[pk].append(Turn(role, kind, name, content or "", vector))
    return out


@dataclass(frozen=True)
class OutcomeWork:
    """Outcomes assessed before the save's transaction, and what each conversation looked like then."""

    found: dict[int, tuple[str, list[str]]]
    seen: dict[int, tuple[int, int, int]]


def _fingerprints(conn: Connection, conversation_pks: list[int], batch: list[int]) -> dict[int, tuple[int, int, int]]:
    """Per conversation: messages, last position, and messages outside ``batch`` with an embedding. A
    message added, removed, or enriched by someone else since a read changes it; this batch's own
    enrichment does not."""
    others = message_embedding.c.message_pk.is_not(None) & message.c.pk.not_in(batch)
    rows = conn.execute(
        select(
            message.c.conversation_pk,
            func.count(),
            func.max(message.c.position),
            func.sum(case((others, 1), else_=0)),
        )
        .select_from(message.outerjoin(message_embedding, message_embedding.c.message_pk == message.c.pk))
        .where(message.c.conversation_pk.in_(conversation_pks))
        .group_by(message.c.conversation_pk)
    )
    return {pk: (int(n), int(last), int(embedded or 0)) for pk, n, last, embedded in rows}


def assess_outcomes(conn: Connection, results: list[EnrichmentResult], outcomes: Outcomes) -> OutcomeWork:
    """Assess the outcomes of the conversations of these results from a read (a snapshot) with the
    results' own vectors, before the save's transaction.

    The assessment is CPU work (up to 150 ms for a batch of crafted long threads); inside the save's
    transaction it held SQLite's write lock, which the API's writes wait for (bench/abuse.py)."""
    batch = [r.pk for r in results]
    if not batch:
        return OutcomeWork({}, {})
    touched = sorted(set(conn.execute(select(message.c.conversation_pk).where(message.c.pk.in_(batch))).scalars()))
    seen = _fingerprints(conn, touched, batch)
    vectors = {r.pk: r.vector for r in results}
    return OutcomeWork(outcomes.assess(transcripts(conn, touched, vectors)), seen)


def save_outcomes(
    conn: Connection,
    conversation_pks: list[int],
    outcomes: Outcomes,
    assessed: OutcomeWork | None,
    batch: list[int],
    lost: set[int],
) -> None:
    """Store the outcomes of these conversations (the caller holds their locks and has saved its part of
    the batch). One assessed beforehand is kept where the conversation is as it was read and no message of
    the batch in it was ``lost`` (leased to someone else); the others (another worker's save, a new
    message, a lost lease meanwhile: rare) are assessed again here, from what is committed now."""
    found: dict[int, tuple[str, list[str]]] = {}
    stale = list(conversation_pks)
    if assessed is not None:
        now = _fingerprints(conn, conversation_pks, batch)
        with_lost = (
            set(conn.execute(select(message.c.conversation_pk).where(message.c.pk.in_(lost))).scalars())
            if lost
            else set()
        )
        fresh = [
            pk
            for pk in conversation_pks
            if pk in assessed.seen and now.get(pk) == assessed.seen[pk] and pk not in with_lost
        ]
        found = {pk: assessed.found[pk] for pk in fresh if pk in assessed.found}
        stale = [pk for pk in conversation_pks if pk not in fresh]
    if stale:
        found.update((outcomes.reassess or outcomes.assess)(transcripts(conn, stale)))
    rows = []
    for pk in conversation_pks:
        outcome, signals = found.get(pk, ("unknown", []))
        rows.append({"b_pk": pk, "b_outcome": outcome, "b_signals": to_mask(signals)})
    conn.execute(
        update(conversation)
        .where(conversation.c.pk == bindparam("b_pk"))
        .values(
            outcome=bindparam("b_outcome"),
            outcome_signals=bindparam("b_signals"),
            outcome_version=outcomes.version,
            # The rules' outcome; a project's LLM judge (store/outcome_judge.py) reads it again.
            outcome_by="rules",
            outcome_reason=None,
            outcome_judged_at=None,
        ),
        rows,
    )


def requeue(conn: Connection, project_pk: int | None = None) -> int:
    """Mark messages pending again (after a model or topic change); returns how many."""
    query = update(message).values(enriched_version=None, lease_owner=None, lease_until=None, enrich_attempts=None)
    if project_pk is not None:
        query = query.where(message.c.project_pk == project_pk)
    return conn.execute(query).rowcount
