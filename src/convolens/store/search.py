"""Transcript search: which conversations have a message holding every term of a query.

A query is words and "quoted phrases"; each term matches as a case-insensitive substring of one
message (so "charge" finds "charged", and Korean, Japanese or Chinese text matches without spaces
between words), and a conversation matches when one of its messages holds every term. Custom events
are not searched. What is searched is what is stored: the text after PII scrubbing (server/api/ingest.py
scrubs before storage), so a scrubbed address or number cannot be found.

The index, made for substrings on each backend (migration 0013):
- SQLite: an FTS5 table over ``message.content`` with the trigram tokenizer, kept in step by triggers
  on every insert, delete and edit (so erasure, retention and cascades take entries out with their
  messages).
- PostgreSQL: a ``pg_trgm`` GIN index on ``message.content``, which ``ILIKE '%term%'`` uses. Where the
  extension could not be installed, the same ``ILIKE`` scans the window's messages, as before.

Trigrams need 3 characters: a term of 1 or 2 characters ("ok", Korean "환불") is checked by ``LIKE``
on the messages the longer terms found; a query of only such terms scans the messages of the
conversations in the window (the page's date range), as search did before the index.
"""

from __future__ import annotations

from dataclasses import dataclass
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, Float, Integer, exists, func, select, text, true
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Subquery

from convolens.store.dialect import like_pattern
from convolens.store.tables import conversation, message

MIN_INDEXED = 3  # characters a term needs to be looked up in a trigram index
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
    """(conversation_pk, score) of the project's messages matching every term, from the index; a lower
    score is a better match."""
    conditions: list[ColumnElement] = [message.c.project_pk == project_pk, message.c.kind != "event"]
    if conn.dialect.name == "sqlite":
        fts = (
            text("SELECT rowid, rank FROM message_search WHERE message_search MATCH :expression")
            .bindparams(expression=_fts_expression(q.indexed))
            .columns(rowid=Integer, rank=Float)
            .subquery("fts")
        )
        source = message.join(fts, fts.c.rowid == message.c.pk)
        score = func.min(fts.c.rank)  # bm25: more negative is better
        conditions += _like_all(q.short)
    else:
        source = message
        # pg_trgm's similarity of the query to the message's closest words: higher is better.
        score = -func.max(func.word_similarity(" ".join(q.terms), message.c.content))
        conditions += _like_all(q.terms)
    columns = [message.c.conversation_pk, score.label("score")] if scored else [message.c.conversation_pk]
    query = select(*columns).select_from(source).where(*conditions)
    if scored:
        query = query.group_by(message.c.conversation_pk)
    return query.subquery("hits")


def condition(conn: Connection, project_pk: int, q: Query) -> ColumnElement:
    """The conversations with a message matching the query."""
    if not q.terms:
        return true()
    if not q.indexed or not has_index(conn):
        return exists().where(
            message.c.conversation_pk == conversation.c.pk, message.c.kind != "event", *_like_all(q.terms)
        )
    hits = _hits(conn, project_pk, q, scored=False)
    return conversation.c.pk.in_(select(hits.c.conversation_pk))


def ranked(conn: Connection, project_pk: int, q: Query) -> Subquery | None:
    """(conversation_pk, score) to join for relevance order, or None where there is no index to rank
    with (then the order is by time)."""
    if not q.indexed or not has_index(conn):
        return None
    return _hits(conn, project_pk, q, scored=True)
