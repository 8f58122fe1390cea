"""The evaluations API refuses what is out of bounds with a 4xx naming the field, keeps projects apart
and checks scopes (on both backends)."""

from __future__ import annotations

import httpx
import pytest

from conftest import Project, RunningServer, make_project
from convolens.store.db import Database


def a_case(name: str = "c", **extra) -> dict:
    return {"name": name, "messages": [{"role": "user", "message": "hi"}], "pregenerated_response": "hello"} | extra


def upload(api: httpx.Client, body: dict, **params) -> httpx.Response:
    return api.post("/api/v1/test_sets", json=body, params=params)


def field_of(response: httpx.Response) -> str:
    assert 400 <= response.status_code < 500, response.text
    return response.json()["errors"][0]["field"]


def one(case: dict | None = None, **extra) -> dict:
    """A test set of one case (``case``, else a plain one) with ``extra`` top-level fields."""
    return {"name": "s", "test_cases": [case or a_case()]} | extra


DEEP = {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}  # 9 levels: one past the bound
OUT_OF_BOUNDS = [
    ({"name": "s", "test_cases": [a_case(str(i)) for i in range(1001)]}, {}, "test_cases"),
    ({"name": "s", "test_cases": []}, {}, "test_cases"),
    ({"name": "x" * 129, "test_cases": [a_case()]}, {}, "name"),
    ({"name": "s", "test_cases": [a_case("a"), a_case("a")]}, {}, "test_cases[1].name"),
    (one(a_case(messages=[])), {}, "test_cases[0].messages"),
    (one(a_case(messages=[{"role": "tool", "message": "x"}])), {}, "test_cases[0].messages[0].role"),
    (one(a_case(messages=[{"role": "user", "message": "x" * 20_001}])), {}, "test_cases[0].messages[0].message"),
    (one(a_case(pregenerated_response="a\x00b")), {}, "test_cases[0].pregenerated_response"),
    (one(a_case(metadata=DEEP)), {}, "test_cases[0].metadata"),
    (one(a_case(evaluators=[{"evaluator": "golden_response"}])), {},
     "test_cases[0].evaluators[0].options.golden_response"),
    (one(evaluators=[{"evaluator": "regex", "options": {"pattern": "(a)\\1"}}]), {}, "evaluators[0].options.pattern"),
    (one(evaluators=[{"evaluator": "golden_response"}] * 21), {}, "evaluators"),
    (one(evaluators=[{"evaluator": "length", "options": {"x": [[[[[[[[[1]]]]]]]]]}}]), {},
     "evaluators[0].options.x[0][0][0][0][0][0][0]"),
    (one(), {"copy_test_cases_from": "everything"}, "query.copy_test_cases_from"),
    (one(unknown=1), {}, "unknown"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "params", "field"), OUT_OF_BOUNDS)
def test_uploads_out_of_bounds_get_a_4xx_naming_the_field(
    api: httpx.Client, body: dict, params: dict, field: str
) -> None:
    found = upload(api, body, **params)
    assert found.status_code == 422, found.text
    assert field_of(found) == field


def test_a_version_past_the_case_bound_after_copying_is_refused(api: httpx.Client) -> None:
    assert upload(api, {"name": "big", "test_cases": [a_case(str(i)) for i in range(1000)]}).status_code == 201
    more = upload(api, {"name": "big", "test_cases": [a_case("one more")]}, copy_test_cases_from="prior_version")
    assert more.status_code == 422 and field_of(more) == "test_cases"
    # Replacing a case by name keeps the count: allowed.
    same = upload(api, {"name": "big", "test_cases": [a_case("7", pregenerated_response="new")]},
                  copy_test_cases_from="prior_version")  # fmt: skip
    assert same.status_code == 201 and same.json() == {"name": "big", "version": 2, "test_case_count": 1000}


def test_runs_are_bounded(api: httpx.Client) -> None:
    assert upload(api, {"name": "r", "test_cases": [a_case(str(i)) for i in range(300)]}).status_code == 201
    too_many = api.post("/api/v1/evaluations/run", json={"test_set_name": "r", "version": 1, "iterations": 21})
    assert too_many.status_code == 422 and field_of(too_many) == "iterations"
    items = api.post("/api/v1/evaluations/run", json={"test_set_name": "r", "version": 1, "iterations": 20})
    assert items.status_code == 422 and field_of(items) == "iterations"  # 300 x 20 > 5,000 items
    missing = api.post("/api/v1/evaluations/run", json={"test_set_name": "r", "version": 2})
    assert missing.status_code == 404
    no_version = api.post("/api/v1/evaluations/run", json={"test_set_name": "r"})
    assert no_version.status_code == 422 and field_of(no_version) == "version"
    assert api.get("/api/v1/test_sets/a%00b").status_code == 404  # PostgreSQL cannot compare a NUL
    assert api.get("/api/v1/test_sets/" + "x" * 129).status_code == 404
    page = api.get("/api/v1/evaluations/run/" + "a" * 32, params={"per_page": 0})
    assert page.status_code == 422 and field_of(page) == "query.per_page"


def test_scopes_and_projects(server: RunningServer, project: Project, db: Database) -> None:
    body = {"name": "mine", "test_cases": [a_case()]}
    with server.client(project.read_token) as reader:
        assert upload(reader, body).status_code == 403
    with server.client(project.ingest_token) as writer:
        assert upload(writer, body).status_code == 201
        run = writer.post("/api/v1/evaluations/run", json={"test_set_name": "mine", "version": 1})
        assert run.status_code == 202
        assert writer.get("/api/v1/test_sets").status_code == 403  # reading needs the read scope
    run_id = run.json()["data"]["run_id"]
    with server.client(project.read_token) as reader:
        assert reader.get(f"/api/v1/evaluations/run/{run_id}").status_code == 200
        assert [s["name"] for s in reader.get("/api/v1/test_sets").json()["test_sets"]] == ["mine"]
    other = make_project(db, "other")
    with server.client(other.token) as stranger:
        assert stranger.get(f"/api/v1/evaluations/run/{run_id}").status_code == 404
        assert stranger.get("/api/v1/test_sets/mine").status_code == 404
        assert stranger.get("/api/v1/test_sets").json() == {"count": 0, "test_sets": []}
        assert stranger.post("/api/v1/evaluations/run", json={"test_set_name": "mine", "version": 1}).status_code == 404
    with server.client() as anonymous:
        assert upload(anonymous, body).status_code == 401
