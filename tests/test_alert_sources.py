"""Alert rules on figures the rollups do not hold, through the real server and the workers' own steps: a
conversation-metadata filter (read from the base tables over each window), an evaluation's pass rate
(the latest run of a test set; an online evaluation's verdicts per window), and newly emerging topics,
each topic told of once with no "resolved". Each fires on the day made for it and on no other, and the
preview fires on the same days as the worker."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import product

import httpx
import pytest
from sqlalchemy import insert, select, update

from alert_support import LOOPBACK, label, quiet_server, webhook_receiver
from conftest import make_project, separate_database
from convolens.alerts.measure import measure, summarized
from convolens.store import alerts, topics
from convolens.store.db import Database
from convolens.store.tables import (
    alert_rule,
    alert_topic,
    eval_item,
    eval_run,
    message,
    online_eval_result,
    online_eval_rule,
    test_case,
    test_set,
)
from convolens.timeutil import iso, utcnow
from convolens.worker.alerting import deliver_due, evaluate_due

TODAY = datetime.combine(utcnow().date(), datetime.min.time())
BASE = TODAY - timedelta(days=22)  # inside the preview's 30 days
DAYS = 20


def day(i: int) -> datetime:
    return BASE + timedelta(days=i)


def send(client: httpx.Client, cid: str, when: datetime, n: int, metadata: dict | None = None) -> None:
    """Conversation ``cid`` of ``n`` user messages on ``when``'s day (from 10:00, a minute apart)."""
    events: list[dict] = [{"type": "conversation", "id": cid, "user_id": f"u-{cid}"}]
    if metadata:
        events[0]["metadata"] = metadata
    events += [
        {"type": "message", "conversation_id": cid, "id": f"{cid}-{k}", "role": "user", "content": f"q {cid} {k}",
         "timestamp": (when + timedelta(hours=10, minutes=k)).isoformat() + "Z"}
        for k in range(n)
    ]  # fmt: skip
    response = client.post("/api/v1/ingest", json={"events": events})
    assert response.status_code == 202, response.text


def rule(metric: str, op: str, threshold: float, **extra: object) -> dict:
    return {"name": metric, "metric": metric, "window": "day", "cooldown_minutes": 0,
            "condition": {"kind": "threshold", "op": op, "threshold": threshold}, **extra}  # fmt: skip


def worker_events(db: Database, project_pk: int, rule_pk: int, days: range) -> list[tuple[str, str]]:
    """Step the workers day by day over ``days`` (the rule decided from the first) and return (window
    start, event) of every event, oldest first."""
    with db.writer() as conn:
        conn.execute(update(alert_rule).where(alert_rule.c.pk == rule_pk).values(evaluated_through=day(days.start - 1)))
    for i in days:
        now = day(i + 1) + timedelta(hours=1)
        assert evaluate_due(db, now) == 1
        deliver_due(db, "w", now, LOOPBACK)
    with db.reader() as conn:
        return [(iso(r["window_start"]), r["event"]) for r in reversed(alerts.history(conn, project_pk, rule_pk))]


def preview_events(admin: httpx.Client, body: dict) -> list[tuple[str, str]]:
    found = admin.post("/api/v1/alerts/preview", json=body)
    assert found.status_code == 200, found.text
    return [(w["start"], w["event"]) for w in found.json()["windows"] if w["event"] and w["start"] >= iso(day(0))]


