"""The evaluators that ask the LLM provider (``llm_judge``, ``attempts_answer`` with method=llm) and the
offline ``attempts_answer`` classifier; a project's provider goes through the outbound guard."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import make_project, separate_database
from convolens.evaluations import registry
from convolens.evaluations.base import Attempt, Message
from convolens.evaluations.judge import PROMPT as JUDGE_PROMPT
from convolens.outbound import OutboundPolicy
from convolens.store import evaluations, projects
from convolens.timeutil import utcnow
from convolens.worker.runner import Worker
from openai_stub import openai_stub
from test_evaluators import outcome

LOOPBACK = OutboundPolicy.parse("127.0.0.0/8")


def test_attempts_answer_tells_answers_from_refusals_and_deflections() -> None:
    assert outcome("attempts_answer", "Your parcel left our warehouse today and arrives on Monday.") == "positive"
    assert outcome("attempts_answer", "No, that model isn't waterproof.") == "positive"  # a "no" is an answer
    assert outcome("attempts_answer", "I'm sorry, I can't help you with that.") == "negative"
    assert outcome("attempts_answer", "Please contact our support team about this.") == "negative"
    assert outcome("attempts_answer", "Es tut mir leid, darauf kann ich nicht antworten.") == "negative"
    assert outcome("attempts_answer", "") == "inconclusive"


def _criterion_rule(_topic: str, prompt: str) -> dict:
    """The stub as a judge: a response passes when it contains the criterion's quoted word."""
    if prompt.startswith(JUDGE_PROMPT):
        asked = json.loads(prompt[len(JUDGE_PROMPT) :])
        word = asked["criterion"].split("'")[1]
        found = word in asked["response"]
        return {"verdict": found, "reason": f"{'mentions' if found else 'does not mention'} {word}"}
    asked = json.loads(prompt.split("\n", 1)[1])  # attempts_answer's question
    return {"verdict": not asked["response"].startswith("Sorry"), "reason": "judged by the stub"}


def _cases() -> list[dict]:
    def case(name: str, response: str) -> dict:
        return {"name": name, "messages": [{"role": "user", "message": "Where is my order?"}],
                "pregenerated_response": response, "evaluators": []}  # fmt: skip

    return [case("tracked", "It ships today via DHL."), case("deflected", "Sorry, ask the shop.")]


EVALUATORS = [
    {"evaluator": "llm_judge", "options": {"prompt": "The response must name the carrier 'DHL'"}},
    {"evaluator": "attempts_answer", "options": {"method": "llm"}},
]


def test_llm_evaluators_use_the_projects_provider_through_the_outbound_guard(database_url: str, tmp_path: Path) -> None:
    with separate_database(database_url, tmp_path, "eval_judge") as db, openai_stub(_criterion_rule) as (url, asked):
        project = make_project(db, "eval-judge")
        with db.writer() as conn:
            projects.set_project_setting(conn, project.name, "llm", {"base_url": url, "model": "judge-model"})
            checked = [{"evaluator": e["evaluator"], "options": registry.check(e["evaluator"], e["options"])}
                       for e in EVALUATORS]  # fmt: skip
            chosen = evaluations.save_version(conn, project.pk, "judged", _cases(), checked, False, utcnow())
            allowed = evaluations.create_run(conn, project.pk, chosen, 1, utcnow())
        worker = Worker(db, outbound=LOOPBACK)
        while worker.evaluate_runs():
            pass
        with db.reader() as conn:
            run = evaluations.get_run(conn, project.pk, allowed)
            found = evaluations.results(conn, run.pk)
        assert run.status == "completed"
        assert [
            (r.case_name, [(e["evaluator_name"], e["outcome"]) for e in r.result["evaluations"]]) for r in found
        ] == [
            ("tracked", [("llm_judge", "positive"), ("attempts_answer", "positive")]),
            ("deflected", [("llm_judge", "negative"), ("attempts_answer", "negative")]),
        ]
        assert found[1].result["evaluations"][0]["reasoning"]["result"] == [
            {"verdict": False, "reason": "does not mention DHL"}
        ]
        assert {r["body"]["model"] for r in asked} == {"judge-model"} and len(asked) == 4

        # The same provider on a loopback address, with the operator's default guard: refused, nothing sent.
        with db.writer() as conn:
            refused = evaluations.create_run(conn, project.pk, chosen, 1, utcnow())
        strict = Worker(db)
        while strict.evaluate_runs():
            pass
        with db.reader() as conn:
            run = evaluations.get_run(conn, project.pk, refused)
            found = evaluations.results(conn, run.pk)
        assert len(asked) == 4
        assert [e["outcome"] for r in found for e in r.result["evaluations"]] == ["inconclusive"] * 4
        reasons = {e["reasoning"]["result"][0]["reason"] for r in found for e in r.result["evaluations"]}
        assert reasons == {
            "the LLM judge gave no verdict: the address 127.0.0.1 is not public",
            "the LLM gave no verdict: the address 127.0.0.1 is not public",
        }


def test_llm_judge_without_a_provider_or_with_a_failing_one_is_inconclusive() -> None:
    from convolens.config import LlmSettings
    from convolens.enrich.llm import LlmJudge
    from convolens.evaluations.run import ProjectServices

    judge = registry.get("llm_judge")
    options = judge.check_options({"prompt": "Must be polite"})
    attempt = Attempt((Message("user", "hi"),), "hello")
    assert judge.evaluate(attempt, options, ProjectServices(None)).outcome == "inconclusive"
    with openai_stub(lambda _t, _p: None) as (url, _):  # the provider answers 500
        provider = LlmJudge(LlmSettings(base_url=url))
        found = judge.evaluate(attempt, options, ProjectServices(provider))
        provider.close()
    assert found.outcome == "inconclusive"
    assert found.reasons[0].reason.startswith("the LLM judge gave no verdict: Server error '500")
