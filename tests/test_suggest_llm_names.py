"""Names of suggested topics from a project's LLM provider: one batched request a run for the new
clusters (never one a message or a cluster), kept while a cluster is stable, within a daily cap; the
offline names stay without a provider or when the request fails."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, Project, make_project, new_ids_batch, running_server, separate_database
from convolens.config import LlmSettings
from convolens.store import suggestions, topics
from convolens.store.db import Database
from convolens.store.ingest import apply_batch
from convolens.timeutil import utcnow
from convolens.worker.runner import Worker
from openai_stub import NAMING_PROMPT, openai_stub


@pytest.fixture
def llm_db(database_url: str, tmp_path: Path) -> Iterator[Database]:
    with separate_database(database_url, tmp_path, "llmnames") as database:
        yield database


def _seed(db: Database, project: Project) -> None:
    """Three subjects' user messages, one conversation each."""
    rows = [json.loads(line) for line in (REPO / "tests" / "data" / "topics.jsonl").read_text().splitlines()]
    texts = [r["text"] for topic in ("billing", "cooking", "travel") for r in rows if r["topic"] == topic][:102]
    with db.writer() as conn:
        for text in texts:
            work = new_ids_batch(project.pk, messages=1)
            work.batch.events[1].content, work.batch.events[1].kind = text, "message"
            apply_batch(conn, project.pk, work.batch, utcnow(), ids_are_new=True)


def _run(worker: Worker, db: Database, project: Project) -> dict[str, int]:
    with db.writer() as conn:
        suggestions.request_run(conn, project.pk, utcnow())
    counts = worker.suggest_once()
    assert counts is not None
    return counts


def _naming(requests: list[dict]) -> list[dict]:
    return [r for r in requests if r["body"]["messages"][-1]["content"].startswith(NAMING_PROMPT)]


def _suggested(db: Database, project: Project) -> list[topics.TopicRow]:
    with db.reader() as conn:
        return topics.list_topics(conn, project.pk, ("suggested",))


def test_one_request_names_a_runs_new_clusters_and_none_while_they_are_stable(llm_db: Database, tmp_path: Path) -> None:
    project = make_project(llm_db, "named")
    _seed(llm_db, project)
    with openai_stub(lambda topic, text: None) as (url, requests):
        worker = Worker(llm_db, llm=LlmSettings(base_url=url, api_key="sk-stub"))
        worker.drain()  # embeddings and languages, as the enrichment stores them
        first = _run(worker, llm_db, project)
        assert first["new"] >= 3 and first["llm_named"] == first["new"], first
        assert len(_naming(requests)) == 1  # one request for all the new clusters
        asked = json.loads(_naming(requests)[0]["body"]["messages"][-1]["content"][len(NAMING_PROMPT) :])
        assert len(asked) == first["new"] and all(1 <= len(g["messages"]) <= 5 for g in asked)
        named = {t.pk: (t.name, t.definition.get("description")) for t in _suggested(llm_db, project)}
        assert all(name.startswith("About ") and description.startswith("Users ask about ") for name, description in
                   named.values()), named  # fmt: skip

        second = _run(worker, llm_db, project)
        assert second["kept"] == first["new"] and second["new"] == 0, second
        assert len(_naming(requests)) == 1  # stable clusters keep their names: no second request
        assert {t.pk: (t.name, t.definition.get("description")) for t in _suggested(llm_db, project)} == named
        worker.judges.close()
    assert len(requests) == 1  # and no message was sent to the provider one by one

    with running_server(llm_db, tmp_path) as server, server.client(project.read_token) as client:
        body = client.get("/api/v1/suggested_topics").json()
    assert {t["id"]: (t["name"], t["description"]) for t in body["topics"]} == {str(k): v for k, v in named.items()}


def test_without_a_provider_or_when_it_fails_the_offline_names_stay(llm_db: Database) -> None:
    project = make_project(llm_db, "offline")
    _seed(llm_db, project)
    with openai_stub(lambda topic, text: None, namer=lambda groups: None) as (url, requests):
        offline = Worker(llm_db)
        offline.drain()
        assert _run(offline, llm_db, project)["llm_named"] == 0
        assert requests == []
        names = {t.pk: t.name for t in _suggested(llm_db, project)}
        assert len(names) >= 3 and all(t.definition.get("description") is None for t in _suggested(llm_db, project))

        failing = Worker(llm_db, llm=LlmSettings(base_url=url))
        assert _run(failing, llm_db, project)["llm_named"] == 0  # the provider answers 500
        assert len(_naming(requests)) == 1
        assert {t.pk: t.name for t in _suggested(llm_db, project)} == names
        failing.judges.close()


def test_the_daily_cap_stops_naming_requests(llm_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(suggestions, "LLM_CALLS_PER_DAY", 1)
    project = make_project(llm_db, "capped")
    _seed(llm_db, project)
    with openai_stub(lambda topic, text: None, namer=lambda groups: None) as (url, requests):
        worker = Worker(llm_db, llm=LlmSettings(base_url=url))
        worker.drain()
        _run(worker, llm_db, project)  # fails: the clusters stay unnamed, so the next run would ask again…
        _run(worker, llm_db, project)  # …but the day's one request is spent
        assert len(_naming(requests)) == 1
        worker.judges.close()