def test_a_metadata_filter_counts_only_those_conversations(database_url, tmp_path) -> None:
    with (
        separate_database(database_url, tmp_path, "alert_meta") as db,
        quiet_server(db, tmp_path) as server,
        webhook_receiver() as receiver,
    ):
        project = make_project(db)
        with server.client(project.token) as client:
            for i in range(8):
                # Pro users are busy on day 3 only; free users on day 5 only, with more messages overall.
                send(client, f"pro-{i}", day(i), 9 if i == 3 else 2, {"plan": "pro", "seats": 3})
                send(client, f"free-{i}", day(i), 30 if i == 5 else 6, {"plan": "free"})
                send(client, f"none-{i}", day(i), 12)  # no metadata at all
        body = rule("messages", "above", 5, filter={"metadata_key": "plan", "metadata_value": "pro"},
                    channel={"url": receiver.url, "format": "json"})  # fmt: skip
        with server.client(project.admin_token) as admin:
            created = admin.post("/api/v1/alerts", json=body)
            assert created.status_code == 201, created.text
            assert created.json()["filter"]["metadata_key"] == "plan"
            expected = [(iso(day(3)), "fired"), (iso(day(4)), "resolved")]
            assert preview_events(admin, body) == expected
            # An anomaly condition on the slice (the preview reads each window once for its 3 look-backs).
            unusual = {"kind": "anomaly", "op": "above", "threshold": 2, "periods": 3, "min_volume": 1}
            assert preview_events(admin, body | {"condition": unusual}) == expected
            # A number in the metadata compares as its text.
            seats = body | {"filter": {"metadata_key": "seats", "metadata_value": "3"}}
            assert preview_events(admin, seats) == expected
            free = body | {"filter": {"metadata_key": "plan", "metadata_value": "free"}}
            assert preview_events(admin, free | {"condition": rule("messages", "above", 20)["condition"]}) == [
                (iso(day(5)), "fired"),
                (iso(day(6)), "resolved"),
            ]
            # Refused, naming the field: half a pair, a key that is no JSON path segment, a second dimension.
            for bad, field in (
                ({"metadata_key": "plan"}, "metadata_value go together"),
                ({"metadata_key": 'pl"an', "metadata_value": "pro"}, "filter.metadata_key"),
                ({"metadata_key": "plan", "metadata_value": "pro", "language": "en"}, "two dimensions"),
            ):
                refused = admin.post("/api/v1/alerts", json=body | {"filter": bad})
                assert refused.status_code == 422 and field in refused.text, (bad, refused.text)
        assert worker_events(db, project.pk, int(created.json()["id"]), range(8)) == expected
        assert [b["type"] for b in receiver.bodies()] == ["alert.fired", "alert.resolved"]
        assert receiver.bodies()[0]["value"] == 9.0


def test_a_metadata_slice_reads_the_same_figures_as_the_rollups_summary(database_url, tmp_path) -> None:
    """The one-statement slice (alerts/measure.py) against the rollups' own summary with the metadata key
    as its dimension, for every metric it serves: tenants, users, models, tokens, ratings, sentiment."""
    with separate_database(database_url, tmp_path, "alert_meta_same") as db, quiet_server(db, tmp_path) as server:
        project = make_project(db)
        with server.client(project.token) as client:
            for c in range(12):
                events: list[dict] = [
                    {
                        "type": "conversation",
                        "id": f"s{c}",
                        "user_id": f"u{c % 5}",
                        "tenant_id": ["acme", "globex"][c % 2],
                        "metadata": {"plan": ["pro", "free", "pro"][c % 3], "seats": c % 4},
                    }
                ]
                for k in range(c % 4 + 1):
                    at = (day(1) + timedelta(hours=c, minutes=k)).isoformat() + "Z"
                    events += [
                        {"type": "message", "conversation_id": f"s{c}", "id": f"s{c}-{k}-q", "role": "user",
                         "content": "q", "timestamp": at},
                        {"type": "message", "conversation_id": f"s{c}", "id": f"s{c}-{k}-a", "role": "assistant",
                         "content": "a", "timestamp": at, "model": ["gpt-4o", "gpt-4o-mini"][k % 2],
                         "input_tokens": 100 * c, "output_tokens": 10 * k, "rating": [1, -1, None][(c + k) % 3]},
                    ]  # fmt: skip
                assert client.post("/api/v1/ingest", json={"events": events}).status_code == 202
        with db.writer() as conn:
            conn.execute(update(message).where(message.c.role == "user").values(sentiment=(message.c.pk % 5) / 5.0))
        metrics = ("messages", "conversations", "active_users", "avg_sentiment", "thumbs_down_share", "cost",
                   "cost_per_user")  # fmt: skip
        with db.reader() as conn:
            for metric, (key, value), tenant in product(metrics, (("plan", "pro"), ("seats", "2")), (None, "acme")):
                definition = {"metric": metric, "filter": {"metadata_key": key, "metadata_value": value,
                                                           "tenant_id": tenant}}  # fmt: skip
                fast = measure(conn, project.pk, definition, day(1), day(2))
                slow = summarized(conn, project.pk, metric, f"metadata.{key}", value, tenant, day(1), day(2))
                assert fast.volume == slow.volume and fast.volume > 0, (metric, key, tenant)
                assert fast.value == pytest.approx(slow.value), (metric, key, tenant)


