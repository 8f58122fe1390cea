"""Alert rules, the windows decided for them (events) and the webhook deliveries those events owe.

Exactly once per window: ``decide`` moves a rule's ``evaluated_through`` by compare-and-set from the
value the evaluation started from, and inserts the window's event row (unique per rule and window) and
its delivery in the same transaction. A second worker that evaluated the same window finds the rule
moved on and writes nothing. Deliveries are leased one at a time, so each is sent by one worker.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update

from convolens.store import deliveries as leased
from convolens.store.tables import alert_delivery, alert_event, alert_rule, alert_topic

MAX_RULES_PER_PROJECT = 200


@dataclass(frozen=True)
class Rule:
    pk: int
    project_pk: int
    name: str
    definition: dict[str, Any]
    secret: str
    enabled: bool
    firing: bool
    last_fired_at: datetime | None  # the end of the window that last fired: the cooldown counts from it
    evaluated_through: datetime | None
    created_at: datetime
    updated_at: datetime
    muted_until: datetime | None = None

    def muted(self, now: datetime) -> bool:
        return self.muted_until is not None and self.muted_until > now

    def channels(self) -> list[str]:
        """Where its events are sent: ``webhook``, ``email``, both or none."""
        d = self.definition
        return [name for name, key in (("webhook", "channel"), ("email", "email")) if d.get(key)]


def _rule(row: Any) -> Rule:
    return Rule(
        row.pk, row.project_pk, row.name, row.definition, row.secret, row.enabled,
        row.state == "firing", row.last_fired_at, row.evaluated_through, row.created_at, row.updated_at,
        row.muted_until,
    )  # fmt: skip


def create(conn: Connection, project_pk: int, name: str, definition: dict, enabled: bool, now: datetime) -> Rule:
    pk = conn.execute(
        insert(alert_rule).values(
            project_pk=project_pk, name=name, definition=definition, secret=secrets.token_hex(32),
            enabled=enabled, state="ok", created_at=now, updated_at=now,
        )
    ).inserted_primary_key[0]  # fmt: skip
    found = get(conn, project_pk, pk)
    assert found is not None
    return found


def count(conn: Connection, project_pk: int) -> int:
    return len(conn.execute(select(alert_rule.c.pk).where(alert_rule.c.project_pk == project_pk)).all())


def get(conn: Connection, project_pk: int, pk: int) -> Rule | None:
    row = conn.execute(select(alert_rule).where(alert_rule.c.project_pk == project_pk, alert_rule.c.pk == pk)).first()
    return _rule(row) if row else None


def list_rules(conn: Connection, project_pk: int) -> list[Rule]:
    rows = conn.execute(select(alert_rule).where(alert_rule.c.project_pk == project_pk).order_by(alert_rule.c.pk))
    return [_rule(r) for r in rows]


def update_rule(
    conn: Connection, project_pk: int, pk: int, name: str, definition: dict, enabled: bool, now: datetime
) -> bool:
    """A new definition; the rule's state (firing or not, its cooldown, the windows done) stays."""
    changed = conn.execute(
        update(alert_rule)
        .where(alert_rule.c.project_pk == project_pk, alert_rule.c.pk == pk)
        .values(name=name, definition=definition, enabled=enabled, updated_at=now)
    )
    return changed.rowcount == 1


def set_mute(conn: Connection, project_pk: int, pk: int, until: datetime | None) -> bool:
    """Mute the rule until ``until`` (None: unmute). It is still decided meanwhile, so it neither fires
    nor resolves all at once when the mute ends; its events are recorded as muted, with nothing sent."""
    changed = conn.execute(
        update(alert_rule).where(alert_rule.c.project_pk == project_pk, alert_rule.c.pk == pk).values(muted_until=until)
    )
    return changed.rowcount == 1


def new_secret(conn: Connection, project_pk: int, pk: int) -> str | None:
    """A new webhook signing secret for the rule (the old one stops verifying at once); None: no such rule.
    Deliveries not yet sent are signed with the new one."""
    secret = secrets.token_hex(32)
    changed = conn.execute(
        update(alert_rule).where(alert_rule.c.project_pk == project_pk, alert_rule.c.pk == pk).values(secret=secret)
    )
    return secret if changed.rowcount == 1 else None


