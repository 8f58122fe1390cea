"""Alert rule features beyond the first increment, each through the real server: mute (decided, recorded as
muted, nothing sent), the Microsoft Teams payload, a change against the same weekday last week, cost and
cost-per-user from the token counts, a tenant filter, and pruning of old decided windows."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
from sqlalchemy import insert, select, update

from alert_support import LOOPBACK, label, quiet_server, send_day, webhook_receiver
from conftest import make_project, separate_database
from convolens.alerts import webhook
from convolens.store import alerts
from convolens.store.tables import alert_delivery, alert_event, alert_rule
from convolens.timeutil import iso, utcnow
from convolens.worker.alerting import deliver_due, evaluate_due

TODAY = datetime.combine(utcnow().date(), datetime.min.time())
BASE = TODAY - timedelta(days=20)


def day(i: int) -> datetime:
    return BASE + timedelta(days=i)


def rule(metric: str = "messages", threshold: float = 1, **extra: object) -> dict:
    return {"name": "r", "metric": metric, "condition": {"kind": "threshold", "op": "above", "threshold": threshold},
            **extra}  # fmt: skip


def fired_days(admin: httpx.Client, body: dict) -> list[str]:
    preview = admin.post("/api/v1/alerts/preview", json=body)
    assert preview.status_code == 200, preview.text
    return preview.json()["fired"]


def test_a_muted_rule_is_decided_and_recorded_but_sends_nothing(database_url, tmp_path) -> None:
    with (
        separate_database(database_url, tmp_path, "alert_mute") as db,
        quiet_server(db, tmp_path) as server,
        webhook_receiver() as receiver,
    ):
        project = make_project(db)
        with server.client(project.token) as client:
            for i, n in enumerate([3, 0, 3]):
                if n:
                    send_day(client, day(i), [f"q{k}" for k in range(n)], "m")
        with server.client(project.admin_token) as admin:
            body = rule(channel={"url": receiver.url, "format": "teams"}, cooldown_minutes=0)
            created = admin.post("/api/v1/alerts", json=body).json()
            rule_id, first_secret = created["id"], created["secret"]
            with db.writer() as conn:  # decided from day 0 on
                conn.execute(update(alert_rule).values(evaluated_through=day(-1)))
            past = admin.post(f"/api/v1/alerts/{rule_id}/mute", json={"until": iso(utcnow() - timedelta(hours=1))})
            assert past.status_code == 422 and "until" in past.text
            until = utcnow() + timedelta(days=2)
            muted = admin.post(f"/api/v1/alerts/{rule_id}/mute", json={"until": iso(until)})
            assert muted.status_code == 200 and muted.json()["muted_until"] is not None
            for i in range(2):  # day 0 fires, day 1 resolves: both while muted
                now = day(i + 1) + timedelta(minutes=10)
                assert evaluate_due(db, now) == 1
                assert deliver_due(db, "w", now, LOOPBACK) == 0
            history = admin.get(f"/api/v1/alerts/{rule_id}/history").json()["events"]
            assert [(e["event"], e["muted"], e["deliveries"]) for e in history] == [
                ("resolved", True, []), ("fired", True, [])
            ]  # fmt: skip
            assert receiver.requests == []
            assert admin.post(f"/api/v1/alerts/{rule_id}/mute", json={"until": None}).json()["muted_until"] is None
            with server.client(project.read_token) as reader:
                assert reader.post(f"/api/v1/alerts/{rule_id}/secret").status_code == 403
            secret = admin.post(f"/api/v1/alerts/{rule_id}/secret").json()["secret"]
            assert len(secret) == 64 and secret != first_secret
            now = day(3) + timedelta(minutes=10)  # day 2 fires again, unmuted: sent, as a Teams card
            assert evaluate_due(db, now) == 1
            assert deliver_due(db, "w", now, LOOPBACK) == 1
        ((headers, raw),) = receiver.requests
        stamp, signed = headers["x-convolens-timestamp"], headers["x-convolens-signature"]
        assert webhook.verify(secret, stamp, raw, signed) and not webhook.verify(first_secret, stamp, raw, signed)
        (card,) = receiver.bodies()
        assert card["type"] == "message"
        (attachment,) = card["attachments"]
        assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
        content = attachment["content"]
        assert content["type"] == "AdaptiveCard" and content["body"][0]["text"].startswith("[FIRING] r: messages = 3")
        assert content["actions"][0]["url"].endswith(f"/p/{project.name}/alerts/{rule_id}")


def test_change_against_the_same_weekday_last_week(database_url, tmp_path) -> None:
    with separate_database(database_url, tmp_path, "alert_weekday") as db, quiet_server(db, tmp_path) as server:
        project = make_project(db)
        with server.client(project.token) as client:
            # Day 0 is quiet (2), days 6 and 7 are busy (6 each): day 7 doubles its weekday of a week before
            # but equals the day before it.
            for i, n in ((0, 2), (6, 6), (7, 6)):
                send_day(client, day(i), [f"q{k}" for k in range(n)], "w")
        change = {"kind": "change", "op": "above", "threshold": 100, "min_volume": 1}
        with server.client(project.admin_token) as admin:
            weekly = rule(condition=change | {"against": "week_before"})
            previous = rule(condition=change | {"against": "previous"})
            assert fired_days(admin, weekly) == [iso(day(7))]
            assert fired_days(admin, previous) == []  # day 6 against day 5 (nothing): undecided
            bad = admin.post("/api/v1/alerts", json=rule(condition=change | {"against": "last_year"}))
            assert bad.status_code == 422 and "condition.against" in bad.text


def test_cost_and_cost_per_user_from_token_counts(database_url, tmp_path) -> None:
    with separate_database(database_url, tmp_path, "alert_cost") as db, quiet_server(db, tmp_path) as server:
        project = make_project(db)
        with server.client(project.token) as client:
            for i, tokens in ((2, 1_000_000), (4, 10_000_000)):  # gpt-4o-mini: $0.15 per million input tokens
                cid = f"cost-{i}"
                events = [
                    {"type": "conversation", "id": cid, "user_id": f"u{i}"},
                    {"type": "message", "conversation_id": cid, "id": f"{cid}-a", "role": "assistant",
                     "content": "answer", "model": "gpt-4o-mini", "input_tokens": tokens, "output_tokens": 0,
                     "timestamp": (day(i) + timedelta(hours=9)).isoformat() + "Z"},
                ]  # fmt: skip
                assert client.post("/api/v1/ingest", json={"events": events}).status_code == 202
        with server.client(project.admin_token) as admin:
            assert fired_days(admin, rule("cost", 1.0)) == [iso(day(4))]  # $1.50 on day 4, $0.15 on day 2
            assert fired_days(admin, rule("cost", 0.1)) == [iso(day(2)), iso(day(4))]  # $0 on day 3 between
            assert fired_days(admin, rule("cost_per_user", 1.0)) == [iso(day(4))]


def test_a_tenant_filter(database_url, tmp_path) -> None:
    with separate_database(database_url, tmp_path, "alert_tenant") as db, quiet_server(db, tmp_path) as server:
        project = make_project(db)
        with server.client(project.token) as client:
            for i, tenant in ((1, "acme"), (3, "globex")):
                cid = f"t-{i}"
                events = [{"type": "conversation", "id": cid, "tenant_id": tenant, "user_id": f"u{i}"}]
                events += [
                    {"type": "message", "conversation_id": cid, "id": f"{cid}-{k}", "role": "user", "content": "hi",
                     "timestamp": (day(i) + timedelta(hours=9, minutes=k)).isoformat() + "Z"}
                    for k in range(3)
                ]  # fmt: skip
                assert client.post("/api/v1/ingest", json={"events": events}).status_code == 202
        with server.client(project.admin_token) as admin:
            assert fired_days(admin, rule(threshold=2, filter={"tenant_id": "globex"})) == [iso(day(3))]
            assert fired_days(admin, rule(threshold=2)) == [iso(day(1)), iso(day(3))]
            for prefix in ("t-1", "t-3"):
                label(db, project.pk, prefix, language="en", sentiment="negative", topic_pk=None)
            negative = rule("negative_share", 0.5, filter={"tenant_id": "acme", "language": "en"})
            assert fired_days(admin, negative) == [iso(day(1))]


def test_old_decided_windows_are_pruned(database_url, tmp_path) -> None:
    with separate_database(database_url, tmp_path, "alert_prune") as db:
        project = make_project(db)
        now = datetime(2026, 6, 1)
        with db.writer() as conn:
            found = alerts.create(conn, project.pk, "r", {**rule(), "window": "day"}, True, now)
            ages = {"quiet-recent": (10, None), "quiet-old": (40, None), "fired-old": (41, "fired"),
                    "fired-ancient": (500, "fired")}  # fmt: skip
            for days_ago, event in ages.values():
                start = now - timedelta(days=days_ago + 1)
                pk = conn.execute(
                    insert(alert_event).values(
                        rule_pk=found.pk, project_pk=project.pk, window_start=start,
                        window_end=start + timedelta(days=1), value=1.0, volume=1, holds=True, event=event,
                        created_at=now,
                    )
                ).inserted_primary_key[0]  # fmt: skip
                if event:
                    conn.execute(insert(alert_delivery).values(
                        event_pk=pk, project_pk=project.pk, channel="webhook", status="delivered", attempts=1,
                        next_attempt_at=now, created_at=now))  # fmt: skip
            assert alerts.prune(conn, now) == 2
            left = conn.execute(select(alert_event.c.event, alert_event.c.window_end)).all()
            assert sorted((e or "", (now - end).days) for e, end in left) == [("", 10), ("fired", 41)]
            assert len(conn.execute(select(alert_delivery.c.pk)).all()) == 1


def test_a_rule_on_the_enrichment_backlog(database_url, tmp_path) -> None:
    from convolens.store.tables import message

    with separate_database(database_url, tmp_path, "alert_backlog") as db, quiet_server(db, tmp_path) as server:
        project = make_project(db)
        with server.client(project.token) as client:  # no worker runs here: they stay waiting
            send_day(client, day(0), [f"q{k}" for k in range(5)], "b")  # 10:00 to 10:04
        with server.client(project.admin_token) as admin:
            body = rule("backlog", 3, window="hour", cooldown_minutes=0)
            with_filter = admin.post("/api/v1/alerts", json=body | {"filter": {"language": "en"}})
            assert with_filter.status_code == 422 and "backlog takes no filter" in with_filter.text
            rule_id = int(admin.post("/api/v1/alerts", json=body).json()["id"])
        with db.writer() as conn:
            conn.execute(update(alert_rule).values(evaluated_through=day(0) + timedelta(hours=8)))
        assert evaluate_due(db, day(0) + timedelta(hours=10, minutes=6)) == 1  # 09:00: nothing before 10:00
        assert evaluate_due(db, day(0) + timedelta(hours=11, minutes=6)) == 1  # 10:00: 5 waiting
        with db.writer() as conn:  # the worker catches up
            conn.execute(update(message).where(message.c.project_pk == project.pk).values(enriched_version=1))
        assert evaluate_due(db, day(0) + timedelta(hours=12, minutes=6)) == 1  # 11:00: none
        with db.reader() as conn:
            events = [(e["event"], e["value"]) for e in reversed(alerts.history(conn, project.pk, rule_id))]
        assert events == [("fired", 5.0), ("resolved", 0.0)]


def test_a_rule_on_new_suggested_topics(database_url, tmp_path) -> None:
    from convolens.store import topics

    with separate_database(database_url, tmp_path, "alert_new_topics") as db, quiet_server(db, tmp_path) as server:
        project = make_project(db)
        with db.writer() as conn:  # what the clustering stores: suggestions first found on days 2 and 5
            for name, i in (("Refund delays", 2), ("Login loops", 5), ("Dark mode", 5)):
                topics.create(conn, project.pk, name=name, kind="suggested", status="suggested",
                              definition={"keywords": [], "size": 40}, now=day(i) + timedelta(hours=3))  # fmt: skip
            topics.create(conn, project.pk, name="Billing", kind="keyword", definition={"keywords": ["bill"]},
                          now=day(7))  # defined by a person: not a suggestion  # fmt: skip
        with server.client(project.admin_token) as admin:
            body = rule("new_suggested_topics", 0)
            assert fired_days(admin, body) == [iso(day(2)), iso(day(5))]
            preview = admin.post("/api/v1/alerts/preview", json=body).json()["windows"]
            assert {w["start"]: w["value"] for w in preview}[iso(day(5))] == 2.0
            bad = admin.post("/api/v1/alerts", json=body | {"filter": {"tenant_id": "acme"}})
            assert bad.status_code == 422 and "takes no filter" in bad.text
