"""Alerts (issue 27): a rule fires once when its condition becomes true, not again during its cooldown,
and sends "resolved" when it clears; webhooks are signed, retried with backoff and logged; two workers
on PostgreSQL decide and deliver each alert once; the preview fires when the worker fires; a negative
share spike of one topic in one language fires on that day only.

The workers' alert duties are stepped at chosen times (``now`` = an hour after each day ends), on a
database of the test's own with no embedded worker, so nothing else moves the rules."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta

import pytest

from alert_support import LOOPBACK, label, quiet_server, send_day, webhook_receiver
from conftest import make_project, separate_database
from convolens.alerts import webhook
from convolens.store import alerts
from convolens.store.db import Database
from convolens.timeutil import iso, utcnow
from convolens.worker.alerting import deliver_due, evaluate_due

TODAY = datetime.combine(utcnow().date(), datetime.min.time())
BASE = TODAY - timedelta(days=25)  # inside the preview's 30 days


def day(i: int) -> datetime:
    return BASE + timedelta(days=i)


def after(i: int) -> datetime:
    """When the workers look: an hour after day ``i`` ended."""
    return day(i + 1) + timedelta(hours=1)


def step_days(db: Database, days: range, owner: str = "w") -> None:
    for i in days:
        assert evaluate_due(db, after(i)) == 1
        deliver_due(db, owner, after(i), LOOPBACK)


def events_of(db: Database, project_pk: int, rule_pk: int) -> list[tuple[str, str]]:
    """(window start, event) of the rule, oldest first."""
    with db.reader() as conn:
        return [(iso(r["window_start"]), r["event"]) for r in reversed(alerts.history(conn, project_pk, rule_pk))]


def messages_rule(url: str, cooldown_days: int = 4, threshold: float = 5) -> dict:
    return {
        "name": "busy day",
        "metric": "messages",
        "condition": {"kind": "threshold", "op": "above", "threshold": threshold},
        "window": "day",
        "cooldown_minutes": cooldown_days * 24 * 60,
        "channel": {"url": url, "format": "json"},
    }


def test_fires_once_not_in_cooldown_resolves_signed_and_preview_agrees(database_url, tmp_path) -> None:
    with (
        separate_database(database_url, tmp_path, "alerts_fire") as db,
        quiet_server(db, tmp_path) as server,
        webhook_receiver() as receiver,
    ):
        project = make_project(db)
        with server.client(project.token) as client:
            for i, n in enumerate([2, 8, 8, 1, 8, 1, 2, 2]):
                send_day(client, day(i), [f"question {k}" for k in range(n)], "c")
        rule = messages_rule(receiver.url)
        with server.client(project.admin_token) as admin:
            created = admin.post("/api/v1/alerts", json=rule)
            assert created.status_code == 201, created.text
            rule_id, secret = created.json()["id"], created.json()["secret"]
            step_days(db, range(8))
            # Day 1 crosses 5: fired. Day 2 stays above: nothing new. Day 3 drops: resolved. Day 4 is above
            # again 3 days after the firing, inside the 4-day cooldown: recorded, not sent.
            expected = [(iso(day(1)), "fired"), (iso(day(3)), "resolved"), (iso(day(4)), "suppressed")]
            assert events_of(db, project.pk, int(rule_id)) == expected
            assert [b["type"] for b in receiver.bodies()] == ["alert.fired", "alert.resolved"]
            assert [b["window"]["start"] for b in receiver.bodies()] == [iso(day(1)), iso(day(3))]
            assert receiver.bodies()[0]["value"] == 8.0
            for headers, body in receiver.requests:
                stamp, signed = headers["x-convolens-timestamp"], headers["x-convolens-signature"]
                assert webhook.verify(secret, stamp, body, signed)
                assert not webhook.verify(secret, stamp, body + b" ", signed)
                assert not webhook.verify("another secret", stamp, body, signed)
            history = admin.get(f"/api/v1/alerts/{rule_id}/history").json()
            assert [e["event"] for e in history["events"]] == ["suppressed", "resolved", "fired"]
            assert history["events"][1]["delivery"]["status"] == "delivered"
            assert history["events"][0]["delivery"] is None
            # The preview replays the same rule over the last 30 days: the same windows, the same events.
            preview = admin.post("/api/v1/alerts/preview", json=rule)
            assert preview.status_code == 200, preview.text
            replayed = [(w["start"], w["event"]) for w in preview.json()["windows"] if w["event"]]
            assert replayed == expected
            assert preview.json()["fired"] == [iso(day(1))]
            assert evaluate_due(db, after(7)) == 0  # a window is decided once


def test_a_receiver_answering_500_is_retried_with_backoff_and_logged(database_url, tmp_path) -> None:
    with (
        separate_database(database_url, tmp_path, "alerts_retry") as db,
        quiet_server(db, tmp_path) as server,
        webhook_receiver([500, 500]) as receiver,
    ):
        project = make_project(db)
        with server.client(project.token) as client:
            send_day(client, day(0), ["a", "b", "c"], "r")
        with server.client(project.admin_token) as admin:
            rule_id = admin.post("/api/v1/alerts", json=messages_rule(receiver.url, threshold=1)).json()["id"]
        now = after(0)
        assert evaluate_due(db, now) == 1
        assert deliver_due(db, "w", now, LOOPBACK) == 1
        with db.reader() as conn:
            (first,) = alerts.deliveries(conn, project.pk)
        assert (first["status"], first["attempts"], first["last_status_code"]) == ("pending", 1, 500)
        assert first["last_error"] == 'HTTP 500 Internal Server Error; the receiver said: "ok"'
        assert deliver_due(db, "w", now + timedelta(seconds=29), LOOPBACK) == 0  # not before its backoff
        assert deliver_due(db, "w", now + timedelta(seconds=31), LOOPBACK) == 1
        assert deliver_due(db, "w", now + timedelta(seconds=31 + 119), LOOPBACK) == 0  # the second wait is 2 min
        assert deliver_due(db, "w", now + timedelta(seconds=31 + 121), LOOPBACK) == 1
        with db.reader() as conn:
            (last,) = alerts.deliveries(conn, project.pk)
        assert (last["status"], last["attempts"], last["last_status_code"], last["last_error"]) == (
            "delivered", 3, 200, None,
        )  # fmt: skip
        assert len(receiver.requests) == 3
        assert len({h["x-convolens-delivery"] for h, _ in receiver.requests}) == 1  # one delivery, three tries
        with server.client(project.read_token) as reader:
            (event,) = reader.get(f"/api/v1/alerts/{rule_id}/history").json()["events"]
        assert event["delivery"]["attempts"] == 3


def test_two_workers_on_postgresql_decide_and_deliver_each_alert_once(postgres_url, tmp_path) -> None:
    with (
        separate_database(postgres_url, tmp_path, "alerts_two") as db,
        quiet_server(db, tmp_path) as server,
        webhook_receiver() as receiver,
    ):
        project = make_project(db)
        counts = [1, 9, 1, 9, 9, 1, 9, 1, 1, 9]
        with server.client(project.token) as client:
            for i, n in enumerate(counts):
                send_day(client, day(i), [f"q {k}" for k in range(n)], "t")
        with server.client(project.admin_token) as admin:
            for threshold in (2, 5, 8):
                created = admin.post(
                    "/api/v1/alerts", json=messages_rule(receiver.url, 0, threshold) | {"name": f"{threshold}"}
                )
                assert created.status_code == 201
        decided: Counter[str] = Counter()
        errors: list[BaseException] = []

        def work(owner: str, barrier: threading.Barrier, i: int) -> None:
            try:
                barrier.wait()
                decided[owner] += evaluate_due(db, after(i))
                barrier.wait()
                deliver_due(db, owner, after(i), LOOPBACK)
            except BaseException as exc:  # a worker's failure fails the test, not hangs it
                errors.append(exc)
                barrier.abort()

        for i in range(len(counts)):
            barrier = threading.Barrier(2, timeout=30)
            threads = [threading.Thread(target=work, args=(name, barrier, i)) for name in ("a", "b")]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        assert errors == []
        assert sum(decided.values()) == 3 * len(counts)  # every window of every rule, decided once
        with db.reader() as conn:
            rules = alerts.list_rules(conn, project.pk)
            owed = [d for d in alerts.deliveries(conn, project.pk)]
            windows = [len(alerts.history(conn, project.pk, r.pk)) for r in rules]
        assert all(d["status"] == "delivered" and d["attempts"] == 1 for d in owed)
        sent = Counter((b["rule"]["id"], b["type"], b["window"]["start"]) for b in receiver.bodies())
        assert len(sent) == len(owed) == len(receiver.requests) > 0
        assert max(sent.values()) == 1
        assert sum(windows) == len(owed)  # cooldown 0: every event was fired or resolved, each sent once


def test_negative_share_spike_of_one_topic_in_one_language_fires_on_that_day_only(database_url, tmp_path) -> None:
    spike, elsewhere, other_language = 12, 8, 5
    with (
        separate_database(database_url, tmp_path, "alerts_spike") as db,
        quiet_server(db, tmp_path) as server,
    ):
        project = make_project(db)
        with server.client(project.admin_token) as admin:
            topic = admin.post("/api/v1/topics", json={"name": "billing", "kind": "keyword", "keywords": ["invoice"]})
            assert topic.status_code == 201, topic.text
            topic_pk = int(topic.json()["id"])
            for i in range(20):
                negative = 6 if i == spike else 1  # of 10 Korean billing messages a day
                send_day(admin, day(i), ["invoice"] * negative, "kon")
                send_day(admin, day(i), ["invoice"] * (10 - negative), "koo")
                # The same topic in English, unhappy on another day; Korean outside the topic, on a third.
                send_day(admin, day(i), ["invoice"] * 10, "en")
                send_day(admin, day(i), ["hello"] * 10, "kx")
                label(db, project.pk, f"kon-{day(i):%Y%m%d}", language="ko", sentiment="negative", topic_pk=topic_pk)
                label(db, project.pk, f"koo-{day(i):%Y%m%d}", language="ko", sentiment="neutral", topic_pk=topic_pk)
                en = "negative" if i == other_language else "neutral"
                label(db, project.pk, f"en-{day(i):%Y%m%d}", language="en", sentiment=en, topic_pk=topic_pk)
                kx = "negative" if i == elsewhere else "neutral"
                label(db, project.pk, f"kx-{day(i):%Y%m%d}", language="ko", sentiment=kx, topic_pk=None)
            rule = {
                "name": "Korean billing unhappy",
                "metric": "negative_share",
                "filter": {"topic_id": str(topic_pk), "language": "ko"},
                "condition": {"kind": "anomaly", "op": "above", "threshold": 3, "periods": 7, "min_volume": 5},
                "window": "day",
                "cooldown_minutes": 0,
            }
            created = admin.post("/api/v1/alerts", json=rule)
            assert created.status_code == 201, created.text
            step_days(db, range(20))
            fired = [w for w, e in events_of(db, project.pk, int(created.json()["id"])) if e == "fired"]
            assert fired == [iso(day(spike))]
            preview = admin.post("/api/v1/alerts/preview", json=rule).json()
            assert preview["fired"] == [iso(day(spike))]
            (spiked,) = [w for w in preview["windows"] if w["start"] == iso(day(spike))]
            assert (spiked["value"], spiked["volume"]) == (pytest.approx(0.6), 10)


def test_the_api_guards_scopes_urls_and_filters(database_url, tmp_path) -> None:
    with separate_database(database_url, tmp_path, "alerts_api") as db, quiet_server(db, tmp_path) as server:
        project = make_project(db)
        rule = messages_rule("http://127.0.0.1:9/hook")
        with server.client(project.read_token) as reader, server.client(project.admin_token) as admin:
            assert reader.post("/api/v1/alerts", json=rule).status_code == 403
            refused = admin.post("/api/v1/alerts", json=rule | {"channel": {"url": "http://169.254.169.254/x"}})
            assert refused.status_code == 422 and "channel.url" in refused.text
            pair = rule | {"filter": {"language": "ko", "model": "gpt-4o"}}
            assert admin.post("/api/v1/alerts", json=pair).status_code == 422
            missing = admin.post("/api/v1/alerts", json=rule | {"filter": {"topic_id": "999999"}})
            assert missing.status_code == 422 and "filter.topic_id" in missing.text
            hostile = rule | {"metric": "negative_share", "filter": {"language": "k\x00o"}}
            refused = admin.post("/api/v1/alerts", json=hostile)
            assert refused.status_code == 422 and "language" in refused.text
            bad = rule | {"condition": {"kind": "threshold", "op": "sideways", "threshold": 1}}
            assert admin.post("/api/v1/alerts", json=bad).status_code == 422
            created = admin.post("/api/v1/alerts", json=rule).json()
            assert "secret" not in reader.get(f"/api/v1/alerts/{created['id']}").json()
            assert [r["name"] for r in reader.get("/api/v1/alerts").json()["alerts"]] == ["busy day"]
            assert reader.put(f"/api/v1/alerts/{created['id']}", json=rule).status_code == 403
            changed = admin.put(f"/api/v1/alerts/{created['id']}", json=rule | {"name": "quiet day"})
            assert changed.status_code == 200 and changed.json()["name"] == "quiet day"
            assert reader.delete(f"/api/v1/alerts/{created['id']}").status_code == 403
            assert admin.delete(f"/api/v1/alerts/{created['id']}").status_code == 200
            assert reader.get(f"/api/v1/alerts/{created['id']}").status_code == 404
            assert reader.get("/api/v1/alerts/x1").status_code == 404


def test_the_migration_goes_down_and_up_again(database_url, tmp_path) -> None:
    from alembic import command
    from sqlalchemy import inspect

    from convolens.store import migrate

    with separate_database(database_url, tmp_path, "alerts_migration") as db:
        config = migrate.alembic_config()
        with db.write_engine.connect() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0015")  # 0016: mute, delivery channels, the digest
            conn.commit()
        with db.write_engine.connect() as conn:
            found = inspect(conn)
            assert not {"digest_week", "digest_delivery", "alert_topic"} & set(found.get_table_names())
            assert "detail" not in {c["name"] for c in found.get_columns("alert_event")}  # 0019
            assert "muted_until" not in {c["name"] for c in found.get_columns("alert_rule")}
            assert "digest" not in {c["name"] for c in found.get_columns("membership")}
        with db.write_engine.connect() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0014")
            conn.commit()
        with db.write_engine.connect() as conn:
            assert not {"alert_rule", "alert_event", "alert_delivery"} & set(inspect(conn).get_table_names())
        migrate.upgrade(db)
        with db.write_engine.connect() as conn:
            tables = {"alert_rule", "alert_event", "alert_delivery", "digest_week", "digest_delivery", "alert_topic"}
            assert tables <= set(inspect(conn).get_table_names())
            assert "channel" in {c["name"] for c in inspect(conn).get_columns("alert_delivery")}


def test_an_hourly_rule_decides_each_finished_hour_once(database_url, tmp_path) -> None:
    with separate_database(database_url, tmp_path, "alerts_hour") as db, quiet_server(db, tmp_path) as server:
        project = make_project(db)
        with server.client(project.token) as client:
            send_day(client, day(0), [f"q {k}" for k in range(4)], "h")  # 10:00 to 10:03
        rule = messages_rule("http://127.0.0.1:9/hook", 0, 3) | {"window": "hour", "channel": None}
        with server.client(project.admin_token) as admin:
            rule_id = int(admin.post("/api/v1/alerts", json=rule).json()["id"])
        hour = day(0) + timedelta(hours=9)
        for i in range(3):  # 09:00, 10:00, 11:00
            assert evaluate_due(db, hour + timedelta(hours=i + 1, minutes=10)) == 1
        assert evaluate_due(db, hour + timedelta(hours=3, minutes=10)) == 0
        assert events_of(db, project.pk, rule_id) == [
            (iso(hour + timedelta(hours=1)), "fired"),
            (iso(hour + timedelta(hours=2)), "resolved"),
        ]
        with db.reader() as conn:
            assert alerts.deliveries(conn, project.pk) == []  # no channel, nothing owed


def test_the_worker_decides_and_sends_when_idle(database_url, tmp_path) -> None:
    from convolens.worker.runner import Worker

    with (
        separate_database(database_url, tmp_path, "alerts_worker") as db,
        quiet_server(db, tmp_path) as server,
        webhook_receiver() as receiver,
    ):
        project = make_project(db)
        with server.client(project.token) as client:
            for back in (1, 2):  # the last finished day is yesterday, or the day before just after midnight
                send_day(client, TODAY - timedelta(days=back), ["hello", "again"], "wk")
        with server.client(project.admin_token) as admin:
            assert admin.post("/api/v1/alerts", json=messages_rule(receiver.url, threshold=1)).status_code == 201
        worker = Worker(db, outbound=LOOPBACK, name="idle")
        assert worker.alerts_once() == 2  # one window decided, one webhook sent
        assert worker.alerts_once() == 0
        assert [b["type"] for b in receiver.bodies()] == ["alert.fired"]


def test_slack_payloads_and_the_guard_at_send_time(database_url, tmp_path) -> None:
    from convolens.outbound import OutboundPolicy

    with (
        separate_database(database_url, tmp_path, "alerts_slack") as db,
        quiet_server(db, tmp_path) as server,
        webhook_receiver() as receiver,
    ):
        project = make_project(db)
        with server.client(project.token) as client:
            send_day(client, day(0), ["a", "b"], "s")
        rule = messages_rule(receiver.url, threshold=1) | {"channel": {"url": receiver.url, "format": "slack"}}
        with server.client(project.admin_token) as admin:
            assert admin.post("/api/v1/alerts", json=rule).status_code == 201
        assert evaluate_due(db, after(0)) == 1
        # A worker whose operator allows no private address refuses the loopback URL when it connects.
        assert deliver_due(db, "strict", after(0), OutboundPolicy()) == 1
        with db.reader() as conn:
            (refused,) = alerts.deliveries(conn, project.pk)
        assert refused["status"] == "pending" and "not public" in refused["last_error"]
        assert receiver.requests == []
        assert deliver_due(db, "w", after(0) + timedelta(minutes=1), LOOPBACK) == 1
        (body,) = receiver.bodies()
        assert list(body) == ["text"] and body["text"].startswith("[FIRING] busy day: messages = 2")


def test_the_due_window_is_aligned_to_the_rule_s_window() -> None:
    from convolens.worker.alerting import due_window

    t = datetime(2026, 3, 10, 13, 0)

    def rule(window: str, through: datetime | None) -> alerts.Rule:
        return alerts.Rule(1, 1, "r", {"window": window}, "s", True, False, None, through, t, t)

    assert due_window(rule("day", None), datetime(2026, 3, 12, 0, 4)) == datetime(2026, 3, 10)  # not yet settled
    assert due_window(rule("day", None), datetime(2026, 3, 12, 0, 6)) == datetime(2026, 3, 11)
    # An hourly rule edited into a daily one goes on with the next whole day, not at 13:00.
    assert due_window(rule("day", t), datetime(2026, 3, 12, 1)) == datetime(2026, 3, 11)
    assert due_window(rule("hour", t), datetime(2026, 3, 10, 15, 6)) == datetime(2026, 3, 10, 14)
    assert due_window(rule("hour", t), datetime(2026, 3, 10, 14, 6)) is None
    # After a long stop: only the last 48 windows are caught up on.
    assert due_window(rule("hour", t), datetime(2026, 3, 20, 0, 6)) == datetime(2026, 3, 18, 0)  # to 19th 23:00


def test_a_refusal_quotes_the_receiver_on_one_bounded_line() -> None:
    """The settings page shows what a receiver answered as its words, not ours, however it is shaped."""
    from convolens.alerts.webhook import REFUSAL_BODY_CHARS, refusal

    assert refusal(502, "Bad Gateway", "") == "HTTP 502 Bad Gateway; the receiver sent no body"
    assert refusal(418, "", "  \n ") == "HTTP 418; the receiver sent no body"
    html = "<html>\n  <body>\n    <h1>Service   Unavailable</h1>" + " padding" * 10_000
    said = refusal(503, "Service Unavailable", html)
    assert said.startswith(
        'HTTP 503 Service Unavailable; the receiver said: "<html> <body> <h1>Service Unavailable</h1>'
    )
    assert (
        "\n" not in said
        and len(said) == len('HTTP 503 Service Unavailable; the receiver said: ""') + REFUSAL_BODY_CHARS
    )
