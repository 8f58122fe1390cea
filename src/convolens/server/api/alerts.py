"""``/api/v1/alerts``: alert rules, their history and a preview of when a rule would have fired.

Reading (and previewing) needs the ``read`` scope; creating, changing and deleting need ``admin``.
A rule's webhook secret is shown once, in the answer to its creation. The webhook URL must pass the
outbound guard (outbound.py), as a project's LLM provider URL does.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Connection

from convolens.alerts.evaluate import PREVIEW_WINDOWS, replay
from convolens.alerts.measure import WINDOWS, window_start
from convolens.outbound import RefusedUrl, safe_url
from convolens.schemas.alerts import AlertRuleBody
from convolens.server.api.deps import database
from convolens.server.auth import AdminToken, ReadToken
from convolens.server.errors import ERROR_RESPONSES, ApiError
from convolens.server.responses import JSONResponse
from convolens.store import alerts, topics
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


def _field_error(field: str, msg: str) -> ApiError:
    return ApiError(422, f"{field}: {msg}", [{"field": field, "msg": msg}])


def _checked(request: Request, body: AlertRuleBody) -> dict:
    """The definition to store: its webhook URL normalised and guarded (before any write lock: this
    resolves the host)."""
    definition = body.definition()
    if body.channel is not None:
        try:
            definition["channel"]["url"] = safe_url(body.channel.url, request.app.state.settings.outbound).url
        except RefusedUrl as exc:
            raise _field_error("channel.url", str(exc)) from None
    return definition


def _topic_exists(conn: Connection, project_pk: int, body: AlertRuleBody) -> None:
    if body.filter.topic_id is not None and topics.get(conn, project_pk, int(body.filter.topic_id)) is None:
        raise _field_error("filter.topic_id", "no such topic in this project")


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
    definition = _checked(request, body)
    with db.writer() as conn:
        _topic_exists(conn, token.project_pk, body)
        if alerts.count(conn, token.project_pk) >= alerts.MAX_RULES_PER_PROJECT:
            raise ApiError(409, f"a project has at most {alerts.MAX_RULES_PER_PROJECT} alert rules")
        rule = alerts.create(conn, token.project_pk, body.name, definition, body.enabled, utcnow())
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
    definition = body.definition()
    windows = PREVIEW_WINDOWS[body.window]
    length = WINDOWS[body.window]
    first = window_start(utcnow(), body.window) - length * windows
    with db.snapshot() as conn:
        _topic_exists(conn, token.project_pk, body)
        outcomes = replay(conn, token.project_pk, definition, first, windows)
    series = [
        {
            "start": iso(o.window[0]),
            "value": o.seen.value,
            "volume": o.seen.volume,
            "holds": o.holds,
            "event": o.event,
        }
        for o in outcomes
    ]
    fired = [s["start"] for s in series if s["event"] == "fired"]
    return JSONResponse({"window": body.window, "windows": series, "fired": fired})


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
    definition = _checked(request, body)
    with db.writer() as conn:
        rule = _found(conn, token.project_pk, rule_id)
        _topic_exists(conn, token.project_pk, body)
        alerts.update_rule(conn, token.project_pk, rule.pk, body.name, definition, body.enabled, utcnow())
        rule = _found(conn, token.project_pk, rule_id)
    return JSONResponse(rule_response(rule))


@router.delete("/api/v1/alerts/{rule_id}")
def delete_alert(rule_id: str, token: TokenInfo = AdminToken, db: Database = Depends(database)) -> JSONResponse:  # noqa: B008
    with db.writer() as conn:
        if not alerts.remove(conn, token.project_pk, _rule_pk(rule_id)):
            raise ApiError(404, "no such alert rule in this project")
    return JSONResponse({"status": "deleted", "id": rule_id})


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
            "delivery": None
            if r["status"] is None
            else {
                "status": r["status"],
                "attempts": r["attempts"],
                "last_status_code": r["last_status_code"],
                "last_error": r["last_error"],
                "delivered_at": iso(r["delivered_at"]),
            },
        }
        for r in rows
    ]
    return JSONResponse({"count": len(events), "events": events})
