"""Transcript search: which conversations have a message holding every term of a query.

A query is words and "quoted phrases"; each term matches as a case-insensitive substring of one
message (so "charge" finds "charged", and Korean, Japanese or Chinese text matches without spaces
between words), and a conversation matches when one of its messages holds every term. Custom events
are not searched. What is searched is what is stored: the text after PII scrubbing (server/api/ingest.py
scrubs before storage), so a scrubbed address or number cannot be found.

The index, made for substrings on each backend (migration 0013), holds enriched messages: the
enrichment worker's update adds them, not the ingest (trigram indexing costs several times the rest of
a message's write, and ingest is the hot path). Messages still waiting for enrichment are found by
scanning just those (the pending-message index lists them), so a message is found as soon as it is
stored.
- SQLite: an FTS5 table over ``message.content`` (its first ``INDEXED_CHARS``) with the trigram tokenizer,
  kept in step by triggers
  on enrichment, delete and edit (so erasure, retention and cascades take entries out with their
  messages).
- PostgreSQL: a partial ``pg_trgm`` GIN index on ``message.content``, which ``ILIKE '%term%'`` uses.
  Where the extension could not be installed, the same ``ILIKE`` scans the window's messages, as before.

Trigrams need 3 characters: a term of 1 or 2 characters ("ok", Korean "환불") is checked by ``LIKE``
on the messages the longer terms found; a query of only such terms scans the messages of the
conversations in the window (the page's date range), as search did before the index.
"""

from __future__ import annotations

from dataclasses import dataclass
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, Float, Integer, exists, func, literal, select, text, true, union_all
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Subquery

from convolens.store.dialect import like_pattern
from convolens.store.tables import conversation, message

MIN_INDEXED = 3  # characters a term needs to be looked up in a trigram index
# SQLite's index holds each message's first characters only, as many as enrichment reads: the worker
# indexes under the write lock the API's writes wait for (migration 0014 writes the same number).
INDEXED_CHARS = 20_000
# Matching messages beyond which a query is "common": the newest conversations are then checked one by
# one (50 matches are near), and the dashboard counts up to COUNT_CAP of them.
COMMON = 5_000
COUNT_CAP = 1_000
MAX_TERMS = 8
MAX_CHARS = 500
ORDERS = ("time", "relevance")


@dataclass(frozen=True)
class Query:
    terms: tuple[str, ...]

    @property
    def indexed(self) -> tuple[str, ...]:
        return tuple(t for t in self.terms if len(t) >= MIN_INDEXED)

    @property
    def short(self) -> tuple[str, ...]:
        return tuple(t for t in self.terms if len(t) < MIN_INDEXED)


def parse(raw: str) -> Query:
    """Words and "quoted phrases" (an unclosed quote runs to the end); at most ``MAX_TERMS`` distinct
    terms from the first ``MAX_CHARS`` characters. Linear in the input."""
    terms: list[str] = []
    for i, part in enumerate(raw[:MAX_CHARS].split('"')):
        pieces = [" ".join(part.split())] if i % 2 else part.split()
        for piece in pieces:
            if piece and piece.casefold() not in (t.casefold() for t in terms):
                terms.append(piece)
    return Query(tuple(terms[:MAX_TERMS]))


_trigram_index: WeakKeyDictionary[Engine, bool] = WeakKeyDictionary()


def has_index(conn: Connection) -> bool:
    """Whether this database has the search index (always on SQLite; on PostgreSQL if pg_trgm was
    installable when migration 0013 ran)."""
    if conn.dialect.name == "sqlite":
        return True
    engine = conn.engine
    if engine not in _trigram_index:
        _trigram_index[engine] = bool(
            conn.execute(text("SELECT 1 FROM pg_indexes WHERE indexname = 'ix_message_content_trgm'")).first()
        )
    return _trigram_index[engine]


def _fts_expression(terms: tuple[str, ...]) -> str:
    """FTS5 MATCH syntax: each term a quoted string (its own quotes doubled), implicitly ANDed."""
    return " ".join('"' + t.replace('"', '""') + '"' for t in terms)


def _like_all(terms: tuple[str, ...]) -> list[ColumnElement]:
    return [message.c.content.ilike(like_pattern(t), escape="\\") for t in terms]