def remove(conn: Connection, project_pk: int, pk: int) -> bool:
    """The rule, its history and its pending deliveries."""
    events = select(alert_event.c.pk).where(alert_event.c.rule_pk == pk).scalar_subquery()
    found = get(conn, project_pk, pk)
    if found is None:
        return False
    conn.execute(delete(alert_delivery).where(alert_delivery.c.event_pk.in_(events)))
    conn.execute(delete(alert_event).where(alert_event.c.rule_pk == pk))
    conn.execute(delete(alert_topic).where(alert_topic.c.rule_pk == pk))
    conn.execute(delete(alert_rule).where(alert_rule.c.pk == pk))
    return True


def enabled_rules(conn: Connection) -> list[Rule]:
    rows = conn.execute(select(alert_rule).where(alert_rule.c.enabled.is_(True)).order_by(alert_rule.c.pk))
    return [_rule(r) for r in rows]


def decide(
    conn: Connection,
    rule: Rule,
    window: tuple[datetime, datetime],
    seen: tuple[float | None, int],
    holding: bool | None,
    after: tuple[bool, datetime | None],
    event: str | None,
    now: datetime,
    topics: tuple[tuple[int, str], ...] = (),
) -> bool:
    """Record the rule's decision for ``window``: the value and volume ``seen``, whether the condition
    held, the state ``after`` (firing, last fired at) and the event; False if another worker did it first.
    ``topics`` (emerging topics: pk, name) are kept on the event and, when it fired, recorded as told, so
    that the rule counts each once."""
    start, end = window
    through = alert_rule.c.evaluated_through
    moved = conn.execute(
        update(alert_rule)
        .where(
            alert_rule.c.pk == rule.pk,
            through.is_(None) if rule.evaluated_through is None else through == rule.evaluated_through,
        )
        .values(evaluated_through=start, state="firing" if after[0] else "ok", last_fired_at=after[1])
    )
    if moved.rowcount != 1:
        return False
    muted = event in ("fired", "resolved") and rule.muted(now)
    event_pk = conn.execute(
        insert(alert_event).values(
            rule_pk=rule.pk, project_pk=rule.project_pk, window_start=start, window_end=end, value=seen[0],
            volume=seen[1], holds=holding, event=event, muted=muted, created_at=now,
            detail={"topics": [{"id": str(pk), "name": name} for pk, name in topics]} if topics else None,
        )
    ).inserted_primary_key[0]  # fmt: skip
    if event == "fired" and topics:  # suppressed by the cooldown: still news once the cooldown ends
        conn.execute(insert(alert_topic), [{"rule_pk": rule.pk, "topic_pk": pk, "window_start": start}
                                           for pk, _ in topics])  # fmt: skip
    if event in ("fired", "resolved") and not muted:
        for channel in rule.channels():
            conn.execute(
                insert(alert_delivery).values(
                    event_pk=event_pk, project_pk=rule.project_pk, channel=channel, status="pending",
                    attempts=0, next_attempt_at=now, created_at=now,
                )
            )  # fmt: skip
    return True


def told_topics(conn: Connection, rule_pk: int) -> frozenset[int]:
    """The topics an emerging-topics rule has told of (each is news once)."""
    return frozenset(conn.execute(select(alert_topic.c.topic_pk).where(alert_topic.c.rule_pk == rule_pk)).scalars())


DELIVERY_FIELDS = ("channel", "status", "attempts", "last_status_code", "last_error", "delivered_at")


def history(conn: Connection, project_pk: int, rule_pk: int, limit: int = 200) -> list[dict[str, Any]]:
    """The rule's events (fired, resolved, suppressed), newest first, each with ``deliveries`` (a list,
    one per channel; none for a suppressed or muted event)."""
    events = [
        r._asdict()
        for r in conn.execute(
            select(alert_event)
            .where(alert_event.c.project_pk == project_pk, alert_event.c.rule_pk == rule_pk,
                   alert_event.c.event.is_not(None))
            .order_by(alert_event.c.window_start.desc())
            .limit(limit)
        )
    ]  # fmt: skip
    sent: dict[int, list[dict[str, Any]]] = {}
    if events:
        columns = [alert_delivery.c[name] for name in DELIVERY_FIELDS]
        for row in conn.execute(
            select(alert_delivery.c.event_pk, *columns)
            .where(alert_delivery.c.event_pk.in_([e["pk"] for e in events]))
            .order_by(alert_delivery.c.pk)
        ):
            sent.setdefault(row.event_pk, []).append({name: getattr(row, name) for name in DELIVERY_FIELDS})
    for e in events:
        e["deliveries"] = sent.get(e["pk"], [])
    return events


