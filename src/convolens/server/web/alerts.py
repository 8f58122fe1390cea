"""``/p/{project}/alerts``: the project's alert rules with their state, one rule's chart and history, the
form that creates or changes a rule with a preview of when it would have fired, mute, and each member's
weekly-digest opt-in, and the digests sent. Viewers read; members and admins create, change, mute and
delete rules (the issue's "members create and edit, viewers read"; the API keeps its ``admin`` token scope
for writes: a token is a machine's, a member is a person on the team). Each page's data is built in one
function here (``_list_page``, ``_rule_page``, ``_form_page``)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from pydantic import ValidationError

from convolens.alerts import emails, words
from convolens.schemas.alerts import METRICS, AlertRuleBody
from convolens.server import alert_rules
from convolens.server.alert_rules import RuleProblem
from convolens.server.path_ids import RowId
from convolens.server.web.render import SECURITY_HEADERS, WebError, render
from convolens.server.web.session import access, check_csrf, redirect
from convolens.store import accounts, alerts, digests, evaluations, online_evals, topics
from convolens.store.accounts import Membership, Session
from convolens.timeutil import iso, utcnow

router = APIRouter(include_in_schema=False)

MUTE_CHOICES = {"1h": timedelta(hours=1), "1d": timedelta(days=1), "1w": timedelta(days=7), "30d": timedelta(days=30)}
EDIT_ROLE = "member"  # the least role that creates, changes, mutes and deletes rules
MAX_FORM_FIELD = 4000  # a form value longer than any valid one is refused before it is parsed


def _base(project: str) -> str:
    return f"/p/{quote(project, safe='')}/alerts"


def _topic_names(request: Request, project_pk: int) -> dict[int, str]:
    with request.app.state.db.reader() as conn:
        return {t.pk: t.name for t in topics.list_topics(conn, project_pk, ("active", "suggested"))}


STATE_WORDS = {"ok": "OK", "firing": "Firing", "muted": "Muted", "off": "Off", "new": "Not checked yet"}


def state_of(rule: alerts.Rule, now: Any) -> str:
    """What the pages show: off (disabled), muted, new (no window decided yet), firing or ok."""
    if not rule.enabled:
        return "off"
    if rule.muted(now):
        return "muted"
    if rule.evaluated_through is None:
        return "new"
    return "firing" if rule.firing else "ok"


# -- the list ----------------------------------------------------------------------------------------------


def _list_page(request: Request, session: Session, membership: Membership, status: int = 200) -> Response:
    now = utcnow()
    with request.app.state.db.reader() as conn:
        rules = alerts.list_rules(conn, membership.project_pk)
        digest_on = accounts.digest_opted_in(conn, session.account_pk, membership.project_pk)
    names = _topic_names(request, membership.project_pk)
    rows = [
        {
            "rule": r,
            "state": state_of(r, now),
            "metric": words.METRIC_LABELS.get(r.definition["metric"], r.definition["metric"]),
            "where": words.filter_text(r.definition, names),
            "condition": words.condition_text(r.definition),
            "channels": r.channels(),
            "evaluated": _window_end(r),
        }
        for r in rules
    ]
    return render(
        request, "alerts.html", status=status, title="Alerts", active="alerts", session=session,
        membership=membership, rows=rows, can_edit=membership.can(EDIT_ROLE), digest_on=digest_on,
        state_words=STATE_WORDS, smtp_ready=request.app.state.settings.smtp.enabled,
    )  # fmt: skip


def _window_end(rule: alerts.Rule) -> Any:
    """The end of the last window decided (what "last evaluated" means to a reader)."""
    if rule.evaluated_through is None:
        return None
    return rule.evaluated_through + (timedelta(hours=1) if rule.definition["window"] == "hour" else timedelta(days=1))


@router.get("/p/{project}/alerts")
def alert_list(request: Request, project: str) -> Response:
    session, membership = access(request, project)
    return _list_page(request, session, membership)


@router.post("/p/{project}/alerts/digest")
async def digest_opt_in(request: Request, project: str) -> Response:
    """Each member (any role) opts in or out of the weekly digest for themselves."""
    session, membership, form = await _posted(request, project, "viewer")
    with request.app.state.db.writer() as conn:
        accounts.set_digest(conn, session.account_pk, membership.project_pk, form.get("digest") == "on")
    return redirect(_base(project))


# -- past digests -----------------------------------------------------------------------------------------

# The rendered e-mail is the e-mail's own HTML (its template, autoescaped), which styles itself inline as
# e-mail must: its page allows inline styles and nothing else (no script, no image, no form, no framing).
EMAIL_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; frame-ancestors 'none'; "
    "base-uri 'none'"
)


def _shown_recipient(channel: str, recipient: str) -> str:
    """An address as is; a webhook by its host only (a chat webhook's URL is its secret)."""
    return recipient if channel == "email" else f"webhook at {urlsplit(recipient).hostname or '?'}"


@router.get("/p/{project}/alerts/digests")
def digest_list(request: Request, project: str) -> Response:
    """The project's past weekly digests: what was sent, when, to whom, and how each delivery went."""
    session, membership = access(request, project)
    with request.app.state.db.reader() as conn:
        weeks = digests.history(conn, membership.project_pk)
    for w in weeks:
        w["day"] = f"{w['week_start']:%Y-%m-%d}"
        for d in w["deliveries"]:
            d["shown"] = _shown_recipient(d["channel"], d["recipient"])
    return render(
        request, "alert_digests.html", title="Past digests", active="alerts", session=session,
        membership=membership, weeks=weeks, smtp_ready=request.app.state.settings.smtp.enabled,
    )  # fmt: skip


@router.get("/p/{project}/alerts/digests/{day}")
def digest_email_page(request: Request, project: str, day: str) -> Response:
    """The digest of the week starting ``day`` (YYYY-MM-DD) as its e-mail was rendered (HTML), or with
    ``?format=text`` its plain-text part."""
    _, membership = access(request, project)
    try:
        week = datetime.strptime(day, "%Y-%m-%d") if len(day) == 10 else None
    except ValueError:
        week = None
    if week is None:
        raise WebError(404, "no digest for that week")
    with request.app.state.db.reader() as conn:
        content = digests.content_of(conn, membership.project_pk, week)
    if content is None:
        raise WebError(404, "no digest for that week")
    _, text, html = emails.digest_email(content, request.app.state.settings.public_url)
    headers = SECURITY_HEADERS | {"Content-Security-Policy": EMAIL_POLICY}
    if request.query_params.get("format") == "text":
        return PlainTextResponse(text, headers=headers)
    return HTMLResponse(html, headers=headers)


# -- one rule ----------------------------------------------------------------------------------------------


def _rule_page(
    request: Request, session: Session, membership: Membership, rule_pk: int, status: int = 200, **shown: Any
) -> Response:
    now = utcnow()
    with request.app.state.db.reader() as conn:
        rule = alerts.get(conn, membership.project_pk, rule_pk)
        if rule is None:
            raise WebError(404, "no such alert rule in this project")
        events = alerts.history(conn, membership.project_pk, rule.pk, limit=100)
        length = timedelta(hours=1) if rule.definition["window"] == "hour" else timedelta(days=1)
        seen = alerts.recent_values(conn, membership.project_pk, rule.pk, now - length * 30)
    names = _topic_names(request, membership.project_pk)
    metric = rule.definition["metric"]
    chart = _chart(metric, rule.definition, [(iso(r["window_start"]), r["value"], r["event"]) for r in seen])
    return render(
        request, "alert.html", status=status, title=rule.name, active="alerts", session=session,
        membership=membership, rule=rule, state=state_of(rule, now), state_words=STATE_WORDS,
        describe=words.describe(rule.definition, names),
        events=[e | {"value_text": words.value_text(metric, e["value"])} for e in events], chart=chart,
        evaluated=_window_end(rule), can_edit=membership.can(EDIT_ROLE), mute_choices=MUTE_CHOICES, **shown,
    )  # fmt: skip


def _chart(metric: str, definition: dict, points: list[tuple[str | None, float | None, str | None]]) -> dict:
    """The rule's values window by window (``points``: window start in ISO 8601, value, event), its
    threshold (a threshold condition), and a mark on each window that fired: the data of the page's
    chart (static/app.js)."""
    scale = 100.0 if metric in words.SHARES else 1.0
    hourly = definition["window"] == "hour"
    labels = [(start or "")[: 19 if hourly else 10] for start, _, _ in points]
    values = [None if v is None else round(v * scale, 4) for _, v, _ in points]
    series = [{"label": words.METRIC_LABELS.get(metric, metric) + (" (%)" if scale != 1 else ""), "values": values}]
    condition = definition["condition"]
    if condition["kind"] == "threshold":
        line = round(float(condition["threshold"]) * scale, 4)
        series.append({"label": "Threshold", "values": [line] * len(points), "color": "#9ca3af"})
    fired = [v if event == "fired" else None for (_, _, event), v in zip(points, values, strict=True)]
    series.append({"label": "Fired", "values": fired, "color": "#dc2626", "points": True})
    return {"labels": labels, "series": series}


# Before the rule's own page: "new" is not a rule number.
@router.get("/p/{project}/alerts/new")
def new_alert(request: Request, project: str) -> Response:
    session, membership = access(request, project, EDIT_ROLE)
    return _form_page(request, session, membership, values_of(None), None)


@router.post("/p/{project}/alerts/new")
async def create_alert(request: Request, project: str) -> Response:
    return await _submitted(request, project, None)


@router.get("/p/{project}/alerts/{rule_pk}")
def alert_page(request: Request, project: str, rule_pk: RowId) -> Response:
    session, membership = access(request, project)
    return _rule_page(request, session, membership, rule_pk)


@router.post("/p/{project}/alerts/{rule_pk}/mute")
async def mute(request: Request, project: str, rule_pk: RowId) -> Response:
    _, membership, form = await _posted(request, project)
    choice = form.get("for", "")
    if choice != "unmute" and choice not in MUTE_CHOICES:
        raise WebError(422, f"for: must be one of {', '.join(MUTE_CHOICES)} or unmute")
    until = None if choice == "unmute" else utcnow() + MUTE_CHOICES[choice]
    with request.app.state.db.writer() as conn:
        if not alerts.set_mute(conn, membership.project_pk, rule_pk, until):
            raise WebError(404, "no such alert rule in this project")
    return redirect(f"{_base(project)}/{rule_pk}")


@router.post("/p/{project}/alerts/{rule_pk}/secret")
async def rotate_secret(request: Request, project: str, rule_pk: RowId) -> Response:
    """A new webhook signing secret, shown once on the page this answers with."""
    session, membership, _ = await _posted(request, project)
    with request.app.state.db.writer() as conn:
        secret = alerts.new_secret(conn, membership.project_pk, rule_pk)
    if secret is None:
        raise WebError(404, "no such alert rule in this project")
    return _rule_page(request, session, membership, rule_pk, new_secret=secret)


@router.post("/p/{project}/alerts/{rule_pk}/delete")
async def delete(request: Request, project: str, rule_pk: RowId) -> Response:
    _, membership, _ = await _posted(request, project)
    with request.app.state.db.writer() as conn:
        if not alerts.remove(conn, membership.project_pk, rule_pk):
            raise WebError(404, "no such alert rule in this project")
    return redirect(_base(project))


# -- the form ----------------------------------------------------------------------------------------------

FORM_FIELDS = (
    "name", "metric", "topic_id", "language", "model", "tenant_id", "kind", "op", "threshold", "against",
    "periods", "min_volume", "window", "cooldown_hours", "webhook_url", "webhook_format", "email_to", "enabled",
    "metadata_key", "metadata_value", "test_set", "online_eval_id",
)  # fmt: skip
FILTER_FIELDS = ("topic_id", "language", "model", "tenant_id", "metadata_key", "metadata_value", "test_set",
                 "online_eval_id")  # fmt: skip
FIELD_OF_LOCATION = {
    "filter.topic_id": "topic_id", "filter.language": "language", "filter.model": "model",
    "filter.tenant_id": "tenant_id", "condition.threshold": "threshold", "condition.periods": "periods",
    "condition.min_volume": "min_volume", "condition.kind": "kind", "condition.op": "op",
    "condition.against": "against", "cooldown_minutes": "cooldown_hours", "channel.url": "webhook_url",
    "channel.format": "webhook_format", "email.to": "email_to", "filter.metadata_key": "metadata_key",
    "filter.metadata_value": "metadata_value", "filter.test_set": "test_set", "filter.online_eval_id": "online_eval_id",
}  # fmt: skip


async def _posted(request: Request, project: str, role: str = EDIT_ROLE) -> tuple[Session, Membership, dict[str, str]]:
    """A form post's session, membership (at least ``role``) and fields, its CSRF token checked."""
    session, membership = access(request, project, role)
    form = await _form(request)
    check_csrf(session, form.get("csrf_token", ""))
    return session, membership, form


async def _form(request: Request) -> dict[str, str]:
    """The posted form's fields, each one string (the last if repeated), refused when one is longer
    than any valid value could be."""
    found: dict[str, str] = {}
    for key, value in (await request.form()).multi_items():
        if not isinstance(value, str):
            raise WebError(422, f"{key}: must be text")
        if len(value) > MAX_FORM_FIELD:
            raise WebError(422, f"{key}: at most {MAX_FORM_FIELD} characters")
        found[key] = value
    return found


def values_of(rule: alerts.Rule | None) -> dict[str, str]:
    """The form's fields for a rule (its current definition), or a new rule's defaults."""
    if rule is None:
        return {"metric": "negative_share", "kind": "threshold", "op": "above", "threshold": "20",
                "against": "previous", "periods": "14", "min_volume": "20", "window": "day", "cooldown_hours": "24",
                "webhook_format": "json", "enabled": "on"}  # fmt: skip
    d = rule.definition
    c, f = d["condition"], d.get("filter") or {}
    threshold = float(c["threshold"]) * (100 if d["metric"] in words.SHARES and c["kind"] == "threshold" else 1)
    return {
        "name": rule.name, "metric": d["metric"], **{k: f.get(k) or "" for k in FILTER_FIELDS},
        "kind": c["kind"], "op": c["op"], "threshold": f"{threshold:g}", "against": c.get("against", "previous"),
        "periods": str(c.get("periods", 14)), "min_volume": str(c.get("min_volume", 0)), "window": d["window"],
        "cooldown_hours": f"{int(d.get('cooldown_minutes', 0)) / 60:g}",
        "webhook_url": (d.get("channel") or {}).get("url", ""),
        "webhook_format": (d.get("channel") or {}).get("format", "json"),
        "email_to": "\n".join((d.get("email") or {}).get("to", [])), "enabled": "on" if rule.enabled else "",
    }  # fmt: skip


def body_of(values: dict[str, str]) -> AlertRuleBody:
    """The form's fields as a checked rule; RuleProblem naming the form field otherwise. A share's
    threshold is typed as a percentage (20 for 20%) and stored as a fraction, as the API takes it."""

    def number(field: str, text: str) -> float:
        try:
            found = float(text.strip())
        except ValueError:
            raise RuleProblem(422, field, "must be a number") from None
        if not math.isfinite(found) or abs(found) > 1e12:  # "1e999", "nan": not a number a rule can use
            raise RuleProblem(422, field, "must be a number between -1e12 and 1e12")
        return found

    metric, kind = values.get("metric", ""), values.get("kind", "")
    threshold = number("threshold", values.get("threshold", ""))
    if metric in words.SHARES and kind == "threshold":
        threshold /= 100
    recipients = [a.strip() for a in values.get("email_to", "").replace(",", "\n").splitlines() if a.strip()]
    url = values.get("webhook_url", "").strip()
    raw = {
        "name": values.get("name", ""),
        "metric": metric,
        "filter": {k: values.get(k, "").strip() or None for k in FILTER_FIELDS},
        "condition": {
            "kind": kind, "op": values.get("op", ""), "threshold": threshold,
            "against": values.get("against") or "previous", "periods": values.get("periods") or "14",
            "min_volume": values.get("min_volume") or "0",
        },
        "window": values.get("window", ""),
        "cooldown_minutes": round(number("cooldown_hours", values.get("cooldown_hours") or "0") * 60),
        "channel": {"url": url, "format": values.get("webhook_format") or "json"} if url else None,
        "email": {"to": recipients} if recipients else None,
        "enabled": values.get("enabled") == "on",
    }  # fmt: skip
    try:
        return AlertRuleBody.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(p) for p in first["loc"] if not isinstance(p, int))
        field = FIELD_OF_LOCATION.get(location, location or "rule")
        message = first["msg"].removeprefix("Value error, ")
        if field == "rule" and message.startswith("filter:"):  # the one cross-field rule
            field, message = "filter", message.removeprefix("filter: ")
        raise RuleProblem(422, field, message) from None


