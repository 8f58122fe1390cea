"""Context's evaluations API: ``POST /api/v1/test_sets`` (each upload a new version),
``POST /api/v1/evaluations/run`` and ``GET /api/v1/evaluations/run/{id}``, in the shapes of the
``context-python`` SDK; plus reads of test sets and runs the SDK does not have.

Uploading a test set and starting a run need the ``ingest`` scope (a default token, as Context's one
key did everything); reading needs ``read``; setting the app under test (``/api/v1/evaluations/app``, a
URL the workers will call) needs ``admin``. Runs are done by the workers (worker/evaluating.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.exc import IntegrityError

from convolens.evaluations import registry
from convolens.evaluations.app_under_test import SETTING, App
from convolens.evaluations.base import OptionError
from convolens.evaluations.coverage import coverage
from convolens.outbound import RefusedUrl, redacted, safe_url
from convolens.schemas.bounds import json_problem
from convolens.schemas.evaluations import MAX_JSON_BYTES, MAX_JSON_DEPTH, EvaluatorSpec, Name, RunBody, TestSetBody
from convolens.server.api.context_read import MAX_BUCKETED_DAYS, time_window
from convolens.server.api.deps import database
from convolens.server.auth import AdminToken, IngestToken, ReadToken
from convolens.server.errors import ERROR_RESPONSES, ApiError
from convolens.server.responses import JSONResponse
from convolens.store import collect_rules, evaluations, online_evals, projects, topics
from convolens.store.db import Database
from convolens.store.projects import TokenInfo
from convolens.timeutil import iso, utcnow

router = APIRouter(tags=["evaluations"], responses=ERROR_RESPONSES)


def _field_error(field: str, msg: str, status: int = 422) -> ApiError:
    return ApiError(status, f"{field}: {msg}", [{"field": field, "msg": msg}])


def _checked_evaluators(specs: list[EvaluatorSpec] | None, at: str) -> list[dict[str, Any]] | None:
    """Each evaluator known and its options normalised by it; a 422 naming the evaluator's field."""
    if specs is None:
        return None
    out = []
    for i, spec in enumerate(specs):
        where = f"{at}[{i}]"
        problem = json_problem(spec.options or {}, MAX_JSON_DEPTH, MAX_JSON_BYTES)
        if problem is not None:
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in problem[0])
            raise _field_error(f"{where}.options{path}", problem[1])
        try:
            options = registry.check(spec.evaluator, spec.options)
        except OptionError as exc:
            field = f"{where}.evaluator" if exc.field == "evaluator" else f"{where}.options.{exc.field}"
            raise _field_error(field, exc.msg) from None
        out.append({"evaluator": spec.evaluator, "options": options})
    return out


def _stored_cases(body: TestSetBody) -> list[dict[str, Any]]:
    seen: set[str] = set()
    stored = []
    for i, case in enumerate(body.test_cases):
        at = f"test_cases[{i}]"
        if case.name in seen:
            raise _field_error(f"{at}.name", f"{case.name!r} appears twice in this upload")
        seen.add(case.name)
        for field, value in (("model_config", case.model_config_), ("metadata", case.metadata)):
            problem = json_problem(value or {}, MAX_JSON_DEPTH, MAX_JSON_BYTES)
            if problem is not None:
                raise _field_error(f"{at}.{field}", problem[1])
        stored.append(
            {
                "name": case.name,
                "messages": [m.model_dump() for m in case.messages],
                "model": case.model,
                "model_config": case.model_config_,
                "metadata": case.metadata,
                "pregenerated_response": case.pregenerated_response,
                "evaluators": _checked_evaluators(case.evaluators, f"{at}.evaluators") or [],
            }
        )
    return stored


def _conflict(exc: evaluations.Conflict) -> ApiError:
    return _field_error(exc.field, exc.msg, exc.status)


