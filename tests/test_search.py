"""Transcript search on both backends, through its index: words, phrases, several words, Korean
substrings, short terms, relevance order; a message ingested later is found, an erased or pruned one no
longer is (nor left in SQLite's index); the read API takes ``q``."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from conftest import Project, make_project
from convolens.schemas.ingest import IngestBatch
from convolens.store import conversation_reads as queries
from convolens.store import erasure, explore, retention, search
from convolens.store.db import Database
from convolens.store.explore import ConversationFilter
from convolens.store.ingest import apply_batch
from convolens.timeutil import utcnow
from convolens.worker.runner import Worker

TEXTS = {
    "billing": "I was charged twice for my invoice this month",
    "reversed": "Twice this month I was charged, see the invoice",
    "korean": "환불은 어떻게 받나요? 결제가 두 번 되었어요",
    "japanese": "請求書の宛名を変更したいです",
    "short": "ok so the VAT number is wrong",
    "quoted": 'He wrote "100% sure" and_more',
}


def write(db: Database, project_pk: int, events: list[dict]) -> None:
    with db.writer() as conn:
        apply_batch(conn, project_pk, IngestBatch.model_validate({"events": events}), utcnow())


def conversation_events(cid: str, content: str, user: str | None = None, at: datetime | None = None) -> list[dict]:
    stamp = {"timestamp": at.isoformat() + "Z"} if at else {}
    return [
        {"type": "conversation", "id": cid, "user_id": user or f"user-{cid}"},
        {"type": "message", "conversation_id": cid, "id": f"{cid}-0", "role": "user", "content": content, **stamp},
        {"type": "message", "conversation_id": cid, "id": f"{cid}-1", "role": "assistant",
         "content": "Let me look into that for you.", **stamp},
    ]  # fmt: skip


@pytest.fixture
def searched(db: Database) -> Project:
    project = make_project(db, "search")
    events: list[dict] = []
    for cid, content in TEXTS.items():
        events += conversation_events(cid, content)
    # Another project's identical text is never found from this one.
    other = make_project(db, "search-other")
    write(db, other.pk, conversation_events("billing", TEXTS["billing"]))
    write(db, project.pk, events)
    enrich(db)  # into the index (the test server's embedded worker may have been first)
    return project


def enrich(db: Database) -> None:
    Worker(db, rollup_settle=timedelta(0), rollup_rest=0.0).drain()


def indexed(db: Database, word: str) -> bool:
    """Whether the search index itself holds a message with ``word``: SQLite's FTS5 table answers for it;
    on PostgreSQL a query that can only read the trigram index (sequential scans off) finds it."""
    with db.reader() as conn:
        if db.is_sqlite:
            query = "SELECT count(*) FROM message_search WHERE message_search MATCH :e"
            return conn.execute(text(query), {"e": '"' + word + '"'}).scalar_one() > 0
        query = (
            "SELECT count(*) FROM message WHERE content ILIKE :p AND enriched_version IS NOT NULL AND kind <> 'event'"
        )
        conn.execute(text("SET enable_seqscan = off"))
        try:
            plan = "\n".join(conn.execute(text("EXPLAIN " + query), {"p": f"%{word}%"}).scalars())
            assert "ix_message_content_trgm" in plan, plan
            return conn.execute(text(query), {"p": f"%{word}%"}).scalar_one() > 0
        finally:
            conn.execute(text("RESET enable_seqscan"))


def found(db: Database, project: Project, q: str, order: str = "time") -> list[str]:
    now = utcnow()
    f = ConversationFilter(start=now - timedelta(days=30), end=now + timedelta(days=1), text=q, order=order)
    with db.reader() as conn:
        rows, total = explore.page(conn, project.pk, f, 1, 50)
    ids = [r.view.id for r in rows]
    assert total == len(ids)
    return sorted(ids) if order == "time" else ids


def test_words_phrases_and_substrings(db: Database, searched: Project) -> None:
    with db.reader() as conn:
        assert search.has_index(conn)  # the backends here have it: the index is what is tested
    assert indexed(db, "宛名を変更") and indexed(db, "어떻게 받")
    assert found(db, searched, "invoice") == ["billing", "reversed"]
    assert found(db, searched, "INVOIC") == ["billing", "reversed"]  # a part of a word, any case
    assert found(db, searched, '"charged twice"') == ["billing"]  # a phrase: in that order
    assert found(db, searched, "charged twice") == ["billing", "reversed"]  # both words, anywhere
    assert found(db, searched, "charged refund") == []  # every word must be there
    assert found(db, searched, "어떻게 받") == ["korean"]  # Korean, inside a sentence
    assert found(db, searched, "두 번 되") == ["korean"]
    assert found(db, searched, '"어떻게 받나"') == ["korean"]
    assert found(db, searched, "宛名を変更") == ["japanese"]
    assert found(db, searched, "환불") == ["korean"]  # 2 characters: no trigram, checked by LIKE
    assert found(db, searched, "ok VAT") == ["short"]  # a short word with an indexed one
    assert found(db, searched, '"100% sure"') == ["quoted"]  # % and _ are text, not wildcards
    assert found(db, searched, "and_more") == ["quoted"]
    assert found(db, searched, "100%sure") == []
    assert found(db, searched, "look into") == sorted(TEXTS)  # the replies are searched too
    # The list shows the message found, not the conversation's first question.
    now = utcnow()
    f = ConversationFilter(start=now - timedelta(days=1), end=now + timedelta(days=1), text="look into")
    with db.reader() as conn:
        rows, _ = explore.page(conn, searched.pk, f, 1, 50)
    assert {r.preview for r in rows} == {"Let me look into that for you."}


def test_relevance_order(db: Database, searched: Project) -> None:
    write(
        db,
        searched.pk,
        conversation_events("many", "invoice invoice invoice: where is my invoice? invoice please"),
    )
    enrich(db)  # ranked from the index (messages not enriched yet come after the ranked ones)
    ranked = found(db, searched, "invoice", order="relevance")
    assert sorted(ranked) == ["billing", "many", "reversed"]
    assert ranked[0] == "many"


def test_later_messages_are_found_erased_and_pruned_ones_are_not(db: Database, searched: Project) -> None:
    assert found(db, searched, "zanzibar") == []
    write(db, searched.pk, conversation_events("late", "Is there a ferry to Zanzibar?", user="traveller"))
    assert found(db, searched, "zanzibar") == ["late"]  # at once: the pending messages are scanned
    enrich(db)
    assert found(db, searched, "zanzibar") == ["late"]  # and from the index once enriched
    assert indexed(db, "Zanzibar")
    with db.writer() as conn:
        assert erasure.erase_end_user(conn, searched.pk, "traveller") is not None
    assert found(db, searched, "zanzibar") == []
    if db.is_sqlite:  # the index itself holds no entry for it any more
        with db.reader() as conn:
            hits = conn.execute(text("SELECT count(*) FROM message_search WHERE message_search MATCH 'zanzibar'"))
            assert hits.scalar_one() == 0
    # Retention: an old conversation pruned leaves the search with its messages.
    old = utcnow() - timedelta(days=3)
    write(db, searched.pk, conversation_events("old", "my parcel to Timbuktu", at=old))
    enrich(db)
    assert found(db, searched, "timbuktu") == ["old"]
    with db.writer() as conn:
        assert retention.prune_batch(conn, searched.pk, utcnow() - timedelta(days=1), utcnow()).conversations == 1
    assert found(db, searched, "timbuktu") == []
    assert found(db, searched, "invoice") == ["billing", "reversed"]  # the others stay found


def test_read_api_takes_q(server, db: Database) -> None:  # type: ignore[no-untyped-def]
    project = make_project(db, "search-api")
    write(db, project.pk, conversation_events("k", TEXTS["korean"]) + conversation_events("b", TEXTS["billing"]))
    with server.client(project.read_token) as client:
        body = client.get("/api/v1/conversations", params={"q": "어떻게 받"}).json()
        assert [c["id"] for c in body["conversations"]] == ["k"]
        assert body["pagination"]["total_records"] == 1
        body = client.get("/api/v1/conversations", params={"q": '"charged twice"', "order": "relevance"}).json()
        assert [c["id"] for c in body["conversations"]] == ["b"]
        bad = client.get("/api/v1/conversations", params={"q": "x", "order": "random"})
        assert bad.status_code == 422 and "order" in bad.text


def test_store_listing_with_text(db: Database, searched: Project) -> None:
    now = utcnow()
    with db.reader() as conn:
        page = queries.list_conversations(
            conn, searched.pk, start=now - timedelta(days=1), end=now + timedelta(days=1), text="宛名"
        )
    assert [c.id for c in page.items] == ["japanese"] and page.total == 1


def test_parse_is_bounded() -> None:
    q = search.parse('a "b c" ' + "word " * 10_000)
    assert q.terms[:3] == ("a", "b c", "word")  # then the cut-off word at 500 characters
    assert len(q.terms) <= search.MAX_TERMS
    assert len(search.parse(" ".join(f"w{i}" for i in range(100))).terms) == search.MAX_TERMS
    assert search.parse('"unclosed phrase here').terms == ("unclosed phrase here",)
    assert search.parse('  ""  ').terms == ()


def test_common_queries_check_the_newest_conversations(
    db: Database, searched: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``COMMON`` matches (SQLite), conversations are checked newest first and counted up to a cap:
    the same conversations are found."""
    monkeypatch.setattr(search, "COMMON", 1)
    monkeypatch.setattr(search, "COUNT_CAP", 1)
    with db.reader() as conn:
        assert search.is_common(conn, search.parse("invoice")) == db.is_sqlite
        assert not search.is_common(conn, search.parse("nowhere-" + uuid.uuid4().hex))
    now = utcnow()
    f = ConversationFilter(start=now - timedelta(days=1), end=now + timedelta(days=1), text="invoice")
    with db.reader() as conn:
        rows, total = explore.page(conn, searched.pk, f, 1, 50)
    assert sorted(r.view.id for r in rows) == ["billing", "reversed"]
    assert total == 2  # on SQLite: the cap + 1, shown as "1+"
    assert found(db, searched, '"charged twice"') == ["billing"]