def test_negative_share_by_metadata_and_language(database_url, tmp_path) -> None:
    with separate_database(database_url, tmp_path, "alert_meta_neg") as db, quiet_server(db, tmp_path) as server:
        project = make_project(db)
        with server.client(project.token) as client:
            for i in range(6):
                send(client, f"pro-{i}", day(i), 4, {"plan": "pro", "tier": 2})
                send(client, f"free-{i}", day(i), 4, {"plan": "free"})
        for i in range(6):
            # Day 2: pro users unhappy; day 4: free users unhappy.
            for plan, bad_day in (("pro", 2), ("free", 4)):
                mood = "negative" if i == bad_day else "positive"
                assert label(db, project.pk, f"{plan}-{i}-", language="ko", sentiment=mood, topic_pk=None) == 4
        body = rule("negative_share", "above", 0.5, filter={"metadata_key": "plan", "metadata_value": "pro",
                                                            "language": "ko"})  # fmt: skip
        with server.client(project.admin_token) as admin:
            assert preview_events(admin, body) == [(iso(day(2)), "fired"), (iso(day(3)), "resolved")]
            tier = body | {"filter": {"metadata_key": "tier", "metadata_value": "2", "language": "ko"}}
            assert preview_events(admin, tier) == [(iso(day(2)), "fired"), (iso(day(3)), "resolved")]  # a number
            english = body | {"filter": body["filter"] | {"language": "en"}}
            assert preview_events(admin, english) == []


def _run(conn, project_pk: int, set_pk: int, case_pks: list[int], finished: datetime, passed: int) -> None:  # type: ignore[no-untyped-def]
    run_pk = conn.execute(
        insert(eval_run).values(
            public_id=f"run{set_pk}{finished:%m%d%H}", project_pk=project_pk, test_set_pk=set_pk, iterations=1,
            status="completed", total=len(case_pks), created_at=finished - timedelta(minutes=5), finished_at=finished,
        )
    ).inserted_primary_key[0]  # fmt: skip
    conn.execute(
        insert(eval_item),
        [{"run_pk": run_pk, "test_case_pk": c, "iteration": 1, "done": True, "attempts": 1, "passed": k < passed,
          "result": {"evaluations": []}, "finished_at": finished} for k, c in enumerate(case_pks)],
    )  # fmt: skip


