"""The workers' weekly-digest duty, when idle: once last week has settled, build each owed project's digest
(alerts/digest.py) and record it once (store/digests.py ``record``: the first worker's insert wins), then
send the due deliveries: an e-mail to each opted-in member, a post to the project's digest webhook."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

from convolens.alerts import digest, emails, webhook
from convolens.alerts import smtp as smtp_channel
from convolens.config import SmtpSettings
from convolens.outbound import OutboundPolicy
from convolens.store import digests
from convolens.store.db import Database, DatabaseUnavailable

log = logging.getLogger("convolens.worker.digest")

# Last week's digest is built this long after Monday 00:00 UTC: late messages and the rollups land first.
SETTLE = timedelta(hours=1)


def due_week(now: datetime) -> datetime:
    """The Monday starting the last finished (and settled) week."""
    return digest.week_of(now - SETTLE) - digest.WEEK


def record_due(db: Database, now: datetime) -> int:
    """Build and record the digests owed for the last finished week; returns how many this worker recorded."""
    week = due_week(now)
    with db.reader() as conn:
        owed = digests.owed(conn, week)
    recorded = 0
    for o in owed:
        try:
            with db.snapshot() as conn:
                content = digest.build(conn, o.project_pk, o.project, week)
            with db.writer() as conn:
                if digests.record(conn, o, week, content, now):
                    recorded += 1
                    log.info("digest of project %s for the week from %s recorded", o.project_pk, week.date())
        except DatabaseUnavailable:
            raise
        except Exception:  # one project's failure must not keep the others' digests back
            log.exception("digest of project %s for the week from %s failed; retried", o.project_pk, week.date())
    return recorded


def webhook_body(content: dict, channel_format: str, public_url: str) -> bytes:
    link = emails.project_url(public_url, content["project"], content["links"]["overview"])
    lines = [f"Weekly digest of {content['project']}, {content['week']['label']}"]
    lines += [digest.text_line(k) for k in content["kpis"][:4]]
    chat = webhook.chat_body("\n".join(lines), channel_format, link)
    if chat is not None:
        return chat
    return json.dumps({"type": "digest.weekly", "url": link, **content}, separators=(",", ":")).encode()


def deliver_due(
    db: Database,
    owner: str,
    now: datetime,
    policy: OutboundPolicy,
    *,
    smtp: SmtpSettings | None = None,
    public_url: str = "http://localhost:8000",
    lease: timedelta = timedelta(seconds=60),
) -> int:
    """Send the due digest deliveries one by one; returns how many were attempted."""
    with db.reader() as conn:
        if not digests.any_due(conn, now):
            return 0
    attempted = 0
    while True:
        with db.writer() as conn:
            delivery = digests.claim(conn, owner, now, lease)
        if delivery is None:
            return attempted
        code: int | None = None
        if delivery.channel == "email":
            subject, text, html = emails.digest_email(delivery.content, public_url)
            mail = smtp_channel.message(smtp or SmtpSettings(), [delivery.recipient], subject, text, html,
                                        f"digest-{delivery.pk}")  # fmt: skip
            error = smtp_channel.send(smtp or SmtpSettings(), mail)
        else:
            with db.reader() as conn:
                hook = digests.webhook_of(conn, delivery.project_pk)
            if hook is None or hook.get("url") != delivery.recipient:
                code, error = None, "the project's digest webhook was changed or removed"
            else:
                payload = webhook_body(delivery.content, hook.get("format", "json"), public_url)
                code, error = webhook.send(hook["url"], hook.get("secret") or "", delivery.pk, payload, now, policy)
        wait = webhook.retry_after(delivery.attempts + 1) if error else None
        with db.writer() as conn:
            digests.finish(conn, owner, delivery, now, status_code=code, error=error,
                           retry_at=now + wait if wait else None)  # fmt: skip
        attempted += 1
        if error:
            log.warning("digest delivery %s (%s) failed: %s", delivery.pk, delivery.channel, error)