def recent_values(conn: Connection, project_pk: int, rule_pk: int, since: datetime) -> list[dict[str, Any]]:
    """Every window decided since ``since``, oldest first: what the rule saw (for its chart)."""
    rows = conn.execute(
        select(alert_event.c.window_start, alert_event.c.value, alert_event.c.volume, alert_event.c.holds,
               alert_event.c.event)
        .where(alert_event.c.project_pk == project_pk, alert_event.c.rule_pk == rule_pk,
               alert_event.c.window_start >= since)
        .order_by(alert_event.c.window_start)
    )  # fmt: skip
    return [r._asdict() for r in rows]


def last_deliveries(conn: Connection, project_pk: int) -> dict[tuple[int, str], dict[str, Any]]:
    """{(rule pk, channel): its latest delivery attempt}, for the settings page's channel health."""
    latest = (
        select(alert_event.c.rule_pk, alert_delivery.c.channel, func.max(alert_delivery.c.pk).label("pk"))
        .select_from(alert_delivery.join(alert_event, alert_event.c.pk == alert_delivery.c.event_pk))
        .where(alert_delivery.c.project_pk == project_pk, alert_delivery.c.attempts > 0)
        .group_by(alert_event.c.rule_pk, alert_delivery.c.channel)
        .subquery()
    )
    rows = conn.execute(
        select(latest.c.rule_pk, alert_delivery.c.channel, alert_delivery.c.status, alert_delivery.c.attempts,
               alert_delivery.c.last_error, alert_delivery.c.last_status_code, alert_delivery.c.next_attempt_at,
               alert_delivery.c.delivered_at)
        .select_from(latest.join(alert_delivery, alert_delivery.c.pk == latest.c.pk))
    )  # fmt: skip
    return {(r.rule_pk, r.channel): r._asdict() for r in rows}


# Decided windows that changed nothing are kept as long as the rule page's chart shows them; events
# (fired, resolved, suppressed) and their deliveries as long as a team looks back at its history.
KEEP_UNEVENTFUL = timedelta(days=35)
KEEP_EVENTS = timedelta(days=400)


def prune(conn: Connection, now: datetime) -> int:
    """Delete old decided windows (and their deliveries); returns how many windows went. The rules'
    ``evaluated_through`` is what keeps a window from being decided twice, so this cannot re-open one."""
    old = or_(
        and_(alert_event.c.event.is_(None), alert_event.c.window_end < now - KEEP_UNEVENTFUL),
        alert_event.c.window_end < now - KEEP_EVENTS,
    )
    gone = select(alert_event.c.pk).where(old).scalar_subquery()
    conn.execute(delete(alert_delivery).where(alert_delivery.c.event_pk.in_(gone)))
    return conn.execute(delete(alert_event).where(old)).rowcount or 0


# -- deliveries ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    pk: int
    attempts: int
    rule: Rule
    event: dict[str, Any]
    channel: str = "webhook"


def any_due(conn: Connection, now: datetime) -> bool:
    return leased.any_due(conn, alert_delivery, now)


def claim_delivery(conn: Connection, owner: str, now: datetime, lease: timedelta) -> Delivery | None:
    """Lease the oldest due delivery (None if there is none or another worker just took it)."""
    row = leased.claim(conn, alert_delivery, owner, now, lease)
    if row is None:
        return None
    event = conn.execute(select(alert_event).where(alert_event.c.pk == row.event_pk)).one()._asdict()
    rule = conn.execute(select(alert_rule).where(alert_rule.c.pk == event["rule_pk"])).one()
    return Delivery(row.pk, row.attempts, _rule(rule), event, row.channel)


def finish_delivery(
    conn: Connection,
    owner: str,
    delivery: Delivery,
    now: datetime,
    *,
    status_code: int | None,
    error: str | None,
    retry_at: datetime | None,
) -> None:
    """Log one attempt: delivered (no error), pending again at ``retry_at``, or failed for good."""
    leased.finish(
        conn, alert_delivery, delivery.pk, owner, delivery.attempts, now,
        status_code=status_code, error=error, retry_at=retry_at,
    )  # fmt: skip


def deliveries(conn: Connection, project_pk: int) -> list[dict[str, Any]]:
    """Every delivery of the project, oldest first (tests and the history)."""
    rows = conn.execute(
        select(alert_delivery, alert_event.c.rule_pk, alert_event.c.event, alert_event.c.window_start)
        .select_from(alert_delivery.join(alert_event, alert_event.c.pk == alert_delivery.c.event_pk))
        .where(alert_delivery.c.project_pk == project_pk)
        .order_by(alert_delivery.c.pk)
    )
    return [r._asdict() for r in rows]