def test_the_pass_rate_of_a_test_set_s_latest_run(database_url, tmp_path) -> None:
    with separate_database(database_url, tmp_path, "alert_eval") as db, quiet_server(db, tmp_path) as server:
        project = make_project(db)
        other = make_project(db)
        with db.writer() as conn:
            sets = {}
            for owner, name in ((project.pk, "support"), (project.pk, "billing"), (other.pk, "support")):
                pk = conn.execute(
                    insert(test_set).values(project_pk=owner, name=name, version=1, evaluators=[], case_count=10,
                                            created_at=day(0))
                ).inserted_primary_key[0]  # fmt: skip
                cases = [
                    conn.execute(
                        insert(test_case).values(test_set_pk=pk, position=k, name=f"c{k}", body={"messages": []})
                    ).inserted_primary_key[0]
                    for k in range(10)
                ]
                sets[(owner, name)] = (pk, cases)
            pk, cases = sets[(project.pk, "support")]
            _run(conn, project.pk, pk, cases, day(1) + timedelta(hours=3), 10)
            _run(conn, project.pk, pk, cases, day(3) + timedelta(hours=3), 10)
            _run(conn, project.pk, pk, cases, day(3) + timedelta(hours=9), 8)  # the day's latest: 80%
            _run(conn, project.pk, pk, cases, day(5) + timedelta(hours=2), 7)  # 70% …
            _run(conn, project.pk, pk, cases, day(5) + timedelta(hours=4), 10)  # … but the latest passes all
            _run(conn, project.pk, pk, cases, day(7) + timedelta(hours=1), 9)
            billing_pk, billing_cases = sets[(project.pk, "billing")]
            _run(conn, project.pk, billing_pk, billing_cases, day(2) + timedelta(hours=1), 1)  # another set
            other_pk, other_cases = sets[(other.pk, "support")]
            _run(conn, other.pk, other_pk, other_cases, day(6) + timedelta(hours=1), 0)  # another project
        body = rule("eval_pass_rate", "below", 0.9, filter={"test_set": "support"})
        with server.client(project.admin_token) as admin:
            # Days without a run are undecided: the firing on day 3 resolves on day 5, the next run.
            expected = [(iso(day(3)), "fired"), (iso(day(5)), "resolved")]
            assert preview_events(admin, body) == expected
            windows = {w["start"]: w for w in admin.post("/api/v1/alerts/preview", json=body).json()["windows"]}
            assert windows[iso(day(3))]["value"] == 0.8 and windows[iso(day(3))]["volume"] == 10
            assert windows[iso(day(4))]["value"] is None and windows[iso(day(7))]["value"] == 0.9
            for bad, said in (
                ({}, "needs filter.test_set"),
                ({"test_set": "nope"}, "no such test set"),
                ({"test_set": "support", "language": "en"}, "takes no other filter"),
            ):
                refused = admin.post("/api/v1/alerts", json=body | {"filter": bad})
                assert refused.status_code == 422 and said in refused.text, refused.text
            refused = admin.post("/api/v1/alerts", json=rule("messages", "above", 1, filter={"test_set": "support"}))
            assert refused.status_code == 422 and "only for eval_pass_rate" in refused.text
            created = admin.post("/api/v1/alerts", json=body)
            assert created.status_code == 201, created.text
        assert worker_events(db, project.pk, int(created.json()["id"]), range(8)) == expected


def test_an_online_evaluation_s_pass_rate_per_window(database_url, tmp_path) -> None:
    with separate_database(database_url, tmp_path, "alert_online") as db, quiet_server(db, tmp_path) as server:
        project = make_project(db)
        other = make_project(db)
        with server.client(project.token) as client:
            for i in range(6):
                send(client, f"c-{i}", day(i), 10)
        with db.writer() as conn:
            rule_pk, other_rule = (
                conn.execute(
                    insert(online_eval_rule).values(project_pk=owner, evaluator={"evaluator": "llm_judge"},
                                                    sample_rate=1.0, cursor=0, created_at=day(0))
                ).inserted_primary_key[0]
                for owner in (project.pk, other.pk)
            )  # fmt: skip
            for i in range(6):
                rows = conn.execute(
                    select(message.c.pk, message.c.conversation_pk, message.c.created_at)
                    .where(message.c.project_pk == project.pk, message.c.id.startswith(f"c-{i}-"))
                    .order_by(message.c.pk)
                ).all()
                failing = 6 if i == 4 else 1  # day 4: 6 of 10 judged negative
                conn.execute(
                    insert(online_eval_result),
                    [{"rule_pk": rule_pk, "message_pk": r.pk, "conversation_pk": r.conversation_pk,
                      "created_at": r.created_at, "outcome": "negative" if k < failing else "positive"}
                     for k, r in enumerate(rows)],
                )  # fmt: skip
        body = rule("online_pass_rate", "below", 0.8, filter={"online_eval_id": str(rule_pk)})
        with server.client(project.admin_token) as admin:
            expected = [(iso(day(4)), "fired"), (iso(day(5)), "resolved")]
            assert preview_events(admin, body) == expected
            windows = {w["start"]: w for w in admin.post("/api/v1/alerts/preview", json=body).json()["windows"]}
            assert windows[iso(day(4))]["value"] == 0.4 and windows[iso(day(0))]["value"] == 0.9
            foreign = admin.post("/api/v1/alerts", json=body | {"filter": {"online_eval_id": str(other_rule)}})
            assert foreign.status_code == 422 and "no such online evaluation" in foreign.text
            created = admin.post("/api/v1/alerts", json=body)
            assert created.status_code == 201, created.text
        assert worker_events(db, project.pk, int(created.json()["id"]), range(6)) == expected


