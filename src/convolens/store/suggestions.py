"""What the clustering of suggested topics reads and writes: the user messages no topic covers, and
the suggestions themselves, kept stable between runs.

A new cluster whose centre is close to an earlier suggestion's (cosine ≥ ``SAME_TOPIC``) *is* that
suggestion: it keeps its id and its name, and only its centre, keywords and samples move. One close
to a dismissed suggestion is not suggested again. Suggestions no cluster matches any more go.

A project's first run comes once it has enough uncovered messages to cluster, not on a clock: a new
project sees suggestions minutes after its data arrives, and an empty one is never clustered. The
next comes as the pool grows (``Timing``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import ColumnElement, Connection, and_, exists, func, insert, literal, or_, select, update

from convolens.enrich import suggest
from convolens.store import categories, topics
from convolens.store.dialect import insert_ignore
from convolens.store.tables import conversation, message, message_embedding, message_topic, project, suggestion_run
from convolens.store.tables import topic as topic_table

SAME_TOPIC = 0.8
# A kept suggestion whose centre moved less than this (cosine to the stored centre) and whose threshold
# moved less than STILL_THRESHOLD keeps its stored centre and threshold, hence its matches: redefining it
# deletes every match and backfills the project again, which under a steady stream of new messages
# (a run each time the uncovered pool grows by a fifth) held the write lock ~7 ms per thousand matches
# for nothing. Drift accumulates against the stored centre, so a cluster that keeps moving is redefined.
STILL_CENTRE = 0.98
STILL_THRESHOLD = 0.03
MAX_MESSAGES = 100_000  # uncovered(): the whole pool in memory, texts included
# read_pool(): the newest this many uncovered messages; only their keys (8 MB) and a sample's texts are
# held, the vectors are read again a chunk at a time (suggest.cluster_pool).
MAX_POOL = 1_000_000
IN_BATCH = 500  # keys in one IN (...) list
KEY_PAGE = 100_000  # keys read in one query
# Characters of a sampled message's text: enough for keywords and names, and 20,000 of them stay small
# (a message may hold 100,000).
SAMPLE_CHARS = 1000
# LLM names (worker): at most this many clusters in one request, and this many requests a project a day.
LLM_CLUSTERS_PER_CALL = 30
LLM_CALLS_PER_DAY = 24


@dataclass
class Uncovered:
    vectors: np.ndarray
    texts: list[str]
    conversation_ids: list[str]
    message_pks: list[int]

    @property
    def size(self) -> int:
        return len(self.texts)

    @property
    def newest(self) -> int | None:
        return max(self.message_pks, default=None)


@dataclass
class Pool:
    """The uncovered messages a run clusters, as keys: ``pks`` ascending, and a sample to fit on whose
    positions index ``pks``."""

    project_pk: int
    pks: np.ndarray
    sample: suggest.Sample

    @property
    def size(self) -> int:
        return len(self.pks)

    @property
    def newest(self) -> int | None:
        return int(self.pks[-1]) if len(self.pks) else None


@dataclass
class Suggestion:
    name: str
    keywords: list[str]
    phrases: list[str]
    centroid: np.ndarray
    conversation_ids: list[str]
    size: int
    threshold: float
    description: str | None = None  # the LLM's one sentence, where a provider named it
    named_by_llm: bool = field(default=False)


@dataclass
class CategorySuggestion:
    """A category of this run's suggestions (``enrich.suggest.categorise``): indexes into ``found``."""

    name: str
    centroid: np.ndarray
    suggestions: list[int]


@dataclass(frozen=True)
class Timing:
    """When a project's suggestions are recomputed: as soon as there is something to cluster, then as
    the pool of uncovered messages grows, and at least daily while anything new arrives."""

    # The first run: once this many enriched user messages no active topic covers (fewer make no clusters).
    min_messages: int = 40
    # The next: once the uncovered messages that arrived since the last run amount to this share of
    # what it read…
    growth: float = 0.2
    # …or this long after it, if any arrived at all.
    max_age: timedelta = timedelta(days=1)
    # A worker counts a project at most this often (the counts are bounded, but an idle worker asks
    # twice a second).
    check_every: timedelta = timedelta(seconds=10)


