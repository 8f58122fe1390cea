"""The topics page and form at the topic limits: a bounded page, and the limits refused by name."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import event

from conftest import RunningServer, running_server
from convolens.config import Limits
from convolens.store import migrate, projects, topics
from convolens.store.db import Database
from convolens.timeutil import utcnow
from web_support import Account, add_account, signed_in

PROJECT = "many-topics"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("topics-page")
    db = Database(f"sqlite:///{home / 'convolens.sqlite3'}")
    migrate.upgrade(db)
    with running_server(db, home, Limits()) as server:
        server.member = add_account(db, "member@example.com", PROJECT, "member")  # type: ignore[attr-defined]
        yield server
    db.dispose()


def _define(db: Database, first: int, last: int, keywords: int) -> None:
    with db.writer() as conn:
        pk = projects.get_project_pk(conn, PROJECT)
        for i in range(first, last):
            words = [f"word{i}x{j}" for j in range(keywords)]
            topics.create(conn, pk, name=f"topic {i}", kind="keyword", definition={"keywords": words}, now=utcnow())


def _statements(server: RunningServer, account: Account) -> tuple[int, str]:
    """SQL statements the page's request runs (not the embedded worker's), and the page."""
    count = 0

    def counted(*_: object) -> None:
        nonlocal count
        if threading.current_thread().name != "convolens-worker":
            count += 1

    engines = (server.db.read_engine, server.db.write_engine)
    with signed_in(server, account) as client:
        client.get(f"/p/{PROJECT}/topics")  # sessions and caches warm
        for engine in engines:
            event.listen(engine, "before_cursor_execute", counted)
        try:
            page = client.get(f"/p/{PROJECT}/topics")
        finally:
            for engine in engines:
                event.remove(engine, "before_cursor_execute", counted)
    assert page.status_code == 200
    return count, page.text


def test_the_topics_page_reads_as_much_for_a_hundred_topics_as_for_one(web: RunningServer) -> None:
    limits = web.settings.limits
    _define(web.db, 0, 1, limits.max_keywords_per_topic)
    one, _ = _statements(web, web.member)  # type: ignore[attr-defined]
    _define(web.db, 1, limits.max_topics_per_project, limits.max_keywords_per_topic)
    hundred, page = _statements(web, web.member)  # type: ignore[attr-defined]
    assert hundred == one, (one, hundred)
    assert page.count('href="/p/many-topics/topics/') >= limits.max_topics_per_project
    # Each topic shows its first keywords, not all of them: the page grows with the topics, not the keywords.
    assert "word7x10, word7x11" in page and "word7x12" not in page and "and 38 more" in page
    assert len(page) < 200_000


def test_the_form_refuses_a_topic_over_the_limits_naming_the_field(web: RunningServer) -> None:
    account = web.member  # type: ignore[attr-defined]
    with signed_in(web, account) as client:
        form = {"name": "big", "kind": "keyword", "csrf_token": client.csrf}  # type: ignore[attr-defined]
        many = client.post(f"/p/{PROJECT}/topics", data={**form, "keywords": ", ".join(f"k{i}" for i in range(51))})
        assert many.status_code == 422 and "keywords: at most 50 keywords a topic" in many.text
        long = client.post(f"/p/{PROJECT}/topics", data={**form, "keywords": "fine\n" + "a" * 101})
        assert long.status_code == 422 and "keywords[1]: at most 100 characters" in long.text
        _define(web.db, 1000, 1000 + web.settings.limits.max_topics_per_project, 1)
        full = client.post(f"/p/{PROJECT}/topics", data={**form, "keywords": "k"})
        assert full.status_code == 409 and "topics: this project has 100 topics" in full.text