def _form_page(
    request: Request,
    session: Session,
    membership: Membership,
    values: dict[str, str],
    rule: alerts.Rule | None,
    status: int = 200,
    error: RuleProblem | None = None,
    preview: dict | None = None,
) -> Response:
    with request.app.state.db.reader() as conn:
        topic_rows = topics.list_topics(conn, membership.project_pk, ("active", "suggested"))
        test_sets = evaluations.list_sets(conn, membership.project_pk)
        online_rules = online_evals.list_rules(conn, membership.project_pk)
    chart, fired = None, []
    if preview is not None:
        metric = values.get("metric", "")
        definition = {"window": preview["window"], "condition": preview["condition"]}
        points = [(w["start"], w["value"], w["event"]) for w in preview["windows"]]
        chart = _chart(metric, definition, points)
        fired = [w for w in preview["windows"] if w["event"] in ("fired", "resolved", "suppressed")]
    return render(
        request, "alert_form.html", status=status, title="Edit alert" if rule else "New alert", active="alerts",
        session=session, membership=membership, v=values, rule=rule, error=error, topics=topic_rows,
        test_sets=test_sets, online_rules=online_rules,
        metrics=[(m, words.METRIC_LABELS[m]) for m in METRICS], shares=sorted(words.SHARES), chart=chart,
        preview=preview, preview_events=fired, smtp_ready=request.app.state.settings.smtp.enabled,
    )  # fmt: skip


