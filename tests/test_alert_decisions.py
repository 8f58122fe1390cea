"""What keeps a rule's window decided once, each guard on its own.

Two workers that read the same rule compute the same next window, and the unique (rule, window) key of
``alert_event`` alone refuses the second insert: the two-worker test in test_alerts.py cannot tell the
compare-and-set on ``evaluated_through`` from that key. The compare-and-set is what refuses a *stale*
decision of a *different* window: after a stop, a rule catches up from ``now``'s last finished window
minus 47, so two workers on either side of midnight start from different days with the same state read.
Without the compare-and-set the later one would also insert its window, from a state that does not know
the other's firing: "fired" twice in a row, both sent. Each test here fails with its guard removed."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from alert_support import quiet_server, send_day
from conftest import make_project, separate_database
from convolens.alerts.conditions import State
from convolens.alerts.evaluate import next_step
from convolens.store import alerts
from convolens.store.db import Database
from convolens.store.tables import alert_rule
from convolens.timeutil import utcnow
from convolens.worker.alerting import CATCH_UP, due_window

TODAY = datetime.combine(utcnow().date(), datetime.min.time())
BASE = TODAY - timedelta(days=10)
# When a rule last decided long before catches up starting from BASE (its 48 windows' horizon).
CAUGHT_UP_AT = BASE + timedelta(days=CATCH_UP, hours=1)


def _decide(db: Database, rule: alerts.Rule, now: datetime) -> tuple[datetime, bool]:
    """What worker/alerting.py does for one rule read before: its due window, and whether its decision took."""
    start = due_window(rule, now)
    assert start is not None
    with db.snapshot() as conn:
        outcome = next_step(conn, rule.project_pk, rule.definition, State(rule.firing, rule.last_fired_at), start)
    assert outcome.event == "fired"  # from the state read, each would fire
    with db.writer() as conn:
        took = alerts.decide(
            conn, rule, outcome.window, (outcome.seen.value, outcome.seen.volume), outcome.holds,
            (outcome.state.firing, outcome.state.last_fired_at), outcome.event, now,
        )  # fmt: skip
    return start, took


def _busy_rule(db: Database, server, tmp_path) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """A project busy every day of the last 10 and a rule (above 1 message a day) stopped long ago."""
    project = make_project(db)
    with server.client(project.token) as client:
        for i in range(10):
            send_day(client, BASE + timedelta(days=i), ["a", "b", "c"], "d")
    with server.client(project.admin_token) as admin:
        body = {"name": "busy", "metric": "messages", "window": "day", "cooldown_minutes": 0,
                "condition": {"kind": "threshold", "op": "above", "threshold": 1}}  # fmt: skip
        rule_pk = int(admin.post("/api/v1/alerts", json=body).json()["id"])
    with db.writer() as conn:  # last decided long before the catch-up horizon
        conn.execute(
            update(alert_rule).where(alert_rule.c.pk == rule_pk).values(evaluated_through=BASE - timedelta(days=90))
        )
    return project.pk, rule_pk


def test_a_stale_decision_of_another_window_is_refused_by_the_compare_and_set(database_url, tmp_path) -> None:
    with separate_database(database_url, tmp_path, "alert_cas") as db, quiet_server(db, tmp_path) as server:
        project_pk, rule_pk = _busy_rule(db, server, tmp_path)
        with db.reader() as conn:
            (read,) = alerts.enabled_rules(conn)  # both workers' read of the rule
        # Worker b looks a day after worker a; each catches up from its own horizon, on the busy days.
        a_now = CAUGHT_UP_AT
        b_now = a_now + timedelta(days=1)
        first, took = _decide(db, read, a_now)
        assert took and first == BASE
        second, took = _decide(db, read, b_now)
        assert second == first + timedelta(days=1)  # another window: the unique key cannot refuse it
        assert not took
        with db.reader() as conn:
            events = [(e["window_start"], e["event"]) for e in alerts.history(conn, project_pk, rule_pk)]
            rule = alerts.get(conn, project_pk, rule_pk)
        assert events == [(first, "fired")]
        assert rule is not None and rule.evaluated_through == first and rule.firing


def test_the_same_window_decided_twice_is_refused_by_the_unique_key(database_url, tmp_path) -> None:
    """With the compare-and-set passed (the rule's ``evaluated_through`` put back, as a worker that read it
    before the other's commit and wrote after would see it without the guard), the event's key refuses
    the second decision of the same window, and nothing of it is kept."""
    with separate_database(database_url, tmp_path, "alert_unique") as db, quiet_server(db, tmp_path) as server:
        project_pk, rule_pk = _busy_rule(db, server, tmp_path)
        with db.reader() as conn:
            (read,) = alerts.enabled_rules(conn)
        now = CAUGHT_UP_AT
        first, took = _decide(db, read, now)
        assert took
        with db.writer() as conn:
            conn.execute(
                update(alert_rule).where(alert_rule.c.pk == rule_pk).values(evaluated_through=read.evaluated_through)
            )
        with pytest.raises(IntegrityError):
            _decide(db, read, now)
        with db.reader() as conn:
            events = [(e["window_start"], e["event"]) for e in alerts.history(conn, project_pk, rule_pk)]
        assert events == [(first, "fired")]