@dataclass
class RunState:
    project_pk: int
    last_run_at: datetime | None
    requested_at: datetime | None
    last_pool: int | None
    last_message_pk: int | None


def to_check(conn: Connection, timing: Timing, now: datetime, limit: int = 50) -> list[RunState]:
    """The projects whose suggestions a worker should look at now (asked for, or not counted for
    ``timing.check_every``), marked as counted so that other workers pass them over meanwhile."""
    # Two workers can both see a project without a row: the second one's insert is ignored, not a failure.
    conn.execute(
        insert_ignore(conn, suggestion_run, ["project_pk"]).from_select(
            ["project_pk"],
            select(project.c.pk).where(~exists().where(suggestion_run.c.project_pk == project.c.pk)),
        )
    )
    run = suggestion_run.c
    free = or_(run.lease_until.is_(None), run.lease_until < now)
    rows = conn.execute(
        select(run.project_pk, run.last_run_at, run.requested_at, run.last_pool, run.last_message_pk)
        .where(free, or_(_asked_for(), run.checked_at.is_(None), run.checked_at < now - timing.check_every))
        .order_by(run.checked_at.is_not(None), run.checked_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    states = [RunState(*row) for row in rows]
    if states:
        conn.execute(
            update(suggestion_run).where(run.project_pk.in_([s.project_pk for s in states])).values(checked_at=now)
        )
    return states


def _asked_for() -> ColumnElement[bool]:
    """The refresh endpoint asked for a run since the last one."""
    run = suggestion_run.c
    return and_(run.requested_at.is_not(None), or_(run.last_run_at.is_(None), run.requested_at > run.last_run_at))


def is_due(conn: Connection, state: RunState, timing: Timing, now: datetime) -> bool:
    """Whether a project's suggestions should be recomputed: asked for; or no run yet read
    ``min_messages`` uncovered messages and now there are that many (the last run's and newer ones); or
    the uncovered messages newer than the last run's newest amount to ``growth`` of what it read, or to
    any at all after ``max_age``. Every count stops at the number it needs and, once a project has had
    a run, reads only newer messages."""
    if state.requested_at is not None and (state.last_run_at is None or state.requested_at > state.last_run_at):
        return True
    after = state.last_message_pk or 0
    if not state.last_pool or state.last_pool < timing.min_messages:
        # Too few to cluster last time: due once the newer ones make up the difference (counting only
        # those keeps the count off the project's older, covered messages).
        needed = timing.min_messages - (state.last_pool or 0)
        return count_uncovered(conn, state.project_pk, after=after, at_most=needed) >= needed
    needed = max(1, math.ceil(state.last_pool * timing.growth))
    if count_uncovered(conn, state.project_pk, after=after, at_most=needed) >= needed:
        return True
    stale = state.last_run_at is None or state.last_run_at <= now - timing.max_age
    return stale and count_uncovered(conn, state.project_pk, after=after, at_most=1) >= 1


def lease_run(conn: Connection, owner: str, project_pk: int, lease: timedelta, now: datetime) -> bool:
    """Take a due project's run, unless another worker holds it."""
    run = suggestion_run.c
    return bool(
        conn.execute(
            update(suggestion_run)
            .where(run.project_pk == project_pk, or_(run.lease_until.is_(None), run.lease_until < now))
            .values(lease_owner=owner, lease_until=now + lease)
        ).rowcount
    )


def finish_run(conn: Connection, owner: str, project_pk: int, now: datetime, pool: Uncovered | Pool) -> bool:
    """Release the run, remembering what it read (the next one is due on what arrived since)."""
    return bool(
        conn.execute(
            update(suggestion_run)
            .where(suggestion_run.c.project_pk == project_pk, suggestion_run.c.lease_owner == owner)
            .values(
                last_run_at=now,
                last_pool=pool.size,
                last_message_pk=pool.newest,
                lease_owner=None,
                lease_until=None,
            )
        ).rowcount
    )


def request_run(conn: Connection, project_pk: int, now: datetime) -> None:
    """Ask the workers to recompute a project's suggestions soon (the dashboard's refresh button)."""
    if conn.execute(
        update(suggestion_run).where(suggestion_run.c.project_pk == project_pk).values(requested_at=now)
    ).rowcount:
        return
    conn.execute(insert(suggestion_run).values(project_pk=project_pk, requested_at=now))


def _uncovered_query(project_pk: int, *columns):
    covered = (
        select(message_topic.c.message_pk)
        .join(topic_table, topic_table.c.pk == message_topic.c.topic_pk)
        .where(message_topic.c.message_pk == message_embedding.c.message_pk, topic_table.c.status == "active")
    )
    return select(*columns).where(message_embedding.c.project_pk == project_pk, ~exists(covered))


def count_uncovered(conn: Connection, project_pk: int, *, at_most: int, after: int = 0) -> int:
    """How many user messages with an embedding no active topic covers (newer than message ``after``),
    counting no further than ``at_most``."""
    rows = (
        _uncovered_query(project_pk, literal(1))
        .select_from(message_embedding)
        .where(message_embedding.c.message_pk > after)
        .limit(at_most)
        .subquery()
    )
    return conn.execute(select(func.count()).select_from(rows)).scalar_one()


def uncovered(conn: Connection, project_pk: int, limit: int = MAX_MESSAGES) -> Uncovered:
    """The newest user messages with an embedding that no defined topic covers."""
    rows = conn.execute(
        _uncovered_query(project_pk, message_embedding.c.vector, message.c.content, conversation.c.id, message.c.pk)
        .select_from(
            message_embedding.join(message, message.c.pk == message_embedding.c.message_pk).join(
                conversation, conversation.c.pk == message.c.conversation_pk
            )
        )
        .order_by(message_embedding.c.message_pk.desc())
        .limit(limit)
    ).all()
    width = len(rows[0][0]) // 2 if rows else 0  # float16: two bytes a dimension
    vectors = np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float16).reshape(len(rows), width)
    return Uncovered(vectors.astype(np.float32), [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])


def read_pool(
    conn: Connection, project_pk: int, limit: int = MAX_POOL, sample: int = suggest.FIT_SAMPLE, seed: int = 0
) -> Pool:
    """The keys of the newest ``limit`` uncovered messages, and a random ``sample`` of them with their
    vectors, texts and stored languages (read in batches of keys)."""
    # Pages of keys, newest first (no server-side cursor: a reader may be in autocommit on PostgreSQL).
    parts: list[np.ndarray] = []
    before, left = None, limit
    while left > 0:
        query = _uncovered_query(project_pk, message_embedding.c.message_pk).select_from(message_embedding)
        if before is not None:
            query = query.where(message_embedding.c.message_pk < before)
        page = min(left, KEY_PAGE)
        keys = np.array(
            conn.execute(query.order_by(message_embedding.c.message_pk.desc()).limit(page)).scalars().all(),
            dtype=np.int64,
        )
        if len(keys):
            parts.append(keys)
        if len(keys) < page:
            break
        before, left = int(keys[-1]), left - len(keys)
    pks = np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    positions = np.arange(len(pks)) if len(pks) <= sample else np.sort(rng.choice(len(pks), sample, replace=False))
    rows: dict[int, tuple[bytes, str, str | None]] = {}
    for start in range(0, len(positions), IN_BATCH):
        chosen = [int(pk) for pk in pks[positions[start : start + IN_BATCH]]]
        for pk, vector, content, language in conn.execute(
            select(
                message.c.pk,
                message_embedding.c.vector,
                func.substr(message.c.content, 1, SAMPLE_CHARS),
                message.c.language,
            )
            .select_from(message_embedding.join(message, message.c.pk == message_embedding.c.message_pk))
            .where(message_embedding.c.message_pk.in_(chosen))
        ):
            rows[pk] = (vector, content, language)
    # A message erased between the two reads leaves the sample.
    positions = np.array([p for p in positions if int(pks[p]) in rows], dtype=np.int64)
    picked = [rows[int(pks[p])] for p in positions]
    return Pool(project_pk, pks, _sample(picked, positions))


def _sample(rows: list[tuple[bytes, str, str | None]], positions: np.ndarray) -> suggest.Sample:
    width = len(rows[0][0]) // 2 if rows else 0  # float16: two bytes a dimension
    vectors = np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float16).reshape(len(rows), width)
    return suggest.Sample(vectors.astype(np.float32), [r[1] for r in rows], [r[2] for r in rows], positions)