def _hits(conn: Connection, project_pk: int, q: Query, scored: bool) -> Subquery:
    """(conversation_pk[, score]) of the project's messages matching every term: the enriched ones from
    the index, the few not enriched yet by a scan of the pending ones. A lower score is a better match."""
    base: list[ColumnElement] = [message.c.project_pk == project_pk, message.c.kind != "event"]
    if conn.dialect.name == "sqlite":
        fts = (
            text("SELECT rowid, rank FROM message_search WHERE message_search MATCH :expression")
            .bindparams(expression=_fts_expression(q.indexed))
            .columns(rowid=Integer, rank=Float)
            .subquery("fts")
        )
        # ``project_pk + 0``: not the project index, so that SQLite starts from the index's matches and
        # looks their messages up by key (with the index on project it walked all of the project's
        # messages, probing the index for each: seconds at a million messages).
        indexed = (
            select(message.c.conversation_pk, fts.c.rank.label("score"))
            .select_from(fts.join(message, message.c.pk == fts.c.rowid))
            .where(message.c.project_pk + 0 == project_pk, message.c.kind != "event", *_like_all(q.short))
        )
    else:
        # pg_trgm's similarity of the query to the message's closest words: higher is better. The
        # conditions repeat the partial index's predicate, so that the planner may use it.
        similarity = func.word_similarity(" ".join(q.terms), message.c.content)
        indexed = select(message.c.conversation_pk, (-similarity).label("score")).where(
            *base, message.c.enriched_version.is_not(None), *_like_all(q.terms)
        )
    pending = select(message.c.conversation_pk, literal(0.0, Float).label("score")).where(
        *base, message.c.enriched_version.is_(None), *_like_all(q.terms)
    )
    if not scored:
        # Without the score: PostgreSQL would compute the similarity of every match (700 ms for 28,000).
        indexed = indexed.with_only_columns(message.c.conversation_pk)
        pending = pending.with_only_columns(message.c.conversation_pk)
        return union_all(indexed, pending).subquery("hits")
    both = union_all(indexed, pending).subquery("matches")
    return (
        select(both.c.conversation_pk, func.min(both.c.score).label("score"))
        .group_by(both.c.conversation_pk)
        .subquery("hits")
    )


def is_common(conn: Connection, q: Query) -> bool:
    """Whether more than ``COMMON`` enriched messages match. Listing such matches from the index costs more
    than checking the newest conversations one by one: at a million messages a phrase in 28,000
    conversations took 500 ms from SQLite's index and 770 ms from PostgreSQL's (its heap visits), the
    first page 30 ms by checking. SQLite counts in its index, stopping past ``COMMON`` (a few ms);
    PostgreSQL's planner estimates it from pg_trgm's statistics (planning only, ~2 ms)."""
    if not q.indexed or not has_index(conn):
        return False
    if conn.dialect.name == "sqlite":
        probe = text(
            "SELECT count(*) FROM (SELECT rowid FROM message_search WHERE message_search MATCH :expression LIMIT :n)"
        )
        return conn.execute(probe, {"expression": _fts_expression(q.indexed), "n": COMMON + 1}).scalar_one() > COMMON
    likes = " AND ".join(f"content ILIKE :t{i} ESCAPE '\\'" for i in range(len(q.terms)))
    probe = text(
        "EXPLAIN (FORMAT JSON) SELECT pk FROM message"
        f" WHERE enriched_version IS NOT NULL AND kind <> 'event' AND {likes}"
    )
    plan = conn.execute(probe, {f"t{i}": like_pattern(t) for i, t in enumerate(q.terms)}).scalar_one()
    return plan[0]["Plan"]["Plan Rows"] > COMMON


def condition(conn: Connection, project_pk: int, q: Query, common: bool = False) -> ColumnElement:
    """The conversations with a message matching the query (``common``: see ``is_common``)."""
    if not q.terms:
        return true()
    if common or not q.indexed or not has_index(conn):
        return exists().where(
            message.c.conversation_pk == conversation.c.pk, message.c.kind != "event", *_like_all(q.terms)
        )
    hits = _hits(conn, project_pk, q, scored=False)
    return conversation.c.pk.in_(select(hits.c.conversation_pk))


def project_condition(conn: Connection, project_pk: int, q: Query, common: bool = False) -> ColumnElement:
    """The conversations' project filter beside a search. On SQLite, written so that no conversation index
    applies (``project_pk + 0``): the planner then looks the index's matches up by key, where with the
    window index it walked every conversation of the window probing the matches (a year at a million
    messages: 290 ms for a word in 400 conversations, against tens of milliseconds)."""
    if conn.dialect.name == "sqlite" and q.indexed and not common:
        return conversation.c.project_pk + 0 == project_pk
    return conversation.c.project_pk == project_pk


def index_loaded(conn: Connection, project_pk: int) -> None:
    """Index a project's messages that a bulk loader (a benchmark's generator, an import) wrote straight
    into the table already enriched, once, after loading: SQLite indexes on enrichment only (no trigger on
    insert, which would cost ingest). PostgreSQL's index takes such rows as they are inserted."""
    if conn.dialect.name == "sqlite":
        conn.execute(
            text(
                "INSERT INTO message_search (rowid, content) SELECT pk, substr(content, 1, :chars) FROM message"
                " WHERE project_pk = :p AND enriched_version IS NOT NULL AND kind != 'event'"
            ),
            {"p": project_pk, "chars": INDEXED_CHARS},
        )


def ranked(conn: Connection, project_pk: int, q: Query) -> Subquery | None:
    """(conversation_pk, score) to join for relevance order, or None where there is no index to rank
    with (then the order is by time)."""
    if not q.indexed or not has_index(conn):
        return None
    return _hits(conn, project_pk, q, scored=True)
