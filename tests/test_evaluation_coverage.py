"""Coverage per topic: test cases matched to defined topics like production messages, their last run's
pass rate, and the busy topics no test covers (both backends, through the API and on the page)."""

from __future__ import annotations

import json
import time

import httpx

from conftest import Project, RunningServer

TOPICS = [
    {"name": "Refunds", "kind": "keyword", "keywords": ["refund"]},
    {"name": "Invoices", "kind": "keyword", "keywords": ["invoice"]},
    {"name": "Delivery", "kind": "semantic", "description": "when an order will be delivered",
     "examples": ["when will my order arrive", "how long does delivery take", "where is my parcel"]},
]  # fmt: skip
PRODUCTION = [
    "I want a refund for my order", "How do I get a refund?", "refund please",
    "I need a copy of my invoice", "The invoice has the wrong address", "invoice for March?", "send the invoice again",
    "When will my order arrive?", "How long does delivery take to Spain?",
]  # fmt: skip


def _conversation(text: str) -> dict:
    return {"conversation": {"messages": [{"role": "user", "message": text}, {"role": "assistant", "message": "ok"}]}}


def _coverage_when(api: httpx.Client, ready, seconds: float = 120) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while True:
        found = api.get("/api/v1/evaluations/coverage").json()
        if ready(found):
            return found
        assert time.monotonic() < deadline, json.dumps(found)
        time.sleep(0.5)


def test_coverage_by_topic(server: RunningServer, project: Project) -> None:
    with server.client(project.admin_token) as api:
        for topic in TOPICS:
            assert api.post("/api/v1/topics", json=topic).status_code == 201
        for text in PRODUCTION:
            assert api.post("/api/v1/log/conversation", json=_conversation(text)).status_code == 201
        cases = [
            {"name": "refund shoes", "messages": [{"role": "user", "message": "Can I get a refund for my shoes?"}],
             "pregenerated_response": "Yes, within 30 days."},
            {"name": "parcel", "messages": [{"role": "user", "message": "When is my parcel going to arrive?"}],
             "pregenerated_response": "Tomorrow."},
            {"name": "hello", "messages": [{"role": "user", "message": "Hello there"}], "pregenerated_response": "Hi!"},
        ]  # fmt: skip
        evaluators = [{"evaluator": "regex", "options": {"pattern": "30 days|Hi"}}]
        assert api.post("/api/v1/test_sets", json={"name": "support", "test_cases": cases,
                                                   "evaluators": evaluators}).status_code == 201  # fmt: skip
        run = api.post("/api/v1/evaluations/run", json={"test_set_name": "support", "version": 1}).json()

        def settled(found: dict) -> bool:
            by_name = {t["name"]: t for t in found["topics"]}
            return (
                found["test_cases_not_yet_matched"] == 0
                and by_name.get("Invoices", {}).get("messages") == 4
                and by_name["Refunds"]["messages"] == 3
                and by_name["Delivery"]["messages"] >= 2  # semantic: the two about delivery, maybe one more
                and by_name["Refunds"]["last_run"]["evaluated"] == 1
            )

        found = _coverage_when(api, settled)
        assert api.get(f"/api/v1/evaluations/run/{run['data']['run_id']}").json()["status"] == "completed"
    by_name = {t["name"]: t for t in found["topics"]}
    assert found["test_cases"] == 3
    assert found["topics"][0]["name"] == "Invoices"  # busiest first
    assert {n: (t["test_cases"], t["last_run"]["passed"], t["last_run"]["evaluated"]) for n, t in by_name.items()} == {
        "Invoices": (0, 0, 0),
        "Refunds": (1, 1, 1),
        "Delivery": (1, 0, 1),  # "Tomorrow." does not match the regex
    }
    assert [t["name"] for t in found["uncovered"]] == ["Invoices"]
    bad = server.client(project.token).get("/api/v1/evaluations/coverage", params={"start_time": "yesterday"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "start_time"