def pool_chunks(
    reader: Callable[[], AbstractContextManager[Connection]], pool: Pool, size: int = suggest.CHUNK
) -> Iterator[suggest.Chunk]:
    """The pool's vectors (float16) and languages, ``size`` keys at a time, each chunk in a short read
    transaction of its own (a 1M pool is read for minutes; no snapshot is held that long). Messages
    erased since read_pool are left out."""
    for start in range(0, len(pool.pks), size):
        block = pool.pks[start : start + size]
        with reader() as conn:
            rows = conn.execute(
                select(message_embedding.c.message_pk, message_embedding.c.vector, message.c.language)
                .select_from(message_embedding.join(message, message.c.pk == message_embedding.c.message_pk))
                .where(
                    message_embedding.c.project_pk == pool.project_pk,
                    message_embedding.c.message_pk.between(int(block[0]), int(block[-1])),
                )
            ).all()
        keys = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        ours = np.isin(keys, block)  # covered messages between the pool's keys are not in it
        if not ours.any():
            continue
        chosen = [r for r, keep in zip(rows, ours, strict=True) if keep]
        width = len(chosen[0][1]) // 2
        vectors = np.frombuffer(b"".join(r[1] for r in chosen), dtype=np.float16).reshape(len(chosen), width)
        yield np.searchsorted(pool.pks, keys[ours]), vectors, [r[2] for r in chosen]


