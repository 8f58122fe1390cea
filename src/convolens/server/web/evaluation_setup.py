"""``/p/{project}/evaluations/setup``: where run responses come from (the app under test: its URL and
Authorization header) and the collection rules that turn thumbs-down replies into test cases. Reading
needs the viewer role; changing either, admin (as the API's ``/api/v1/evaluations/app`` and
``…/collect_rules``). The app's URL passes the outbound guard here as it does in the API."""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError

from convolens.evaluations.app_under_test import SETTING, App
from convolens.outbound import RefusedUrl, redacted, safe_url
from convolens.schemas.evaluations import Name
from convolens.server.path_ids import RowId
from convolens.server.web.render import WebError, render
from convolens.server.web.session import access, check_csrf, redirect
from convolens.store import collect_rules, evaluations, projects, topics
from convolens.timeutil import utcnow

router = APIRouter(include_in_schema=False)

_SET_NAME = TypeAdapter(Name)


def _back(project: str) -> Response:
    return redirect(f"/p/{quote(project, safe='')}/evaluations/setup")


@router.get("/p/{project}/evaluations/setup")
def setup(request: Request, project: str) -> Response:
    session, membership = access(request, project)
    with request.app.state.db.reader() as conn:
        app = App.of(projects.settings_of(conn, membership.project_pk).get(SETTING))
        rules = collect_rules.list_rules(conn, membership.project_pk)
        topic_rows = topics.list_topics(conn, membership.project_pk, ("active", "suggested"))
        sets = evaluations.list_sets(conn, membership.project_pk)
    return render(request, "evaluation_setup.html", title="Evaluation setup", active="evaluations", session=session,
                  membership=membership, app_url=redacted(app.url) if app else None,
                  has_authorization=bool(app and app.authorization), rules=rules, topics=topic_rows,
                  topic_names={t.pk: t.name for t in topic_rows}, sets=sets,
                  max_rules=collect_rules.MAX_RULES_PER_PROJECT)  # fmt: skip


@router.post("/p/{project}/evaluations/setup/app")
def set_app(
    request: Request,
    project: str,
    csrf_token: str = Form(""),
    url: str = Form("", max_length=2000),
    authorization: str = Form("", max_length=2000),
    keep_authorization: str = Form("off"),
    remove: str = Form(""),
) -> Response:
    session, membership = access(request, project, "admin")
    check_csrf(session, csrf_token)
    if remove:
        with request.app.state.db.writer() as conn:
            projects.set_project_setting(conn, membership.project, SETTING, None)
        return _back(project)
    url, authorization = url.strip(), authorization.strip()
    if not url:
        raise WebError(422, "url: the app's URL is required (or remove the app under test)")
    if authorization and not authorization.isprintable():
        raise WebError(422, "authorization: must be printable text")
    try:
        checked = safe_url(url, request.app.state.settings.outbound).url
    except RefusedUrl as exc:
        raise WebError(422, f"url: {exc}") from None
    with request.app.state.db.writer() as conn:
        if not authorization and keep_authorization == "on":  # the stored header is never sent to the page
            before = App.of(projects.settings_of(conn, membership.project_pk).get(SETTING))
            authorization = before.authorization or "" if before else ""
        projects.set_project_setting(
            conn, membership.project, SETTING, {"url": checked, "authorization": authorization or None}
        )
    return _back(project)


@router.post("/p/{project}/evaluations/setup/rules")
def add_rule(
    request: Request,
    project: str,
    csrf_token: str = Form(""),
    test_set: str = Form(..., max_length=1000),
    topic: str = Form(""),
    sample_rate: float = Form(1.0, gt=0, le=1, allow_inf_nan=False),
    keep: Literal["golden", "avoid"] = Form("avoid"),
) -> Response:
    session, membership = access(request, project, "admin")
    check_csrf(session, csrf_token)
    try:
        name = _SET_NAME.validate_python(test_set)
    except ValidationError as exc:
        raise WebError(422, f"test_set: {exc.errors()[0]['msg']}") from None
    with request.app.state.db.writer() as conn:
        topic_pk = topics.in_project(conn, membership.project_pk, topic) if topic else None
        if topic and topic_pk is None:
            raise WebError(422, "topic: no such topic in this project")
        if collect_rules.count(conn, membership.project_pk) >= collect_rules.MAX_RULES_PER_PROJECT:
            raise WebError(409, f"test_set: a project has at most {collect_rules.MAX_RULES_PER_PROJECT} rules")
        collect_rules.create(conn, membership.project_pk, name, topic_pk, sample_rate, keep, utcnow())
    return _back(project)


@router.post("/p/{project}/evaluations/setup/rules/{rule_pk}/remove")
def remove_rule(request: Request, project: str, rule_pk: RowId, csrf_token: str = Form("")) -> Response:
    session, membership = access(request, project, "admin")
    check_csrf(session, csrf_token)
    with request.app.state.db.writer() as conn:
        if not collect_rules.remove(conn, membership.project_pk, rule_pk):
            raise WebError(404, "no such collection rule")
    return _back(project)