async def _submitted(request: Request, project: str, rule_pk: int | None) -> Response:
    session, membership, form = await _posted(request, project)
    values = {k: form.get(k, "") for k in FORM_FIELDS}
    db = request.app.state.db
    rule = None
    if rule_pk is not None:
        with db.reader() as conn:
            rule = alerts.get(conn, membership.project_pk, rule_pk)
        if rule is None:
            raise WebError(404, "no such alert rule in this project")
    try:
        body = body_of(values)
        if form.get("action") == "preview":
            found = alert_rules.preview(db, membership.project_pk, body)
            windows = [w | {"value_text": words.value_text(body.metric, w["value"])} for w in found["windows"]]
            preview = {"window": body.window, "condition": body.condition.model_dump(), "windows": windows}
            return _form_page(request, session, membership, values, rule, preview=preview)
        saved = alert_rules.save(db, membership.project_pk, body, request.app.state.settings.outbound, rule_pk)
    except RuleProblem as problem:
        if problem.status == 404:
            raise WebError(404, problem.message) from None
        return _form_page(request, session, membership, values, rule, status=problem.status, error=problem)
    if rule_pk is None and body.channel is not None:
        # The webhook's signing secret is shown once, on the page the new rule opens on.
        return _rule_page(request, session, membership, saved.pk, status=201, new_secret=saved.secret)
    return redirect(f"{_base(project)}/{saved.pk}")


@router.get("/p/{project}/alerts/{rule_pk}/edit")
def edit_alert(request: Request, project: str, rule_pk: RowId) -> Response:
    session, membership = access(request, project, EDIT_ROLE)
    with request.app.state.db.reader() as conn:
        rule = alerts.get(conn, membership.project_pk, rule_pk)
    if rule is None:
        raise WebError(404, "no such alert rule in this project")
    return _form_page(request, session, membership, values_of(rule), rule)


@router.post("/p/{project}/alerts/{rule_pk}/edit")
async def update_alert(request: Request, project: str, rule_pk: RowId) -> Response:
    return await _submitted(request, project, rule_pk)