def conversation_ids(conn: Connection, pks: list[int]) -> dict[int, str]:
    """The conversation each of the given messages belongs to."""
    out: dict[int, str] = {}
    for start in range(0, len(pks), IN_BATCH):
        out.update(
            (pk, cid)
            for pk, cid in conn.execute(
                select(message.c.pk, conversation.c.id)
                .select_from(message.join(conversation, conversation.c.pk == message.c.conversation_pk))
                .where(message.c.pk.in_(pks[start : start + IN_BATCH]))
            )
        )
    return out


def _matches(conn: Connection, project_pk: int, found: list[Suggestion]) -> tuple[list, list]:
    """The earlier suggestions (suggested and dismissed), and for each found cluster the earlier one it
    is (cosine of the centres ≥ SAME_TOPIC, each earlier one taken once), else None."""
    earlier = topics.list_topics(conn, project_pk, ("suggested", "dismissed"))
    earlier = [t for t in earlier if t.kind == "suggested" and t.centroid]
    centres = (
        np.stack([np.frombuffer(t.centroid, dtype=np.float16).astype(np.float32) for t in earlier]) if earlier else None
    )
    taken: set[int] = set()
    same: list = []
    for s in found:
        match = None
        if centres is not None:
            similarity = centres @ s.centroid
            best = int(np.argmax(similarity))
            if similarity[best] >= SAME_TOPIC and earlier[best].pk not in taken:
                match = earlier[best]
                taken.add(match.pk)
        same.append(match)
    return earlier, same


def needing_names(conn: Connection, project_pk: int, found: list[Suggestion]) -> list[int]:
    """Which found clusters an LLM should name: new ones, and kept ones it has not named yet (a stable
    cluster keeps the name and description it was given). Dismissed ones are not suggested: not named."""
    _, same = _matches(conn, project_pk, found)
    return [
        i
        for i, match in enumerate(same)
        if match is None or (match.status == "suggested" and not match.definition.get("description"))
    ]


