"""Weekly digests: which projects are owed last week's, recording one once (whichever worker gets there
first), and the deliveries it owes (one e-mail per opted-in member, the project's digest webhook).

Exactly once per project and week: ``record`` inserts the ``(project, week)`` row with
insert-or-ignore on its unique key, and its deliveries in the same transaction only when the insert
took; a second worker that built the same digest finds the row there and writes nothing. As with alert
windows, the content is built before, outside the write lock (worker/digest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select

from convolens.store import deliveries as leased
from convolens.store.dialect import insert_ignore
from convolens.store.tables import account, digest_delivery, digest_week, membership, project

WEBHOOK_SETTING = "digest_webhook"  # a project setting: {"url", "format", "secret"}


@dataclass(frozen=True)
class Owed:
    """A project owed the week's digest, and where it goes."""

    project_pk: int
    project: str
    recipients: list[str]
    webhook: dict[str, Any] | None


def owed(conn: Connection, week_start: datetime) -> list[Owed]:
    """Projects with someone to send to (a member opted in, or a digest webhook) and no digest yet for
    the week from ``week_start``."""
    done = set(conn.execute(select(digest_week.c.project_pk).where(digest_week.c.week_start == week_start)).scalars())
    recipients: dict[int, list[str]] = {}
    for pk, email in conn.execute(
        select(membership.c.project_pk, account.c.email)
        .select_from(membership.join(account, account.c.pk == membership.c.account_pk))
        .where(membership.c.digest.is_(True))
        .order_by(account.c.email)
    ):
        recipients.setdefault(pk, []).append(email)
    found = []
    for pk, name, settings in conn.execute(select(project.c.pk, project.c.name, project.c.settings)):
        hook = (settings or {}).get(WEBHOOK_SETTING) if isinstance(settings, dict) else None
        hook = hook if isinstance(hook, dict) and hook.get("url") else None
        if pk not in done and (recipients.get(pk) or hook):
            found.append(Owed(pk, name, recipients.get(pk, []), hook))
    return found


def record(conn: Connection, owed_: Owed, week_start: datetime, content: dict[str, Any], now: datetime) -> bool:
    """Record the digest and its deliveries; False if another worker recorded this week's first."""
    # The returned key tells an insert from a conflict; rowcount did not on PostgreSQL (it came back 0 for
    # an inserted row, seen in test_digest).
    digest_pk = conn.execute(
        insert_ignore(conn, digest_week, ["project_pk", "week_start"])
        .values(project_pk=owed_.project_pk, week_start=week_start, content=content, created_at=now)
        .returning(digest_week.c.pk)
    ).scalar()
    if digest_pk is None:
        return False
    targets = [("email", r) for r in owed_.recipients] + ([("webhook", owed_.webhook["url"])] if owed_.webhook else [])
    for channel, recipient in targets:
        conn.execute(
            insert(digest_delivery).values(
                digest_pk=digest_pk, project_pk=owed_.project_pk, channel=channel, recipient=recipient,
                status="pending", attempts=0, next_attempt_at=now, created_at=now,
            )
        )  # fmt: skip
    return True


@dataclass(frozen=True)
class Delivery:
    pk: int
    attempts: int
    channel: str
    recipient: str
    project_pk: int
    content: dict[str, Any]
    week_start: datetime


def any_due(conn: Connection, now: datetime) -> bool:
    return leased.any_due(conn, digest_delivery, now)


def claim(conn: Connection, owner: str, now: datetime, lease: timedelta) -> Delivery | None:
    row = leased.claim(conn, digest_delivery, owner, now, lease)
    if row is None:
        return None
    week = conn.execute(select(digest_week).where(digest_week.c.pk == row.digest_pk)).one()
    return Delivery(row.pk, row.attempts, row.channel, row.recipient, row.project_pk, week.content, week.week_start)


def finish(
    conn: Connection, owner: str, delivery: Delivery, now: datetime, *, status_code: int | None,
    error: str | None, retry_at: datetime | None,
) -> None:  # fmt: skip
    leased.finish(
        conn, digest_delivery, delivery.pk, owner, delivery.attempts, now,
        status_code=status_code, error=error, retry_at=retry_at,
    )  # fmt: skip


def sent(conn: Connection, project_pk: int) -> list[dict[str, Any]]:
    """The project's digests (newest first) with their deliveries (tests and the alerts page)."""
    rows = conn.execute(
        select(digest_week.c.week_start, digest_delivery.c.channel, digest_delivery.c.recipient,
               digest_delivery.c.status, digest_delivery.c.attempts, digest_delivery.c.last_error)
        .select_from(digest_week.join(digest_delivery, digest_delivery.c.digest_pk == digest_week.c.pk))
        .where(digest_week.c.project_pk == project_pk)
        .order_by(digest_week.c.week_start.desc(), digest_delivery.c.pk)
    )  # fmt: skip
    return [r._asdict() for r in rows]


DIGEST_FIELDS = ("channel", "recipient", "status", "attempts", "last_status_code", "last_error", "delivered_at")


def history(conn: Connection, project_pk: int, limit: int = 104) -> list[dict[str, Any]]:
    """The project's digests, newest first (two years of weeks at most): the week, its label, when it was
    recorded, and ``deliveries``, one per address or webhook with its status and last error."""
    weeks = [
        {"pk": r.pk, "week_start": r.week_start, "created_at": r.created_at,
         "label": ((r.content or {}).get("week") or {}).get("label") or f"{r.week_start:%Y-%m-%d}"}
        for r in conn.execute(
            select(digest_week.c.pk, digest_week.c.week_start, digest_week.c.created_at, digest_week.c.content)
            .where(digest_week.c.project_pk == project_pk)
            .order_by(digest_week.c.week_start.desc())
            .limit(limit)
        )
    ]  # fmt: skip
    found: dict[int, list[dict[str, Any]]] = {}
    if weeks:
        for row in conn.execute(
            select(digest_delivery.c.digest_pk, *[digest_delivery.c[f] for f in DIGEST_FIELDS])
            .where(digest_delivery.c.digest_pk.in_([w["pk"] for w in weeks]))
            .order_by(digest_delivery.c.pk)
        ):
            found.setdefault(row.digest_pk, []).append({f: getattr(row, f) for f in DIGEST_FIELDS})
    return [w | {"deliveries": found.get(w["pk"], [])} for w in weeks]


def content_of(conn: Connection, project_pk: int, week_start: datetime) -> dict[str, Any] | None:
    """What the project's digest of the week from ``week_start`` said (as sent), if one was recorded."""
    return conn.execute(
        select(digest_week.c.content).where(
            digest_week.c.project_pk == project_pk, digest_week.c.week_start == week_start
        )
    ).scalar()


def webhook_of(conn: Connection, project_pk: int) -> dict[str, Any] | None:
    """The project's digest webhook setting ({url, format, secret}), if it has one."""
    settings = conn.execute(select(project.c.settings).where(project.c.pk == project_pk)).scalar() or {}
    hook = settings.get(WEBHOOK_SETTING) if isinstance(settings, dict) else None
    return hook if isinstance(hook, dict) and hook.get("url") else None
