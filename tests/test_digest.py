"""The weekly digest on a seeded project: last week's figures against the week before, the topics that
grew and shrank most, where users were least happy, new topics, each linked into the dashboard; sent once
per project and week however many workers try (PostgreSQL and SQLite), by e-mail to the members who
opted in (a real aiosmtpd) and to the project's digest webhook (signed). Leaves digest-email.png (the
HTML e-mail in Chromium) in test-artifacts/screenshots/."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from playwright.sync_api import sync_playwright

from alert_support import LOOPBACK, label, mail_server, quiet_server, send_day, webhook_receiver
from conftest import make_project, separate_database
from convolens.alerts import webhook
from convolens.alerts.digest import WEEK, week_of
from convolens.store import accounts, digests, projects
from convolens.store.db import Database
from convolens.timeutil import utcnow
from convolens.worker.digest import deliver_due, due_week, record_due
from web_support import add_account, launch_chromium, screenshot

LAST_WEEK = week_of(utcnow()) - WEEK  # the last finished week
WEEK_BEFORE = LAST_WEEK - WEEK
NOW = LAST_WEEK + WEEK + timedelta(hours=2)  # Monday 02:00 after it
PUBLIC = "https://cl.example"

# (topic, messages in the week before, in last week, negative of last week's)
SEED = {"Billing": (2, 6, 4), "Login": (5, 1, 0), "Refunds": (0, 4, 1), "Pricing": (3, 3, 0)}


def seed(db: Database, server, project) -> dict[str, int]:  # type: ignore[no-untyped-def]
    pks = {}
    with server.client(project.admin_token) as admin:
        for name in SEED:
            created = admin.post("/api/v1/topics", json={"name": name, "kind": "keyword", "keywords": [name.lower()]})
            assert created.status_code == 201, created.text
            pks[name] = int(created.json()["id"])
    with server.client(project.token) as client:
        for name, (before, last, negative) in SEED.items():
            for week, count in ((WEEK_BEFORE, before), (LAST_WEEK, last)):
                if count:
                    tag = f"{name}-{week:%m%d}"
                    send_day(
                        client, week + timedelta(days=2), [f"{name.lower()} question {k}" for k in range(count)], tag
                    )
                    mood = "negative" if week == LAST_WEEK and negative else "positive"
                    day_prefix = f"{tag}-{week + timedelta(days=2):%Y%m%d}"
                    label(db, project.pk, day_prefix, language="en", sentiment="positive", topic_pk=pks[name])
                    if mood == "negative":  # the first ``negative`` of last week's messages read as negative
                        for k in range(negative):
                            label(
                                db, project.pk, f"{day_prefix}-{k}", language="en", sentiment="negative", topic_pk=None
                            )
    return pks


def test_due_week_waits_for_the_week_to_settle() -> None:
    monday = datetime(2026, 11, 30)
    assert due_week(monday + timedelta(minutes=30)) == monday - 2 * WEEK  # last week not settled yet
    assert due_week(monday + timedelta(hours=1, minutes=1)) == monday - WEEK
    assert due_week(monday + timedelta(days=6)) == monday - WEEK


def test_the_digest_says_what_changed_and_is_sent_once(database_url, tmp_path) -> None:
    with (
        separate_database(database_url, tmp_path, "digest") as db,
        quiet_server(db, tmp_path) as server,
        mail_server() as box,
        webhook_receiver() as hook,
    ):
        project = make_project(db)
        pks = seed(db, server, project)
        reader = add_account(db, f"reader-{project.name}@example.com", project.name, "viewer")
        add_account(db, f"quiet-{project.name}@example.com", project.name, "admin")  # not opted in
        with db.writer() as conn:
            account_pk = accounts.account_pk(conn, reader.email)
            assert account_pk is not None
            accounts.set_digest(conn, account_pk, project.pk, True)
            projects.set_project_setting(
                conn, project.name, digests.WEBHOOK_SETTING, {"url": hook.url, "format": "json", "secret": "digest-key"}
            )
        # Two workers at once, then again later: one digest, its deliveries once.
        results: list[int] = []
        workers = [threading.Thread(target=lambda: results.append(record_due(db, NOW))) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        assert sorted(results) == [0, 1]
        assert record_due(db, NOW + timedelta(days=1)) == 0
        assert deliver_due(db, "a", NOW, LOOPBACK, smtp=box.smtp, public_url=PUBLIC) == 2
        assert deliver_due(db, "b", NOW, LOOPBACK, smtp=box.smtp, public_url=PUBLIC) == 0
        with db.reader() as conn:
            sent = digests.sent(conn, project.pk)
        assert sorted((s["channel"], s["status"]) for s in sent) == [("email", "delivered"), ("webhook", "delivered")]

        (mail,) = box.messages
        assert mail["To"] == reader.email
        assert mail["Subject"].startswith(f"[convolens · {project.name}] Your week: ")
        text = mail.get_body(("plain",)).get_content()
        html = mail.get_body(("html",)).get_content()
        ((headers, raw),) = hook.requests
        assert webhook.verify("digest-key", headers["x-convolens-timestamp"], raw, headers["x-convolens-signature"])
        content = hook.bodies()[0]
        assert content["type"] == "digest.weekly"

    kpis = {k["key"]: k for k in content["kpis"]}
    messages_before = sum(before for before, _, _ in SEED.values())
    messages_last = sum(last for _, last, _ in SEED.values())
    assert (kpis["messages"]["this"], kpis["messages"]["previous"]) == (messages_last, messages_before)
    assert (kpis["conversations"]["this"], kpis["conversations"]["previous"]) == (4, 3)
    assert kpis["negative_share"]["this"] == 5 / messages_last and kpis["negative_share"]["previous"] == 0
    assert kpis["negative_share"]["change_text"] == f"{100 * 5 / messages_last:+.1f} pts"  # points, not % of 0
    assert kpis["negative_share"]["tone"] == "bad" and kpis["messages"]["tone"] == "neutral"
    assert kpis["avg_sentiment"]["change_text"].startswith("-") and kpis["avg_sentiment"]["tone"] == "bad"
    assert [t["name"] for t in content["grew"]] == ["Billing"]
    assert [t["name"] for t in content["shrank"]] == ["Login"]
    assert content["grew"][0]["change"] == 200.0
    assert [t["name"] for t in content["unhappy"]] == ["Billing"]  # Refunds: 4 labelled, under the minimum
    assert content["unhappy"][0]["negative_share"] == 4 / 6
    assert [t["name"] for t in content["new_topics"]] == ["Refunds"]
    first, last = LAST_WEEK.date().isoformat(), (LAST_WEEK + timedelta(days=6)).date().isoformat()
    billing_link = f"{PUBLIC}/p/{project.name}/topics/{pks['Billing']}?start={first}&amp;end={last}"
    assert billing_link in html and billing_link.replace("&amp;", "&") in text
    assert "Billing: 6 messages (was 2, +200%)" in text
    assert "Billing: 67% negative" in text and "Login: 1 message (was 5, -80%)" in text
    assert f"Messages: {messages_last} (was {messages_before}" in text

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 760, "height": 900})
        page.set_content(html)
        assert page.locator("#kpis tr").count() == len(content["kpis"])
        screenshot(page, "digest-email", full_page=True)
        browser.close()


def test_a_digest_only_for_projects_with_someone_who_opted_in(database_url, tmp_path) -> None:
    with separate_database(database_url, tmp_path, "digest_none") as db:
        project = make_project(db)
        member = add_account(db, f"m-{project.name}@example.com", project.name, "member")
        assert record_due(db, NOW) == 0  # a member, not opted in
        with db.writer() as conn:
            account_pk = accounts.account_pk(conn, member.email)
            assert account_pk is not None
            accounts.set_digest(conn, account_pk, project.pk, True)
            assert accounts.digest_opted_in(conn, account_pk, project.pk)
        assert record_due(db, NOW) == 1
        with db.reader() as conn:
            assert [(s["channel"], s["recipient"]) for s in digests.sent(conn, project.pk)] == [("email", member.email)]
