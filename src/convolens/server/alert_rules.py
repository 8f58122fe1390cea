"""Saving an alert rule, for the API (server/api/alerts.py) and the dashboard's form (server/web/alerts.py)
alike: the webhook URL through the outbound guard, the topic filter checked against the project, the cap
on rules, then the write. A problem names the field it is about."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from convolens.alerts.evaluate import PREVIEW_WINDOWS, replay
from convolens.alerts.measure import WINDOWS, window_start
from convolens.outbound import OutboundPolicy, RefusedUrl, safe_url
from convolens.schemas.alerts import AlertRuleBody
from convolens.store import alerts, evaluations, online_evals, topics
from convolens.store.db import Database
from convolens.timeutil import iso, utcnow


@dataclass
class RuleProblem(Exception):
    """A rule that cannot be saved: ``status`` 404 (no such rule), 409 (too many) or 422 (``field``)."""

    status: int
    field: str | None
    message: str


def definition_of(body: AlertRuleBody, outbound: OutboundPolicy) -> dict:
    """The definition to store, its webhook URL normalised and guarded. Called before any write lock:
    the guard resolves the host."""
    definition = body.definition()
    if body.channel is not None:
        try:
            definition["channel"]["url"] = safe_url(body.channel.url, outbound).url
        except RefusedUrl as exc:
            raise RuleProblem(422, "channel.url", str(exc)) from None
    return definition


def check_topic(conn: Connection, project_pk: int, body: AlertRuleBody) -> None:
    """The topic, test set or online evaluation a filter names is the project's."""
    f = body.filter
    if f.topic_id is not None and topics.get(conn, project_pk, int(f.topic_id)) is None:
        raise RuleProblem(422, "filter.topic_id", "no such topic in this project")
    if f.test_set is not None and evaluations.latest(conn, project_pk, f.test_set) is None:
        raise RuleProblem(422, "filter.test_set", "no such test set in this project")
    if f.online_eval_id is not None and online_evals.get(conn, project_pk, int(f.online_eval_id)) is None:
        raise RuleProblem(422, "filter.online_eval_id", "no such online evaluation in this project")


def preview(db: Database, project_pk: int, body: AlertRuleBody) -> dict[str, Any]:
    """When the rule would have fired and resolved over the last 30 finished days (an hourly rule: its
    last 72 finished hours), decided window by window as the workers decide, from a quiet start. Nothing
    is sent and nothing stored."""
    definition = body.definition()
    windows = PREVIEW_WINDOWS[body.window]
    length = WINDOWS[body.window]
    first = window_start(utcnow(), body.window) - length * windows
    with db.snapshot() as conn:
        check_topic(conn, project_pk, body)
        outcomes = replay(conn, project_pk, definition, first, windows)
    series = [
        {"start": iso(o.window[0]), "value": o.seen.value, "volume": o.seen.volume, "holds": o.holds,
         "event": o.event}
        for o in outcomes
    ]  # fmt: skip
    fired = [s["start"] for s in series if s["event"] == "fired"]
    return {"window": body.window, "windows": series, "fired": fired}


def save(
    db: Database, project_pk: int, body: AlertRuleBody, outbound: OutboundPolicy, rule_pk: int | None = None
) -> alerts.Rule:
    """Create the rule (``rule_pk`` None) or replace the definition of rule ``rule_pk`` (its state,
    cooldown and windows done stay)."""
    definition = definition_of(body, outbound)
    with db.writer() as conn:
        if rule_pk is not None and alerts.get(conn, project_pk, rule_pk) is None:
            raise RuleProblem(404, None, "no such alert rule in this project")
        check_topic(conn, project_pk, body)
        if rule_pk is None:
            if alerts.count(conn, project_pk) >= alerts.MAX_RULES_PER_PROJECT:
                raise RuleProblem(409, None, f"a project has at most {alerts.MAX_RULES_PER_PROJECT} alert rules")
            return alerts.create(conn, project_pk, body.name, definition, body.enabled, utcnow())
        alerts.update_rule(conn, project_pk, rule_pk, body.name, definition, body.enabled, utcnow())
        found = alerts.get(conn, project_pk, rule_pk)
    assert found is not None
    return found