def test_newly_emerging_topics_are_told_once_each(database_url, tmp_path) -> None:
    with (
        separate_database(database_url, tmp_path, "alert_emerging") as db,
        quiet_server(db, tmp_path) as server,
        webhook_receiver() as receiver,
    ):
        project = make_project(db)
        with db.writer() as conn:
            made = {
                name: topics.create(conn, project.pk, name=name, kind=kind, status=status,
                                    definition={"keywords": [name.lower()]}, now=day(0))
                for name, kind, status in (("Refunds", "keyword", "active"), ("Login loops", "suggested", "suggested"),
                                           ("Steady", "keyword", "active"), ("Small", "keyword", "active"))
            }  # fmt: skip
        # (topic, day, messages): Refunds appears on day 10 with 12; Login loops had 6 a week before and
        # jumps to 13 on day 12 (doubled); Steady has 10 every week; Small appears with 4 (under the floor).
        plan = [("Refunds", 10, 12), ("Login loops", 5, 6), ("Login loops", 12, 13), ("Small", 11, 4)]
        plan += [("Steady", d, 10) for d in range(0, DAYS, 7)]
        with server.client(project.token) as client:
            send(client, "early", day(0), 1)  # the project has history before each week looked at
            for name, i, n in plan:
                send(client, f"{name[:5]}-{i}", day(i), n)
        for name, i, n in plan:
            assert label(db, project.pk, f"{name[:5]}-{i}-", language="en", sentiment="neutral",
                         topic_pk=made[name]) == n  # fmt: skip
        body = rule("emerging_topics", "above", 0, channel={"url": receiver.url, "format": "slack"})
        with server.client(project.admin_token) as admin:
            bad = admin.post("/api/v1/alerts", json=body | {"filter": {"language": "en"}})
            assert bad.status_code == 422 and "takes no filter" in bad.text
            # Refunds stays emerging through day 16 and Login loops through day 18: each is told once, and
            # a news rule sends no "resolved".
            expected = [(iso(day(10)), "fired"), (iso(day(12)), "fired")]
            assert preview_events(admin, body) == expected
            # Within a 3-day cooldown Login loops is held back, not lost: told once the cooldown ends.
            held = [(iso(day(10)), "fired"), (iso(day(12)), "suppressed"), (iso(day(13)), "fired")]
            assert preview_events(admin, body | {"cooldown_minutes": 3 * 24 * 60}) == held
            created = admin.post("/api/v1/alerts", json=body)
            assert created.status_code == 201, created.text
            rule_pk = int(created.json()["id"])
        assert worker_events(db, project.pk, rule_pk, range(DAYS)) == expected
        texts = [b["text"] for b in receiver.bodies()]
        assert len(texts) == 2 and ": Refunds <http" in texts[0] and ": Login loops <http" in texts[1]
        with db.reader() as conn:
            told = conn.execute(select(alert_topic.c.topic_pk, alert_topic.c.window_start)).all()
            events = alerts.history(conn, project.pk, rule_pk)
        assert sorted(told) == sorted([(made["Refunds"], day(10)), (made["Login loops"], day(12))])
        with server.client(project.read_token) as reader:
            listed = reader.get(f"/api/v1/alerts/{rule_pk}/history").json()["events"]
        assert [[t["name"] for t in e["topics"]] for e in listed] == [["Login loops"], ["Refunds"]]
        assert [e["detail"]["topics"] for e in reversed(events)] == [
            [{"id": str(made["Refunds"]), "name": "Refunds"}],
            [{"id": str(made["Login loops"]), "name": "Login loops"}],
        ]
