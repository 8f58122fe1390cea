"""Online evaluation: evaluators on a sample of production replies (LLM ones within a daily allowance),
their counts in the rollup by day, model and topic (both backends)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete

from conftest import Project, RunningServer, make_project, separate_database
from convolens.evaluations.judge import PROMPT as JUDGE_PROMPT
from convolens.outbound import OutboundPolicy
from convolens.schemas.ingest import IngestBatch
from convolens.store import migrate, online_evals, projects, topics
from convolens.store.ingest import apply_batch
from convolens.store.tables import online_eval_result
from convolens.timeutil import utcnow
from convolens.worker.runner import Worker
from openai_stub import openai_stub
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
        wait_until_enriched(server.db, project_pk=project.pk)
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
        bad_option = api.post(rules, json={"evaluator": {"evaluator": "regex", "options": {"pattern": r"(a)\1"}}})
        assert api.get("/api/v1/evaluations/online_rules/99999/scores").status_code == 404
    assert [(s["key"], s["passed"], s["failed"], s["pass_rate"]) for s in by_model] == [
        ("model-a", 1, 1, 0.5),
        ("model-b", 0, 1, 0.0),
    ]
    assert [(s["key"], s["passed"], s["failed"]) for s in by_topic] == [(topic["name"], 1, 1)]
    assert len(by_day) == 1 and by_day[0]["evaluated"] == 3 and by_day[0]["over_budget"] == 0
    assert bad_option.status_code == 422 and bad_option.json()["errors"][0]["field"] == "evaluator.options.pattern"


def _says_dhl(_topic: str, prompt: str) -> dict:
    """The stub as a judge: a reply passes when it names the carrier."""
    asked = json.loads(prompt[len(JUDGE_PROMPT) :])
    return {"verdict": "DHL" in asked["response"], "reason": "checked by the stub"}


def test_an_llm_evaluator_judges_online_within_the_daily_allowance(server: RunningServer, project: Project) -> None:
    judge = {"evaluator": "llm_judge", "options": {"prompt": "The response must name the carrier 'DHL'"}}
    with server.client(project.admin_token) as api, openai_stub(_says_dhl) as (url, asked):
        with server.db.writer() as conn:
            projects.set_project_setting(conn, project.name, "llm", {"base_url": url, "model": "judge-model"})
        made = api.post("/api/v1/evaluations/online_rules", json={"evaluator": judge, "sample_rate": 1}).json()
        bad_cap = api.put("/api/v1/evaluations/online_budget", json={"llm_daily_cap": -1})
        budget = api.put("/api/v1/evaluations/online_budget", json={"llm_daily_cap": 2}).json()
        _log(api, "Where is my parcel?", "It ships today with DHL.", "model-a")
        _log(api, "And the other one?", "It is on its way.", "model-a")
        _log(api, "A third?", "DHL has it.", "model-a")
        wait_until_enriched(server.db, project_pk=project.pk)
        worker = Worker(server.db, outbound=OutboundPolicy.parse("127.0.0.0/8"))
        worker.evaluate_runs.online_settle = timedelta(0)
        assert worker.evaluate_runs.online() == 2  # the third reply: the day's allowance is spent
        by_day = api.get(f"/api/v1/evaluations/online_rules/{made['id']}/scores").json()["scores"]
        used = api.get("/api/v1/evaluations/online_budget").json()
        # The rollup keeps the counts when the per-reply rows go (e.g. with their messages, to retention).
        with server.db.writer() as conn:
            conn.execute(delete(online_eval_result).where(online_eval_result.c.rule_pk == int(made["id"])))
            rule = online_evals.get(conn, project.pk, int(made["id"]))
        after = api.get(f"/api/v1/evaluations/online_rules/{made['id']}/scores").json()["scores"]
    assert bad_cap.status_code == 422 and bad_cap.json()["errors"][0]["field"] == "llm_daily_cap"
    assert budget["llm_daily_cap"] == 2 and budget["llm_used_today"] == 0
    assert len(asked) == 2 and {r["body"]["model"] for r in asked} == {"judge-model"}
    assert [(s["evaluated"], s["passed"], s["failed"], s["over_budget"]) for s in by_day] == [(2, 1, 1, 1)]
    assert used["llm_used_today"] == 2
    assert rule is not None and after == by_day


def test_the_migration_counts_the_replies_already_judged(database_url: str, tmp_path: Path) -> None:
    """0020 fills the rollup from the per-reply outcomes judged before it (totals and each topic), so the
    scores read the same before and after."""
    from alembic import command

    with separate_database(database_url, tmp_path, "online_rollup") as db:
        project = make_project(db, "online-migrated")
        with db.writer() as conn:
            topics.create(conn, project.pk, name="Orders", kind="keyword", definition={"keywords": ["order"]},
                                   now=utcnow())  # fmt: skip
            rule = online_evals.create(conn, project.pk, {"evaluator": "attempts_answer", "options": {}}, None, 1.0,
                                       utcnow())  # fmt: skip
        events: list[dict] = []
        for i, (user, reply, model) in enumerate(
            [("my order?", "It arrives Friday.", "a"), ("order again", "Sorry, I can't help.", "a"),
             ("weather?", "Sunny, 20 degrees.", None)]
        ):  # fmt: skip
            events.append({"type": "conversation", "id": f"c{i}"})
            events.append(
                {"type": "message", "conversation_id": f"c{i}", "id": f"m{i}u", "role": "user", "content": user}
            )
            events.append({"type": "message", "conversation_id": f"c{i}", "id": f"m{i}a", "role": "assistant",
                           "content": reply, **({"model": model} if model else {})})  # fmt: skip
        with db.writer() as conn:
            apply_batch(conn, project.pk, IngestBatch.model_validate({"events": events}), utcnow())
        worker = Worker(db)
        worker.drain()
        worker.evaluate_runs.online_settle = timedelta(0)
        assert worker.evaluate_runs.online() == 3
        window = (utcnow() - timedelta(days=1), utcnow() + timedelta(days=1))
        with db.reader() as conn:
            before = {by: online_evals.scores(conn, rule, by, *window) for by in ("day", "model", "topic")}
        config = migrate.alembic_config()
        with db.write_engine.connect() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0018")
            conn.commit()
        migrate.upgrade(db)
        with db.reader() as conn:
            after = {by: online_evals.scores(conn, rule, by, *window) for by in ("day", "model", "topic")}
    assert [(s["key"], s["evaluated"], s["passed"]) for s in before["model"]] == [("", 1, 1), ("a", 2, 1)]
    assert [(s["key"], s["evaluated"], s["passed"]) for s in before["topic"]] == [("Orders", 2, 1)]
    assert after == before
