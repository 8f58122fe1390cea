"""Online evaluation: an offline evaluator on a sample of production replies, its outcomes by day, model
and topic (both backends)."""

from __future__ import annotations

from datetime import timedelta

from conftest import Project, RunningServer
from convolens.worker.runner import Worker
from web_support import wait_until_enriched


def _log(api, user: str, reply: str, model: str) -> None:  # type: ignore[no-untyped-def]
    said = [{"role": "user", "message": user}, {"role": "assistant", "message": reply}]
    body = {"conversation": {"messages": said, "metadata": {"model": model}}}
    assert api.post("/api/v1/log/conversation", json=body).status_code == 201


def test_an_offline_evaluator_judges_production_replies(server: RunningServer, project: Project) -> None:
    with server.client(project.admin_token) as api:
        topic = api.post("/api/v1/topics", json={"name": "Orders", "kind": "keyword", "keywords": ["order"]}).json()
        made = api.post("/api/v1/evaluations/online_rules",
                        json={"evaluator": {"evaluator": "attempts_answer"}, "sample_rate": 1}).json()  # fmt: skip
        _log(api, "Where is my order?", "It shipped yesterday and arrives Friday.", "model-a")
        _log(api, "Cancel my order", "I'm sorry, I can't help with that.", "model-b")
        _log(api, "What's the weather?", "Please contact our support team.", "model-a")
        wait_until_enriched(server.db)
        worker = Worker(server.db)
        worker.evaluate_runs.online_settle = timedelta(0)
        assert worker.evaluate_runs.online() == 3
        worker.evaluate_runs._online_due = 0.0
        assert worker.evaluate_runs.online() == 0  # each reply judged once
        base = f"/api/v1/evaluations/online_rules/{made['id']}/scores"
        by_model = api.get(base, params={"group_by": "model"}).json()["scores"]
        by_topic = api.get(base, params={"group_by": "topic"}).json()["scores"]
        by_day = api.get(base).json()["scores"]
        rules = "/api/v1/evaluations/online_rules"
        refused = api.post(rules, json={"evaluator": {"evaluator": "llm_judge", "options": {"prompt": "x"}}})
        bad_option = api.post(rules, json={"evaluator": {"evaluator": "regex", "options": {"pattern": r"(a)\1"}}})
        assert api.get("/api/v1/evaluations/online_rules/99999/scores").status_code == 404
    assert [(s["key"], s["positive"], s["negative"], s["pass_rate"]) for s in by_model] == [
        ("model-a", 1, 1, 0.5),
        ("model-b", 0, 1, 0.0),
    ]
    assert [(s["key"], s["positive"], s["negative"]) for s in by_topic] == [(topic["name"], 1, 1)]
    assert len(by_day) == 1 and by_day[0]["judged"] == 3
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "evaluator.evaluator"
    assert bad_option.status_code == 422 and bad_option.json()["errors"][0]["field"] == "evaluator.options.pattern"
