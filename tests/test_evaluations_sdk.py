"""The real ``context-python`` client uploads a test set, uploads a second version that copies the
first's cases, runs it and reads the verdicts, against ``convolens serve`` over TLS (its embedded
worker does the run), on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from getcontext import ContextAPI
from getcontext.generated import models
from getcontext.generated.models import Evaluator, VersionRunParams
from getcontext.token import Credential

from conftest import make_project
from convolens.store.db import Database
from test_context_sdk import tls_server  # noqa: F401  (the module's TLS server fixture)

GOLDEN_AGNOSTIC = {"capitalization": "agnostic", "punctuation": "agnostic", "whitespace": "agnostic"}


def case(name: str, question: str, response: str, golden: str, phrase: str | None = None) -> models.TestCase:
    evaluators = [Evaluator(evaluator="golden_response", options={"golden_response": golden, **GOLDEN_AGNOSTIC})]
    if phrase:
        evaluators.append(
            Evaluator(evaluator="context_contains_phrase", options={"phrase": phrase, "scope": "response"})
        )
    return models.TestCase(
        name=name,
        messages=[models.TestCaseMessage(role="system", message="You are a shop's helper."),
                  models.TestCaseMessage(role="user", message=question)],
        pregenerated_response=response,
        evaluators=evaluators,
    )  # fmt: skip


@pytest.fixture
def context(tls_server: tuple[str, str], db: Database) -> Iterator[tuple[ContextAPI, str, str]]:  # noqa: F811
    base, _ = tls_server
    project = make_project(db, "evals")  # its own project: test sets are per project
    with ContextAPI(credential=Credential(project.token), endpoint=base, connection_verify=False) as client:
        yield client, base, project.token


def _wait_done(client: ContextAPI, run_id: str, seconds: float = 90):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = client.evaluations.result(run_id)
        if found.status in ("completed", "errored"):
            return found
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} not finished: {found.status} {found.progress}")


def test_upload_two_versions_run_and_read_the_verdicts(context: tuple[ContextAPI, str, str]) -> None:
    client, base, token = context
    first = client.log.test_sets(
        body=models.TestSet(
            name="shop-helper",
            test_cases=[
                case("opening hours", "When are you open?", "We are open 9 to 5, Monday to Friday.",
                     "we are open 9 to 5 monday to friday", phrase="Monday"),
                case("refund", "Can I get a refund?", "No.", "Yes, within 30 days.", phrase="30 days"),
                case("shipping", "Do you ship abroad?", "Yes — to the EU.", "Yes, to the EU."),
            ],
        )
    )  # fmt: skip
    assert (first.name, first.version) == ("shop-helper", 1)
    second = client.log.test_sets(
        body=models.TestSet(
            name="shop-helper",
            test_cases=[
                case("refund", "Can I get a refund?", "Yes, within 30 days!", "Yes, within 30 days.", phrase="30 days"),
                case("contact", "How do I reach you?", "Write to help@example.com", "Call us."),
            ],
            evaluators=[Evaluator(evaluator="length", options={"max_chars": 40})],
        ),
        copy_test_cases_from="prior_version",
    )
    assert (second.name, second.version) == ("shop-helper", 2)

    with httpx.Client(base_url=base, verify=False, headers={"Authorization": f"Bearer {token}"}) as http:
        stored = http.get("/api/v1/test_sets/shop-helper").json()
        assert stored["version"] == 2 and [v["version"] for v in stored["versions"]] == [1, 2]
        # The prior version's cases in their order, "refund" replaced in place, "contact" appended.
        assert [c["name"] for c in stored["test_cases"]] == ["opening hours", "refund", "shipping", "contact"]
        assert stored["test_cases"][1]["pregenerated_response"] == "Yes, within 30 days!"
        assert http.get("/api/v1/test_sets/shop-helper", params={"version": 1}).json()["test_case_count"] == 3
        listed = http.get("/api/v1/test_sets").json()
        assert [(s["name"], s["version"], s["test_case_count"]) for s in listed["test_sets"]] == [("shop-helper", 2, 4)]

    started = client.evaluations.run(body=VersionRunParams(test_set_name="shop-helper", version=2, iterations=2))
    run_id = started.data.run_id
    assert started.status == "ok" and run_id
    done = _wait_done(client, run_id)
    assert done.status == "completed"
    assert (done.progress.completed, done.progress.pending) == (8, 0)
    assert done.additional_properties["passed"] == 6  # ours, past the SDK's model: all but "contact", twice
    assert (done.details.test_set_name, done.details.version) == ("shop-helper", 2)
    assert done.started_at is not None
    verdicts = [
        (r.test_case.name, r.iteration, [(e.evaluator_name, e.outcome) for e in r.evaluations]) for r in done.results
    ]
    expected_per_case = {
        # length (the set's) first, then the case's own evaluators
        "opening hours": [("length", "positive"), ("golden_response", "positive"),
                          ("context_contains_phrase", "positive")],
        "refund": [("length", "positive"), ("golden_response", "positive"), ("context_contains_phrase", "positive")],
        "shipping": [("length", "positive"), ("golden_response", "positive")],  # "—" vs ",": punctuation ignored
        "contact": [("length", "positive"), ("golden_response", "negative")],
    }  # fmt: skip
    assert verdicts == [
        (name, iteration, expected) for name, expected in expected_per_case.items() for iteration in (1, 2)
    ]
    refund = next(r for r in done.results if r.test_case.name == "refund")
    assert [(m.role, m.message) for m in refund.test_case.input] == [
        ("system", "You are a shop's helper."),
        ("user", "Can I get a refund?"),
    ]
    assert [(m.role, m.message) for m in refund.test_case.output] == [("assistant", "Yes, within 30 days!")]
    reasons = refund.evaluations[1].reasoning.result
    assert [(r.verdict, r.reason) for r in reasons] == [
        (True, "the response matches the golden response (ignoring capitalization, punctuation, whitespace)")
    ]

    # Version 1 is still there as it was, and runs on its own.
    first_run = client.evaluations.run(body=VersionRunParams(test_set_name="shop-helper", version=1))
    old = _wait_done(client, first_run.data.run_id)
    assert [(r.test_case.name, r.evaluations[0].outcome) for r in old.results] == [
        ("opening hours", "positive"),
        ("refund", "negative"),
        ("shipping", "positive"),
    ]


def test_the_sdk_sees_4xx_for_bad_uploads_and_unknown_runs(context: tuple[ContextAPI, str, str]) -> None:
    client, _, _ = context
    with pytest.raises(HttpResponseError) as unknown:
        client.log.test_sets(
            body=models.TestSet(name="bad", test_cases=[case("a", "q", "r", "g")],
                         evaluators=[Evaluator(evaluator="no_such_evaluator")])
        )  # fmt: skip
    assert unknown.value.status_code == 422
    assert unknown.value.response.json()["errors"][0]["field"] == "evaluators[0].evaluator"
    with pytest.raises(ResourceNotFoundError):
        client.evaluations.run(body=VersionRunParams(test_set_name="never-uploaded", version=1))
    with pytest.raises(ResourceNotFoundError):
        client.evaluations.result("0" * 32)
    with pytest.raises(ResourceNotFoundError):
        client.evaluations.result("not-a-run-id")