@router.post("/api/v1/test_sets", status_code=201)
def upload_test_set(
    body: TestSetBody,
    copy_test_cases_from: Literal["none", "prior_version"] | None = None,
    token: TokenInfo = IngestToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """A new version of the test set ``name``. ``copy_test_cases_from=prior_version``: the prior version's
    cases, those with a name in this upload replaced and the others appended (and its evaluators kept
    unless ``evaluators`` is sent); ``none`` (default): only this upload's cases. Answers Context's
    ``TestSetParams`` ``{name, version}`` and the version's ``test_case_count``."""
    copy_prior = copy_test_cases_from == "prior_version"
    if not body.test_cases and not copy_prior:
        raise _field_error("test_cases", "at least one test case is required (or copy_test_cases_from=prior_version)")
    cases = _stored_cases(body)
    evaluators = _checked_evaluators(body.evaluators, "evaluators")
    try:
        with db.writer() as conn:
            saved = evaluations.save_version(conn, token.project_pk, body.name, cases, evaluators, copy_prior, utcnow())
    except evaluations.Conflict as exc:
        raise _conflict(exc) from None
    except IntegrityError:  # PostgreSQL: another upload of this name took the version number first
        raise _field_error("name", "another upload of this test set was saved at the same moment; retry", 409) from None
    return JSONResponse({"name": saved.name, "version": saved.version, "test_case_count": saved.case_count}, 201)


def _set_json(row: evaluations.TestSetRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "version": row.version,
        "test_case_count": row.case_count,
        "evaluators": row.evaluators,
        "created_at": iso(row.created_at),
    }


@router.get("/api/v1/test_sets")
def list_test_sets(token: TokenInfo = ReadToken, db: Database = Depends(database)) -> JSONResponse:  # noqa: B008
    """Each test set's latest version."""
    with db.reader() as conn:
        rows = evaluations.list_sets(conn, token.project_pk)
    return JSONResponse({"count": len(rows), "test_sets": [_set_json(r) for r in rows]})


@router.get("/api/v1/test_sets/{name:path}")
def get_test_set(
    name: str,
    version: int | None = Query(default=None, ge=1, le=1_000_000),
    token: TokenInfo = ReadToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """One version of a test set (default: the latest) with its cases, and the list of its versions."""
    if len(name) > 128 or not name.isprintable():  # no name holds a control character (PostgreSQL: no NUL)
        raise ApiError(404, "no such test set in this project")
    with db.reader() as conn:
        row = (
            evaluations.latest(conn, token.project_pk, name)
            if version is None
            else evaluations.get_version(conn, token.project_pk, name, version)
        )
        if row is None:
            raise ApiError(404, "no such test set (or version) in this project")
        cases = evaluations.cases(conn, row.pk)
        all_versions = evaluations.versions(conn, token.project_pk, name)
    return JSONResponse(
        _set_json(row)
        | {
            "test_cases": [{"name": c.name, **c.body} for c in cases],
            "versions": [{"version": v.version, "test_case_count": v.case_count, "created_at": iso(v.created_at)}
                         for v in all_versions],
        }
    )  # fmt: skip


@router.post("/api/v1/evaluations/run", status_code=202)
def start_run(
    body: RunBody,
    token: TokenInfo = IngestToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """Start a run of a test set version: each case evaluated ``iterations`` times by the workers.
    Answers 202 ``{status: "ok", data: {run_id}}`` as Context did; read it at /api/v1/evaluations/run/{id}."""
    try:
        with db.writer() as conn:
            chosen = evaluations.get_version(conn, token.project_pk, body.test_set_name, body.version)
            if chosen is None:
                raise ApiError(404, "no such test set version in this project")
            run_id = evaluations.create_run(conn, token.project_pk, chosen, body.iterations, utcnow())
    except evaluations.Conflict as exc:
        raise _conflict(exc) from None
    return JSONResponse({"status": "ok", "data": {"run_id": run_id}}, status_code=202)


def _result_json(item: evaluations.ItemResult) -> dict[str, Any]:
    output = [] if item.response is None else [{"role": "assistant", "message": item.response}]
    result = item.result
    return {
        "iteration": item.iteration,
        "test_case": {
            "name": item.case_name,
            "input": [{"role": m.get("role"), "message": m.get("message")} for m in item.messages],
            "output": output,
        },
        "evaluations": result.get("evaluations", []),
        "error": result.get("error"),
        "latency_ms": result.get("latency_ms"),
        "cost": result.get("cost"),
        "model": result.get("model"),
    }


def run_json(run: evaluations.RunRow, results: list[evaluations.ItemResult]) -> dict[str, Any]:
    """Context's ``EvaluationsRunResponse`` (and a few fields of ours: created_at, finished_at, iterations,
    passed)."""
    return {
        "id": run.public_id,
        # Context's statuses have no "cancelled": a cancelled run reads as errored (so a client waiting
        # for the end stops), with ``cancelled: true``.
        "status": "errored" if run.status == "cancelled" else run.status,
        "cancelled": run.status == "cancelled",
        "progress": {"completed": run.completed, "pending": run.total - run.completed},
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "created_at": iso(run.created_at),
        "iterations": run.iterations,
        "details": {"test_set_name": run.test_set.name, "version": run.test_set.version},
        "passed": run.passed,  # items with a response and every evaluation positive, of progress.completed
        "results": [_result_json(r) for r in results],
    }


@router.get("/api/v1/evaluations/run/{run_id}")
def get_run(
    run_id: str,
    page: int = Query(default=1, ge=1, le=1_000_000),
    per_page: int = Query(default=evaluations.MAX_ITEMS_PER_RUN, ge=1, le=evaluations.MAX_ITEMS_PER_RUN),
    token: TokenInfo = ReadToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """A run's status, progress and the verdicts of its finished items (by case, then iteration). The
    SDK reads them all at once (a run has at most 5,000 items); ``page``/``per_page`` cut them."""
    if len(run_id) != 32 or not all(c in "0123456789abcdef" for c in run_id):
        raise ApiError(404, "no such evaluation run in this project")
    with db.snapshot() as conn:
        run = evaluations.get_run(conn, token.project_pk, run_id)
        if run is None:
            raise ApiError(404, "no such evaluation run in this project")
        results = evaluations.results(conn, run.pk, offset=(page - 1) * per_page, limit=per_page)
    return JSONResponse(run_json(run, results))


@router.post("/api/v1/evaluations/run/{run_id}/cancel")
def cancel_run(run_id: str, token: TokenInfo = IngestToken, db: Database = Depends(database)) -> JSONResponse:  # noqa: B008
    """Stop a pending or running run: no further item is started (one a worker is on may still be saved);
    the run reads ``status: errored, cancelled: true``. 409 when it already finished."""
    if len(run_id) != 32 or not all(c in "0123456789abcdef" for c in run_id):
        raise ApiError(404, "no such evaluation run in this project")
    with db.writer() as conn:
        if not evaluations.cancel(conn, token.project_pk, run_id, utcnow()):
            if evaluations.get_run(conn, token.project_pk, run_id) is None:
                raise ApiError(404, "no such evaluation run in this project")
            raise _field_error("run_id", "the run has already finished", 409)
        run = evaluations.get_run(conn, token.project_pk, run_id)
    if run is None:  # deleted in between (the project's own retention): nothing left to show
        raise ApiError(404, "no such evaluation run in this project")
    return JSONResponse(run_json(run, []))


@router.get("/api/v1/evaluations/runs")
def list_runs(token: TokenInfo = ReadToken, db: Database = Depends(database)) -> JSONResponse:  # noqa: B008
    """The project's latest 100 runs, newest first (without their results); ``status`` may be
    ``cancelled`` here. Each project keeps its newest 200 finished runs; older ones are deleted."""
    with db.reader() as conn:
        rows = evaluations.list_runs(conn, token.project_pk)
    runs = [
        {
            "id": r["public_id"],
            "status": r["status"],
            "details": {"test_set_name": r["set_name"], "version": r["set_version"]},
            "iterations": r["iterations"],
            "total": r["total"],
            "created_at": iso(r["created_at"]),
            "started_at": iso(r["started_at"]),
            "finished_at": iso(r["finished_at"]),
        }
        for r in rows
    ]
    return JSONResponse({"count": len(runs), "runs": runs})


class AppBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    # The Authorization header value the app expects (e.g. "Bearer …"), kept with the project's settings.
    authorization: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = None


@router.get("/api/v1/evaluations/app")
def get_app(token: TokenInfo = ReadToken, db: Database = Depends(database)) -> JSONResponse:  # noqa: B008
    """The app under test that runs ask for responses (``url`` without credentials), or ``url: null``."""
    with db.reader() as conn:
        app = App.of(projects.settings_of(conn, token.project_pk).get(SETTING))
    if app is None:
        return JSONResponse({"url": None, "has_authorization": False})
    return JSONResponse({"url": redacted(app.url), "has_authorization": app.authorization is not None})


@router.put("/api/v1/evaluations/app")
def set_app(
    body: AppBody,
    request: Request,
    token: TokenInfo = AdminToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """Set the app under test: test cases without a pre-generated response are sent to it (see
    evaluations/app_under_test.py for the request and the answers it may give). The URL must pass the
    outbound guard, as a project's LLM provider URL does."""
    if body.authorization is not None and not body.authorization.isprintable():
        raise _field_error("authorization", "must be printable text")
    try:
        url = safe_url(body.url, request.app.state.settings.outbound).url
    except RefusedUrl as exc:
        raise _field_error("url", str(exc)) from None
    with db.writer() as conn:
        projects.set_project_setting(
            conn, token.project_name, SETTING, {"url": url, "authorization": body.authorization}
        )
    return JSONResponse({"url": redacted(url), "has_authorization": body.authorization is not None})


@router.delete("/api/v1/evaluations/app", status_code=204)
def remove_app(token: TokenInfo = AdminToken, db: Database = Depends(database)) -> Response:  # noqa: B008
    """No app under test: cases without a pre-generated response go to the LLM provider again."""
    with db.writer() as conn:
        projects.set_project_setting(conn, token.project_name, SETTING, None)
    return Response(status_code=204)


@router.get("/api/v1/evaluations/coverage")
def get_coverage(
    start_time: str | None = None,
    end_time: str | None = None,
    token: TokenInfo = ReadToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """Per topic (defined and suggested, busiest first): its user messages in the window (default: from
    the start of 6 days ago, as the read API), the test cases whose last user message is on it (each
    test set's latest version) and how they did in their sets' latest finished runs; ``uncovered``: the
    busy topics no case covers.
    LLM topics are not matched against test cases (``matchable: false``)."""
    start, end = time_window(start_time, end_time, max_days=MAX_BUCKETED_DAYS)
    with db.snapshot() as conn:
        found = coverage(conn, token.project_pk, start.date(), end.date())
    return JSONResponse(
        {
            "start_time": iso(start),
            "end_time": iso(end),
            "test_cases": found.cases,
            "test_cases_not_yet_matched": found.not_embedded,
            "topics": [t.as_json() for t in found.topics],
            "uncovered": [t.as_json() for t in found.uncovered_busy],
        }
    )


class CollectRuleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    test_set_name: Name
    topic_id: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,18}$")] | None = None
    sample_rate: float = Field(default=1.0, gt=0, le=1, allow_inf_nan=False)
    keep: Literal["golden", "avoid"] = "avoid"


@router.get("/api/v1/evaluations/collect_rules")
def list_collect_rules(token: TokenInfo = ReadToken, db: Database = Depends(database)) -> JSONResponse:  # noqa: B008
    with db.reader() as conn:
        rules = collect_rules.list_rules(conn, token.project_pk)
    return JSONResponse({"count": len(rules), "rules": [r.as_json() for r in rules]})


@router.post("/api/v1/evaluations/collect_rules", status_code=201)
def create_collect_rule(
    body: CollectRuleBody,
    token: TokenInfo = AdminToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """From now on, the project's thumbs-down assistant replies (of ``topic_id``'s conversations, or all),
    sampled at ``sample_rate``, become cases of ``test_set_name`` — kept as what not to say (``avoid``,
    the default) or as good answers (``golden``). The workers add them about ten minutes after the reply."""
    with db.writer() as conn:
        topic_pk = None if body.topic_id is None else topics.in_project(conn, token.project_pk, body.topic_id)
        if body.topic_id is not None and topic_pk is None:
            raise _field_error("topic_id", "no such topic in this project")
        if collect_rules.count(conn, token.project_pk) >= collect_rules.MAX_RULES_PER_PROJECT:
            raise _field_error(
                "test_set_name", f"a project has at most {collect_rules.MAX_RULES_PER_PROJECT} rules", 409
            )
        rule = collect_rules.create(
            conn, token.project_pk, body.test_set_name, topic_pk, body.sample_rate, body.keep, utcnow()
        )
    return JSONResponse(rule.as_json(), status_code=201)


@router.delete("/api/v1/evaluations/collect_rules/{rule_id}", status_code=204)
def delete_collect_rule(rule_id: str, token: TokenInfo = AdminToken, db: Database = Depends(database)) -> Response:  # noqa: B008
    if not rule_id.isdigit() or len(rule_id) > 18:
        raise ApiError(404, "no such collection rule in this project")
    with db.writer() as conn:
        if not collect_rules.remove(conn, token.project_pk, int(rule_id)):
            raise ApiError(404, "no such collection rule in this project")
    return Response(status_code=204)


class OnlineRuleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    evaluator: EvaluatorSpec
    topic_id: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,18}$")] | None = None
    sample_rate: float = Field(default=0.1, gt=0, le=1, allow_inf_nan=False)


@router.get("/api/v1/evaluations/online_rules")
def list_online_rules(token: TokenInfo = ReadToken, db: Database = Depends(database)) -> JSONResponse:  # noqa: B008
    with db.reader() as conn:
        rules = online_evals.list_rules(conn, token.project_pk)
    return JSONResponse({"count": len(rules), "rules": [r.as_json() for r in rules]})


@router.post("/api/v1/evaluations/online_rules", status_code=201)
def create_online_rule(
    body: OnlineRuleBody,
    token: TokenInfo = AdminToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """From now on, an evaluator judges a sample (``sample_rate``, default 10%) of the project's assistant
    replies (of ``topic_id``'s conversations, or all), about a minute after each arrives; read the outcomes
    by day, model or topic at ``…/online_rules/{id}/scores``. Offline evaluators judge every sampled reply;
    those that call the LLM provider (``llm_judge``, ``attempts_answer`` with ``method: llm``) judge at
    most the project's daily allowance (``…/online_budget``), the rest counted as over budget."""
    spec = body.evaluator
    problem = json_problem(spec.options or {}, MAX_JSON_DEPTH, MAX_JSON_BYTES)
    if problem is not None:
        raise _field_error("evaluator.options", problem[1])
    try:
        options = registry.check(spec.evaluator, spec.options)
    except OptionError as exc:
        field = "evaluator.evaluator" if exc.field == "evaluator" else f"evaluator.options.{exc.field}"
        raise _field_error(field, exc.msg) from None
    checked = {"evaluator": spec.evaluator, "options": options}
    with db.writer() as conn:
        topic_pk = None if body.topic_id is None else topics.in_project(conn, token.project_pk, body.topic_id)
        if body.topic_id is not None and topic_pk is None:
            raise _field_error("topic_id", "no such topic in this project")
        if online_evals.count(conn, token.project_pk) >= online_evals.MAX_RULES_PER_PROJECT:
            raise _field_error("evaluator", f"a project has at most {online_evals.MAX_RULES_PER_PROJECT} rules", 409)
        rule = online_evals.create(conn, token.project_pk, checked, topic_pk, body.sample_rate, utcnow())
    return JSONResponse(rule.as_json(), status_code=201)


def _online_rule(conn, project_pk: int, rule_id: str) -> online_evals.Rule:  # type: ignore[no-untyped-def]
    rule = online_evals.get(conn, project_pk, int(rule_id)) if rule_id.isdigit() and len(rule_id) <= 18 else None
    if rule is None:
        raise ApiError(404, "no such online evaluation rule in this project")
    return rule


@router.get("/api/v1/evaluations/online_rules/{rule_id}/scores")
def online_scores(
    rule_id: str,
    group_by: Literal["day", "model", "topic"] = "day",
    start_time: str | None = None,
    end_time: str | None = None,
    token: TokenInfo = ReadToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """The rule's outcomes in the window (default: from the start of 6 days ago) by ``group_by``."""
    start, end = time_window(start_time, end_time, max_days=MAX_BUCKETED_DAYS)
    with db.reader() as conn:
        rule = _online_rule(conn, token.project_pk, rule_id)
        found = online_evals.scores(conn, rule, group_by, start, end)
    return JSONResponse({"rule": rule.as_json(), "group_by": group_by, "start_time": iso(start),
                         "end_time": iso(end), "scores": found})  # fmt: skip


@router.delete("/api/v1/evaluations/online_rules/{rule_id}", status_code=204)
def delete_online_rule(rule_id: str, token: TokenInfo = AdminToken, db: Database = Depends(database)) -> Response:  # noqa: B008
    with db.writer() as conn:
        rule = _online_rule(conn, token.project_pk, rule_id)
        online_evals.remove(conn, token.project_pk, rule.pk)
    return Response(status_code=204)


class OnlineBudgetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    llm_daily_cap: int = Field(ge=0, le=online_evals.MAX_LLM_DAILY_CAP)


def _budget_json(conn, project_pk: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    today = utcnow().date().isoformat()
    cap = online_evals.llm_daily_cap(projects.settings_of(conn, project_pk))
    return {"llm_daily_cap": cap, "day": today, "llm_used_today": online_evals.llm_used(conn, project_pk, today)}


@router.get("/api/v1/evaluations/online_budget")
def get_online_budget(token: TokenInfo = ReadToken, db: Database = Depends(database)) -> JSONResponse:  # noqa: B008
    """How many replies the project's online LLM evaluators may judge per UTC day, and how many today."""
    with db.reader() as conn:
        return JSONResponse(_budget_json(conn, token.project_pk))


@router.put("/api/v1/evaluations/online_budget")
def set_online_budget(
    body: OnlineBudgetBody,
    token: TokenInfo = AdminToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """Set the daily allowance (0: online LLM evaluators judge nothing; offline ones are not limited)."""
    with db.writer() as conn:
        projects.set_project_setting(conn, token.project_name, online_evals.SETTING,
                                     {"llm_daily_cap": body.llm_daily_cap})  # fmt: skip
        return JSONResponse(_budget_json(conn, token.project_pk))
