"""``/p/{project}/evaluations``: test sets with their versions and what changed between them, runs with
progress and pass rates, one run's verdicts and reasons case by case, and two runs side by side (a model
or prompt change: what got better, what got worse). Reading needs the viewer role; adding a transcript's
reply to a test set (``…/evaluations/from-conversation``, a form on the transcript) the member role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError

from convolens.evaluations.coverage import coverage
from convolens.evaluations.from_conversation import NotATurn, case_from_turn
from convolens.schemas.evaluations import Name
from convolens.server.web.render import WebError, date_range, render
from convolens.server.web.session import access, check_csrf, redirect
from convolens.store import conversation_reads as queries
from convolens.store import evaluations
from convolens.timeutil import utcnow

router = APIRouter(include_in_schema=False)


def _run_id(value: str | None, field: str) -> str:
    if not value or len(value) != 32 or not all(c in "0123456789abcdef" for c in value):
        raise WebError(404 if field == "run" else 422, f"{field}: no such evaluation run")
    return value


@router.get("/p/{project}/evaluations")
def overview(request: Request, project: str, start: str | None = None, end: str | None = None) -> Response:
    session, membership = access(request, project)
    window = date_range(start, end, None, default_days=30)
    with request.app.state.db.snapshot() as conn:
        sets = evaluations.list_sets(conn, membership.project_pk)
        runs = evaluations.list_runs(conn, membership.project_pk, limit=50)
        covered = coverage(conn, membership.project_pk, window.first, window.last)
    return render(request, "evaluations.html", title="Evaluations", active="evaluations", session=session,
                  membership=membership, sets=sets, runs=runs, coverage=covered, window=window)  # fmt: skip


@dataclass(frozen=True)
class Change:
    name: str
    kind: str  # added | removed | changed
    what: list[str]


def changes(before: list[evaluations.CaseRow], after: list[evaluations.CaseRow]) -> list[Change]:
    """What changed from one version's cases to the next, case by case (by name)."""
    old = {c.name: c.body for c in before}
    new = {c.name: c.body for c in after}
    found = [Change(name, "added", []) for name in new if name not in old]
    found += [Change(name, "removed", []) for name in old if name not in new]
    for name, body in new.items():
        if name in old and old[name] != body:
            fields = sorted(k for k in set(body) | set(old[name]) if body.get(k) != old[name].get(k))
            found.append(Change(name, "changed", fields))
    return found


@router.get("/p/{project}/evaluations/sets/{name}")
def test_set(request: Request, project: str, name: str, version: int | None = None) -> Response:
    session, membership = access(request, project)
    if len(name) > 128 or not name.isprintable() or (version is not None and not 1 <= version <= 1_000_000):
        raise WebError(404, "no such test set")
    with request.app.state.db.reader() as conn:
        versions = evaluations.versions(conn, membership.project_pk, name)
        if not versions:
            raise WebError(404, "no such test set")
        chosen = next((v for v in versions if v.version == version), None) if version else versions[-1]
        if chosen is None:
            raise WebError(404, "no such version of this test set")
        cases = evaluations.cases(conn, chosen.pk)
        previous = next((v for v in versions if v.version == chosen.version - 1), None)
        diff = changes(evaluations.cases(conn, previous.pk), cases) if previous else None
    return render(request, "evaluation_set.html", title=f"Test set {name}", active="evaluations", session=session,
                  membership=membership, versions=versions, chosen=chosen, cases=cases, previous=previous,
                  diff=diff)  # fmt: skip


def _load_run(request: Request, project_pk: int, run_id: str) -> tuple[evaluations.RunRow, list[Any]]:
    with request.app.state.db.snapshot() as conn:
        run = evaluations.get_run(conn, project_pk, run_id)
        if run is None:
            raise WebError(404, "no such evaluation run")
        return run, evaluations.results(conn, run.pk)


def passed(result: dict[str, Any]) -> bool:
    return evaluations.item_passed(result)


@router.get("/p/{project}/evaluations/runs/{run_id}")
def run_page(request: Request, project: str, run_id: str) -> Response:
    session, membership = access(request, project)
    run, results = _load_run(request, membership.project_pk, _run_id(run_id, "run"))
    ok = sum(passed(r.result) for r in results)
    with request.app.state.db.reader() as conn:
        others = [r for r in evaluations.list_runs(conn, membership.project_pk, limit=50) if r["public_id"] != run_id]
    return render(request, "evaluation_run.html", title="Evaluation run", active="evaluations", session=session,
                  membership=membership, run=run, results=results, passed_count=ok, passed=passed,
                  others=others)  # fmt: skip