def take_llm_call(conn: Connection, project_pk: int, day: str, per_day: int | None = None) -> bool:
    """Count one LLM naming request against the project's daily cap (``LLM_CALLS_PER_DAY`` unless
    given); False when the cap is reached."""
    per_day = LLM_CALLS_PER_DAY if per_day is None else per_day
    run = suggestion_run.c
    row = conn.execute(select(run.llm_day, run.llm_calls).where(run.project_pk == project_pk)).first()
    calls = (row.llm_calls or 0) if row is not None and row.llm_day == day else 0
    if calls >= per_day:
        return False
    values = {"llm_day": day, "llm_calls": calls + 1}
    if row is None:
        conn.execute(insert(suggestion_run).values(project_pk=project_pk, **values))
    else:
        conn.execute(update(suggestion_run).where(run.project_pk == project_pk).values(**values))
    return True


def _still(earlier: topics.TopicRow, found: Suggestion) -> bool:
    """Whether a kept suggestion barely moved, so that its stored centre and threshold (and so its matches)
    stay."""
    if not earlier.centroid:
        return False
    centre = np.frombuffer(earlier.centroid, dtype=np.float16).astype(np.float32)
    norms = float(np.linalg.norm(centre) * np.linalg.norm(found.centroid))
    threshold = earlier.definition.get("threshold")
    return (
        norms > 0
        and float(centre @ found.centroid) / norms >= STILL_CENTRE
        and threshold is not None
        and abs(float(threshold) - found.threshold) <= STILL_THRESHOLD
    )


def replace(
    conn: Connection,
    project_pk: int,
    found: list[Suggestion],
    now: datetime,
    grouped: list[CategorySuggestion] | None = None,
) -> dict[str, int]:
    """Store this run's suggestions, and their categories when ``grouped`` (store/categories.py keeps a
    category's id while most of its topics stay); returns how many were new, kept, skipped (dismissed)
    and dropped (``still``: how many of the kept ones kept their matches too). A kept suggestion keeps its
    name and description, unless an LLM has just named it for the first time."""
    earlier, same = _matches(conn, project_pk, found)
    counts = {"new": 0, "kept": 0, "still": 0, "skipped": 0, "dropped": 0}
    matched = {match.pk for match in same if match is not None}
    stored: list[int | None] = []  # the topic pk of each of found (None: it was dismissed before)
    for s, match in zip(found, same, strict=True):
        centroid = s.centroid.astype(np.float16).tobytes()
        definition = {"keywords": s.keywords, "phrases": s.phrases, "size": s.size, "threshold": s.threshold}
        samples = list(dict.fromkeys(s.conversation_ids))[:5]
        if match is not None and match.status == "dismissed":
            counts["skipped"] += 1
            stored.append(None)
        elif match is not None:
            named = {"name": s.name[:128]} if s.named_by_llm else {}
            description = s.description if s.named_by_llm else match.definition.get("description")
            if description:
                definition["description"] = description
            if _still(match, s):
                definition["threshold"] = match.definition.get("threshold")
                topics.annotate(conn, project_pk, match.pk, now, definition=definition, samples=samples, **named)
                counts["still"] += 1
            else:
                topics.redefine(
                    conn, project_pk, match.pk, now, definition=definition, centroid=centroid, samples=samples, **named
                )
            counts["kept"] += 1
            stored.append(match.pk)
        else:
            if s.description:
                definition["description"] = s.description
            pk = topics.create(
                conn, project_pk, name=s.name[:128], kind="suggested", status="suggested", definition=definition,
                centroid=centroid, samples=samples, now=now,
            )  # fmt: skip
            counts["new"] += 1
            stored.append(pk)
    for t in earlier:
        if t.status == "suggested" and t.pk not in matched:
            topics.remove(conn, project_pk, t.pk, now)
            counts["dropped"] += 1
    if grouped is not None:
        placed = [
            categories.Found(c.name, c.centroid, [pk for i in c.suggestions if (pk := stored[i]) is not None])
            for c in grouped
        ]
        counts.update(categories.place(conn, project_pk, [c for c in placed if c.topic_pks], now))
    return counts
