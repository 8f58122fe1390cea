"""``/api/v1/alerts``: alert rules, their history and a preview of when a rule would have fired.

Reading (and previewing) needs the ``read`` scope; creating, changing and deleting need ``admin``.
A rule's webhook secret is shown once, in the answer to its creation. The webhook URL must pass the
outbound guard (outbound.py), as a project's LLM provider URL does.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Connection

from convolens.schemas.alerts import MAX_MUTE_DAYS, AlertMute, AlertRuleBody
from convolens.server import alert_rules
from convolens.server.alert_rules import RuleProblem
from convolens.server.api.deps import database
from convolens.server.auth import AdminToken, ReadToken
from convolens.server.errors import ERROR_RESPONSES, ApiError
from convolens.server.responses import JSONResponse
from convolens.store import alerts
from convolens.store.db import Database
from convolens.store.projects import TokenInfo
from convolens.timeutil import iso, utcnow

router = APIRouter(tags=["alerts"], responses=ERROR_RESPONSES)


def rule_response(rule: alerts.Rule) -> dict[str, Any]:
    return {
        "id": str(rule.pk),
        "name": rule.name,
        "enabled": rule.enabled,
        **rule.definition,
        "state": "firing" if rule.firing else "ok",
        "last_fired_at": iso(rule.last_fired_at),
        "evaluated_through": iso(rule.evaluated_through),
        "muted_until": iso(rule.muted_until),
        "created_at": iso(rule.created_at),
        "updated_at": iso(rule.updated_at),
    }


def _rule_pk(rule_id: str) -> int:
    if not rule_id.isdigit() or len(rule_id) > 18:
        raise ApiError(404, "no such alert rule in this project")
    return int(rule_id)


def _found(conn: Connection, project_pk: int, rule_id: str) -> alerts.Rule:
    rule = alerts.get(conn, project_pk, _rule_pk(rule_id))
    if rule is None:
        raise ApiError(404, "no such alert rule in this project")
    return rule


def _api_error(problem: RuleProblem) -> ApiError:
    if problem.field is None:
        return ApiError(problem.status, problem.message)
    return ApiError(
        problem.status, f"{problem.field}: {problem.message}", [{"field": problem.field, "msg": problem.message}]
    )


@router.get("/api/v1/alerts")
def list_alerts(token: TokenInfo = ReadToken, db: Database = Depends(database)) -> JSONResponse:  # noqa: B008
    with db.reader() as conn:
        rules = alerts.list_rules(conn, token.project_pk)
    return JSONResponse({"count": len(rules), "alerts": [rule_response(r) for r in rules]})


@router.post("/api/v1/alerts", status_code=201)
def create_alert(
    body: AlertRuleBody,
    request: Request,
    token: TokenInfo = AdminToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """A new rule; the answer carries ``secret``, the key of its webhook signatures, shown only here."""
    try:
        rule = alert_rules.save(db, token.project_pk, body, request.app.state.settings.outbound)
    except RuleProblem as problem:
        raise _api_error(problem) from None
    return JSONResponse(rule_response(rule) | {"secret": rule.secret}, status_code=201)


@router.post("/api/v1/alerts/preview")
def preview_alert(
    body: AlertRuleBody,
    token: TokenInfo = ReadToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """When the rule would have fired and resolved over the last 30 finished days (an hourly rule: its
    last 72 finished hours), decided window by window as the workers decide, from a quiet start. Nothing
    is sent and nothing stored."""
    try:
        return JSONResponse(alert_rules.preview(db, token.project_pk, body))
    except RuleProblem as problem:
        raise _api_error(problem) from None


@router.get("/api/v1/alerts/{rule_id}")
def get_alert(rule_id: str, token: TokenInfo = ReadToken, db: Database = Depends(database)) -> JSONResponse:  # noqa: B008
    with db.reader() as conn:
        return JSONResponse(rule_response(_found(conn, token.project_pk, rule_id)))


@router.put("/api/v1/alerts/{rule_id}")
def update_alert(
    rule_id: str,
    body: AlertRuleBody,
    request: Request,
    token: TokenInfo = AdminToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """Replace a rule's definition; whether it is firing, its cooldown and the windows done stay."""
    try:
        rule = alert_rules.save(db, token.project_pk, body, request.app.state.settings.outbound, _rule_pk(rule_id))
    except RuleProblem as problem:
        raise _api_error(problem) from None
    return JSONResponse(rule_response(rule))


@router.delete("/api/v1/alerts/{rule_id}")
def delete_alert(rule_id: str, token: TokenInfo = AdminToken, db: Database = Depends(database)) -> JSONResponse:  # noqa: B008
    with db.writer() as conn:
        if not alerts.remove(conn, token.project_pk, _rule_pk(rule_id)):
            raise ApiError(404, "no such alert rule in this project")
    return JSONResponse({"status": "deleted", "id": rule_id})


@router.post("/api/v1/alerts/{rule_id}/mute")
def mute_alert(
    rule_id: str,
    body: AlertMute,
    token: TokenInfo = AdminToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """Mute the rule until ``until`` (null: unmute). It is still decided meanwhile (so it does not fire
    all at once when the mute ends); what it would have sent is recorded as muted in its history."""
    now = utcnow()
    if body.until is not None and not now < body.until <= now + timedelta(days=MAX_MUTE_DAYS):
        raise _api_error(RuleProblem(422, "until", f"must be in the future and within {MAX_MUTE_DAYS} days"))
    with db.writer() as conn:
        if not alerts.set_mute(conn, token.project_pk, _rule_pk(rule_id), body.until):
            raise ApiError(404, "no such alert rule in this project")
        return JSONResponse(rule_response(_found(conn, token.project_pk, rule_id)))


@router.post("/api/v1/alerts/{rule_id}/secret")
def rotate_secret(rule_id: str, token: TokenInfo = AdminToken, db: Database = Depends(database)) -> JSONResponse:  # noqa: B008
    """A new webhook signing secret, shown only in this answer; the old one stops verifying at once."""
    with db.writer() as conn:
        secret = alerts.new_secret(conn, token.project_pk, _rule_pk(rule_id))
    if secret is None:
        raise ApiError(404, "no such alert rule in this project")
    return JSONResponse({"id": rule_id, "secret": secret})


@router.get("/api/v1/alerts/{rule_id}/history")
def alert_history(rule_id: str, token: TokenInfo = ReadToken, db: Database = Depends(database)) -> JSONResponse:  # noqa: B008
    """The rule's events, newest first: fired, resolved, or suppressed (true again within the cooldown),
    each with its value and, when it had a webhook, the delivery's status, attempts and last error."""
    with db.reader() as conn:
        rule = _found(conn, token.project_pk, rule_id)
        rows = alerts.history(conn, token.project_pk, rule.pk)
    events = [
        {
            "event": r["event"],
            "window_start": iso(r["window_start"]),
            "window_end": iso(r["window_end"]),
            "value": r["value"],
            "volume": r["volume"],
            "muted": r["muted"],
            # An emerging-topics event: the topics it told of ([{id, name}]).
            "topics": (r.get("detail") or {}).get("topics"),
            # One per channel (webhook, email); ``delivery`` is the first, as before e-mail existed.
            "deliveries": [d | {"delivered_at": iso(d["delivered_at"])} for d in r["deliveries"]],
            "delivery": next((d | {"delivered_at": iso(d["delivered_at"])} for d in r["deliveries"]), None),
        }
        for r in rows
    ]
    return JSONResponse({"count": len(events), "events": events})