@router.post("/p/{project}/evaluations/runs/{run_id}/cancel")
def cancel_run(request: Request, project: str, run_id: str, csrf_token: str = Form("")) -> Response:
    """Stop a pending or running run (a member may, as they may start one through the API)."""
    session, membership = access(request, project, "member")
    check_csrf(session, csrf_token)
    run_id = _run_id(run_id, "run")
    with request.app.state.db.writer() as conn:
        if not evaluations.cancel(conn, membership.project_pk, run_id, utcnow()):
            if evaluations.get_run(conn, membership.project_pk, run_id) is None:
                raise WebError(404, "no such evaluation run")
            raise WebError(409, "run: the run has already finished")
    return redirect(f"/p/{quote(project, safe='')}/evaluations/runs/{run_id}")


@dataclass(frozen=True)
class Pair:
    case: str
    iteration: int
    a: Any | None
    b: Any | None

    @property
    def change(self) -> str:
        """better | worse | same | only in A | only in B."""
        if self.a is None:
            return "only in B"
        if self.b is None:
            return "only in A"
        before, after = passed(self.a.result), passed(self.b.result)
        return "same" if before == after else ("better" if after else "worse")


@router.get("/p/{project}/evaluations/compare")
def compare(request: Request, project: str, a: str | None = None, b: str | None = None) -> Response:
    session, membership = access(request, project)
    run_a, results_a = _load_run(request, membership.project_pk, _run_id(a, "a"))
    run_b, results_b = _load_run(request, membership.project_pk, _run_id(b, "b"))
    keyed_a = {(r.case_name, r.iteration): r for r in results_a}
    keyed_b = {(r.case_name, r.iteration): r for r in results_b}
    order = list(keyed_a) + [k for k in keyed_b if k not in keyed_a]
    pairs = [Pair(name, it, keyed_a.get((name, it)), keyed_b.get((name, it))) for name, it in order]
    counts = {
        kind: sum(p.change == kind for p in pairs) for kind in ("better", "worse", "same", "only in A", "only in B")
    }
    return render(request, "evaluation_compare.html", title="Compare runs", active="evaluations", session=session,
                  membership=membership, run_a=run_a, run_b=run_b, pairs=pairs, counts=counts, passed=passed,
                  passed_a=sum(passed(r.result) for r in results_a),
                  passed_b=sum(passed(r.result) for r in results_b))  # fmt: skip


_SET_NAME = TypeAdapter(Name)


@router.post("/p/{project}/evaluations/from-conversation")
def add_from_conversation(
    request: Request,
    project: str,
    conversation_id: str = Form(..., max_length=1000),
    message: int = Form(..., ge=0, le=1_000_000),
    test_set: str = Form(..., max_length=1000),
    keep: Literal["golden", "avoid"] = Form("golden"),
    csrf_token: str = Form(""),
) -> Response:
    """A transcript's assistant reply as a new test case (a new version of the test set, the prior
    version's cases kept); then to the test set's page."""
    session, membership = access(request, project, "member")
    check_csrf(session, csrf_token)
    try:
        name = _SET_NAME.validate_python(test_set)
    except ValidationError as exc:
        raise WebError(422, f"test_set: {exc.errors()[0]['msg']}") from None
    if "\x00" in conversation_id:  # PostgreSQL cannot even compare it; no stored id holds one
        raise WebError(404, "no such conversation in this project")
    with request.app.state.db.reader() as conn:
        view = queries.get_conversation(conn, membership.project_pk, conversation_id)
    if view is None:
        raise WebError(404, "no such conversation in this project")
    try:
        case = case_from_turn(conversation_id, view.messages, message, keep)
    except NotATurn as exc:
        raise WebError(422, f"message: {exc}") from None
    try:
        with request.app.state.db.writer() as conn:
            evaluations.save_version(conn, membership.project_pk, name, [case], None, True, utcnow())
    except evaluations.Conflict as exc:
        raise WebError(exc.status, f"{exc.field}: {exc.msg}") from None
    return redirect(f"/p/{quote(project, safe='')}/evaluations/sets/{quote(name, safe='')}")
