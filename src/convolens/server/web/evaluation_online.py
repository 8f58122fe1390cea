"""``/p/{project}/evaluations/online``: the online evaluation rules, a rule's pass rate by day (a chart,
one line per model) and by topic and model (tables) from the rollup, and the daily allowance of the LLM
evaluators. Reading needs the viewer role; adding or removing a rule and setting the allowance, admin
(as the API's ``/api/v1/evaluations/online_rules``)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from convolens.evaluations import registry
from convolens.evaluations.base import OptionError
from convolens.schemas.bounds import json_problem
from convolens.schemas.evaluations import MAX_JSON_BYTES, MAX_JSON_DEPTH
from convolens.server.path_ids import RowId
from convolens.server.web.render import DateRange, WebError, date_range, render
from convolens.server.web.session import access, check_csrf, redirect
from convolens.store import online_evals, projects, topics
from convolens.timeutil import utcnow

router = APIRouter(include_in_schema=False)

CHARTED_MODELS = 5  # the busiest models get their own line; the rest are in "all models"
ALL = "\x00all"  # no model name holds a NUL (stored text on PostgreSQL cannot)


def _page(project: str, rule_pk: int | None = None) -> str:
    base = f"/p/{quote(project, safe='')}/evaluations/online"
    return base if rule_pk is None else f"{base}?rule={rule_pk}"


def pass_rate_chart(rows: list[tuple[str, str, int, int]], window: DateRange) -> dict[str, Any]:
    """The pass rate (%) per day of the window: all models, and the busiest models one line each."""
    days = [(window.first + timedelta(days=i)).isoformat() for i in range((window.last - window.first).days + 1)]
    totals: dict[str, dict[str, list[int]]] = {}
    volume: dict[str, int] = {}
    for day, model, evaluated, passed in rows:
        name = model or "(no model)"
        for key in (ALL, name):
            counts = totals.setdefault(key, {}).setdefault(day, [0, 0])
            counts[0] += evaluated
            counts[1] += passed
        volume[name] = volume.get(name, 0) + evaluated
    busiest = sorted(volume, key=lambda m: (-volume[m], m))[:CHARTED_MODELS]

    def rates(key: str) -> list[float | None]:
        by_day = totals.get(key, {})
        return [round(100 * by_day[d][1] / by_day[d][0], 1) if by_day.get(d, [0])[0] else None for d in days]

    series = [{"label": "All models", "color": "#111827", "values": rates(ALL)}]
    series += [{"label": m, "values": rates(m)} for m in busiest if len(volume) > 1]
    return {"labels": days, "kind": "line", "range": [0, 100], "series": series}


@router.get("/p/{project}/evaluations/online")
def online(
    request: Request, project: str, rule: str | None = None, start: str | None = None, end: str | None = None
) -> Response:
    session, membership = access(request, project)
    window = date_range(start, end, None, default_days=14)
    today = utcnow().date().isoformat()
    with request.app.state.db.snapshot() as conn:
        rules = online_evals.list_rules(conn, membership.project_pk)
        chosen = next((r for r in rules if str(r.pk) == rule), None) if rule else (rules[0] if rules else None)
        if rule and chosen is None:
            raise WebError(404, "no such online evaluation rule")
        topic_rows = topics.list_topics(conn, membership.project_pk, ("active", "suggested"))
        cap = online_evals.llm_daily_cap(projects.settings_of(conn, membership.project_pk))
        used = online_evals.llm_used(conn, membership.project_pk, today)
        scores: dict[str, Any] = {}
        chart = None
        if chosen is not None:
            for by in ("day", "topic", "model"):
                scores[by] = online_evals.scores(conn, chosen, by, window.start, window.end)  # type: ignore[arg-type]
            daily = online_evals.daily_by_model(conn, chosen, window.first.isoformat(), window.last.isoformat())
            chart = pass_rate_chart(daily, window)
    topic_names = {t.pk: t.name for t in topic_rows}
    total = {
        k: sum(s[k] for s in scores.get("day", [])) for k in ("evaluated", "passed", "inconclusive", "over_budget")
    }
    return render(request, "evaluation_online.html", title="Online evaluation", active="evaluations",
                  session=session, membership=membership, rules=rules, chosen=chosen, window=window,
                  scores=scores, chart=chart, total=total, topics=topic_rows, topic_names=topic_names,
                  cap=cap, used=used, evaluators=registry.names(), calls_llm=registry.calls_llm,
                  max_rules=online_evals.MAX_RULES_PER_PROJECT)  # fmt: skip


def _options(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:
        raise WebError(422, 'options: not valid JSON (e.g. {"prompt": "…"})') from None
    if not isinstance(parsed, dict):
        raise WebError(422, "options: a JSON object is expected")
    problem = json_problem(parsed, MAX_JSON_DEPTH, MAX_JSON_BYTES)
    if problem is not None:
        raise WebError(422, f"options: {problem[1]}")
    return parsed


@router.post("/p/{project}/evaluations/online/rules")
def add_rule(
    request: Request,
    project: str,
    csrf_token: str = Form(""),
    evaluator: str = Form(..., max_length=64),
    options: str = Form("", max_length=MAX_JSON_BYTES),
    topic: str = Form(""),
    sample_rate: float = Form(0.1, gt=0, le=1, allow_inf_nan=False),
) -> Response:
    session, membership = access(request, project, "admin")
    check_csrf(session, csrf_token)
    try:
        checked = registry.check(evaluator, _options(options))
    except OptionError as exc:
        raise WebError(
            422, f"{'evaluator' if exc.field == 'evaluator' else 'options.' + exc.field}: {exc.msg}"
        ) from None
    with request.app.state.db.writer() as conn:
        topic_pk = topics.in_project(conn, membership.project_pk, topic) if topic else None
        if topic and topic_pk is None:
            raise WebError(422, "topic: no such topic in this project")
        if online_evals.count(conn, membership.project_pk) >= online_evals.MAX_RULES_PER_PROJECT:
            raise WebError(409, f"evaluator: a project has at most {online_evals.MAX_RULES_PER_PROJECT} rules")
        made = online_evals.create(
            conn, membership.project_pk, {"evaluator": evaluator, "options": checked}, topic_pk, sample_rate, utcnow()
        )
    return redirect(_page(project, made.pk))


@router.post("/p/{project}/evaluations/online/rules/{rule_pk}/remove")
def remove_rule(request: Request, project: str, rule_pk: RowId, csrf_token: str = Form("")) -> Response:
    session, membership = access(request, project, "admin")
    check_csrf(session, csrf_token)
    with request.app.state.db.writer() as conn:
        if not online_evals.remove(conn, membership.project_pk, rule_pk):
            raise WebError(404, "no such online evaluation rule")
    return redirect(_page(project))


@router.post("/p/{project}/evaluations/online/budget")
def set_budget(
    request: Request,
    project: str,
    csrf_token: str = Form(""),
    llm_daily_cap: int = Form(..., ge=0, le=online_evals.MAX_LLM_DAILY_CAP),
) -> Response:
    session, membership = access(request, project, "admin")
    check_csrf(session, csrf_token)
    with request.app.state.db.writer() as conn:
        projects.set_project_setting(conn, membership.project, online_evals.SETTING, {"llm_daily_cap": llm_daily_cap})
    return redirect(_page(project))
