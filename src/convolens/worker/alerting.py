"""The workers' alert duties, when idle: decide each enabled rule's next finished window (once, whichever
worker gets there: store/alerts.py ``decide``), and send the deliveries (webhooks, e-mails) that are due."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from convolens.alerts import emails, webhook
from convolens.alerts import smtp as smtp_channel
from convolens.alerts.conditions import State
from convolens.alerts.evaluate import next_step
from convolens.alerts.measure import WINDOWS, window_start
from convolens.config import SmtpSettings
from convolens.outbound import OutboundPolicy
from convolens.store import alerts, projects
from convolens.store.db import Database, DatabaseUnavailable

log = logging.getLogger("convolens.worker.alerts")

# A window is decided this long after it ends: messages logged late by the SDKs' buffers land first.
SETTLE = timedelta(minutes=5)
# After a long stop a rule catches up on at most this many windows, the newest.
CATCH_UP = 48


def due_window(rule: alerts.Rule, now: datetime) -> datetime | None:
    """The start of the rule's next window to decide, or None if it has not finished (and settled)."""
    length = WINDOWS[rule.definition["window"]]
    last_done = window_start(now - SETTLE, rule.definition["window"]) - length
    if rule.evaluated_through is None:
        return last_done  # a new rule starts with the last finished window, no history replayed
    # Aligned to the rule's window: an hourly rule edited into a daily one goes on with the next whole day.
    start = max(
        window_start(rule.evaluated_through, rule.definition["window"]) + length, last_done - length * (CATCH_UP - 1)
    )
    return start if start <= last_done else None


def evaluate_due(db: Database, now: datetime) -> int:
    """Decide the due windows of enabled rules, one window per rule per call; returns how many were
    decided by this worker."""
    with db.reader() as conn:
        rules = alerts.enabled_rules(conn)
    decided = 0
    for rule in rules:
        start = due_window(rule, now)
        if start is None:
            continue
        try:
            with db.snapshot() as conn:
                told = alerts.told_topics(conn, rule.pk) if rule.definition["metric"] == "emerging_topics" else None
                outcome = next_step(
                    conn, rule.project_pk, rule.definition, State(rule.firing, rule.last_fired_at), start,
                    told or frozenset(),
                )  # fmt: skip
            with db.writer() as conn:
                if alerts.decide(
                    conn,
                    rule,
                    outcome.window,
                    (outcome.seen.value, outcome.seen.volume),
                    outcome.holds,
                    (outcome.state.firing, outcome.state.last_fired_at),
                    outcome.event,
                    now,
                    outcome.seen.topics,
                ):
                    decided += 1
                    if outcome.event:
                        log.info("alert rule %s: %s for the window from %s", rule.pk, outcome.event, start)
        except DatabaseUnavailable:
            raise
        except Exception:  # one broken rule must not keep the others from being decided
            log.exception("alert rule %s: the window from %s could not be decided; retried", rule.pk, start)
    return decided


def deliver_due(
    db: Database,
    owner: str,
    now: datetime,
    policy: OutboundPolicy,
    lease: timedelta = timedelta(seconds=60),
    *,
    smtp: SmtpSettings | None = None,
    public_url: str = "http://localhost:8000",
) -> int:
    """Send the due deliveries (webhooks and e-mails) one by one; returns how many were attempted."""
    attempted = 0
    with db.reader() as conn:
        if not alerts.any_due(conn, now):
            return 0
    while True:
        with db.writer() as conn:
            delivery = alerts.claim_delivery(conn, owner, now, lease)
        if delivery is None:
            return attempted
        rule = delivery.rule
        with db.reader() as conn:
            project = projects.project_name(conn, rule.project_pk) or ""
        link = emails.project_url(public_url, project, f"/alerts/{rule.pk}")
        channel = rule.definition.get("channel")
        recipients = (rule.definition.get("email") or {}).get("to")
        if delivery.channel == "email" and recipients:
            subject, text, html = emails.alert_email(
                project, rule.name, rule.pk, rule.definition, delivery.event, public_url
            )
            mail = smtp_channel.message(smtp or SmtpSettings(), recipients, subject, text, html, f"alert-{delivery.pk}")
            code, error = None, smtp_channel.send(smtp or SmtpSettings(), mail)
        elif delivery.channel == "webhook" and channel:
            payload = webhook.body(rule.name, rule.pk, rule.definition, delivery.event, link)
            code, error = webhook.send(channel["url"], rule.secret, delivery.pk, payload, now, policy)
        else:
            code, error = None, f"the rule has no {delivery.channel} channel any more"
        wait = webhook.retry_after(delivery.attempts + 1) if error else None
        with db.writer() as conn:
            alerts.finish_delivery(
                conn, owner, delivery, now, status_code=code, error=error, retry_at=now + wait if wait else None
            )
        attempted += 1
        if error:
            log.warning("alert delivery %s (rule %s) failed: %s", delivery.pk, rule.pk, error)
