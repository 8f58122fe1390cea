"""The alert pages in a real Chromium: an admin creates a rule through the form after previewing when it
would have fired, sees it listed, its history after the workers decided its windows, and a failing
webhook's error on the settings page; a member creates and edits a rule (a metadata filter); a viewer
reads but cannot change; the form names a bad field; an emerging-topics rule names its topic in the
history; the past digests, each delivery's outcome and the e-mail as sent. Screenshots go to
test-artifacts/screenshots/ (alerts-*.png)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy import update

from alert_support import LOOPBACK, label, mail_server, quiet_server, send_day, webhook_receiver
from conftest import Project, RunningServer, make_project
from convolens.alerts.digest import WEEK, week_of
from convolens.store import accounts, alerts, digests, migrate, projects
from convolens.store.db import Database
from convolens.store.tables import alert_rule
from convolens.timeutil import utcnow
from convolens.worker import digest as digest_worker
from convolens.worker.alerting import deliver_due, evaluate_due
from web_support import Account, add_account, launch_chromium, screenshot, signed_in

TODAY = datetime.combine(utcnow().date(), datetime.min.time())
BASE = TODAY - timedelta(days=12)
SPIKE = 6  # the day Korean billing messages turn negative


@dataclass
class Site:
    server: RunningServer
    project: Project
    admin: Account
    viewer: Account
    member: Account
    topic_pk: int
    hook: object


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("alerts-web")
    db = Database(f"sqlite:///{home / 'convolens.sqlite3'}")
    migrate.upgrade(db)
    project = make_project(db, "al")
    admin = add_account(db, "admin@alerts.test", project.name, "admin")
    viewer = add_account(db, "viewer@alerts.test", project.name, "viewer")
    member = add_account(db, "member@alerts.test", project.name, "member")
    with quiet_server(db, home) as server, webhook_receiver([500] * 20) as hook:
        with server.client(project.admin_token) as client:
            created = client.post("/api/v1/topics", json={"name": "Billing", "kind": "keyword", "keywords": ["결제"]})
            assert created.status_code == 201, created.text
            topic_pk = int(created.json()["id"])
            for i in range(10):
                send_day(client, BASE + timedelta(days=i), [f"결제 문의 {k}" for k in range(5)], "ko")
        for i in range(10):
            mood = "negative" if i == SPIKE else "positive"
            prefix = f"ko-{BASE + timedelta(days=i):%Y%m%d}"
            assert label(db, project.pk, prefix, language="ko", sentiment=mood, topic_pk=topic_pk) == 5
        yield Site(server, project, admin, viewer, member, topic_pk, hook)


@contextmanager
def browser_as(site: Site, account: Account) -> Iterator[Page]:
    """Chromium signed in as ``account``, on the project's Alerts page."""
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=site.server.base_url)
        page = context.new_page()
        page.goto(f"/p/{site.project.name}/alerts")
        page.fill("input[name=email]", account.email)
        page.fill("input[name=password]", account.password)
        page.click("button[type=submit]")
        expect(page).to_have_url(re.compile(r"/alerts$"))
        yield page
        browser.close()


@pytest.fixture
def page(site: Site) -> Iterator[Page]:
    with browser_as(site, site.admin) as page:
        yield page


def test_an_admin_creates_a_rule_through_the_form_and_sees_it_listed(page: Page, site: Site) -> None:
    page.click("#new-alert")
    page.fill("input[name=name]", "Korean billing complaints")
    page.select_option("select[name=metric]", "negative_share")
    page.select_option("select[name=topic_id]", str(site.topic_pk))
    page.fill("input[name=language]", "ko")
    page.fill("input[name=threshold]", "50")
    page.fill("input[name=min_volume]", "3")
    page.fill("input[name=webhook_url]", site.hook.url)  # type: ignore[attr-defined]
    page.select_option("select[name=webhook_format]", "slack")
    page.click("#preview-button")
    # The preview fires on the spike day only, and resolves the day after.
    events = page.locator("#preview-events tbody tr")
    expect(events).to_have_count(2)
    spike = (BASE + timedelta(days=SPIKE)).strftime("%Y-%m-%d")
    after = (BASE + timedelta(days=SPIKE + 1)).strftime("%Y-%m-%d")
    expect(events.nth(0)).to_have_attribute("data-event", "fired")
    expect(events.nth(0)).to_contain_text(spike)
    expect(events.nth(0)).to_contain_text("100.0%")
    expect(events.nth(1)).to_have_attribute("data-event", "resolved")
    expect(events.nth(1)).to_contain_text(after)
    expect(page.locator("[data-chart=preview-values] canvas")).to_have_count(1)
    # The form kept what was typed.
    expect(page.locator("input[name=name]")).to_have_value("Korean billing complaints")
    screenshot(page, "alerts-form-preview", full_page=True)

    page.click("#save-button")
    expect(page.locator("#secret-value")).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    expect(page.locator("#rule-description")).to_contain_text("Negative share of user messages · topic Billing")
    expect(page.locator("#rule-description")).to_contain_text("above 50.0%")
    screenshot(page, "alerts-rule-created")

    page.goto(f"/p/{site.project.name}/alerts")
    row = page.locator("#alert-rules tbody tr", has_text="Korean billing complaints")
    expect(row).to_have_count(1)
    expect(row.locator(".state")).to_have_text("Not checked yet")  # no window decided yet
    expect(row).to_contain_text("language ko")
    expect(row).to_contain_text("not yet")
    screenshot(page, "alerts-list")


def test_history_and_a_failing_webhook_on_the_settings_page(page: Page, site: Site) -> None:
    db = site.server.db
    with site.server.client(site.project.admin_token) as admin:
        body = {
            "name": "Billing negative share", "metric": "negative_share",
            "filter": {"topic_id": str(site.topic_pk), "language": "ko"},
            "condition": {"kind": "threshold", "op": "above", "threshold": 0.5, "min_volume": 3},
            "channel": {"url": site.hook.url, "format": "json"},  # type: ignore[attr-defined]
        }  # fmt: skip
        rule_pk = int(admin.post("/api/v1/alerts", json=body).json()["id"])
    with db.writer() as conn:  # decided from the first seeded day on
        conn.execute(
            update(alert_rule).where(alert_rule.c.pk == rule_pk).values(evaluated_through=BASE - timedelta(days=1))
        )
    for i in range(10):
        now = BASE + timedelta(days=i + 1, minutes=10)
        assert evaluate_due(db, now) >= 1
        deliver_due(db, "w", now, site.server.settings.outbound)
    with db.reader() as conn:
        events = [(e["event"], e["window_start"]) for e in alerts.history(conn, site.project.pk, rule_pk)]
    assert events == [("resolved", BASE + timedelta(days=SPIKE + 1)), ("fired", BASE + timedelta(days=SPIKE))]

    page.goto(f"/p/{site.project.name}/alerts/{rule_pk}")
    rows = page.locator("#alert-history tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(1)).to_have_attribute("data-event", "fired")
    expect(rows.nth(1)).to_contain_text("HTTP 500")
    expect(page.locator("[data-chart=rule-values] canvas")).to_have_count(1)
    screenshot(page, "alerts-rule-history", full_page=True)

    page.goto(f"/p/{site.project.name}/settings")
    health = page.locator(f"#alert-channel-health tr[data-rule='{rule_pk}'][data-channel=webhook]")
    expect(health.locator(".channel-error")).to_contain_text("HTTP 500")
    expect(health).to_contain_text("failing")
    page.locator("#alert-channels").scroll_into_view_if_needed()
    screenshot(page, "alerts-settings-channels")

    # A new signing secret, shown once.
    page.goto(f"/p/{site.project.name}/alerts/{rule_pk}")
    page.click("#rotate-secret button")
    expect(page.locator("#secret-value")).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    with db.reader() as conn:
        assert page.locator("#secret-value").inner_text() == alerts.get(conn, site.project.pk, rule_pk).secret  # type: ignore[union-attr]

    # Muting from the rule page: the list says so.
    page.goto(f"/p/{site.project.name}/alerts/{rule_pk}")
    page.select_option("#mute-form select[name=for]", "1d")
    page.click("#mute-form button[type=submit]")
    expect(page.locator("#mute-form")).to_contain_text("Muted until")
    page.goto(f"/p/{site.project.name}/alerts")
    expect(page.locator(f"#alert-rules tr[data-rule='{rule_pk}'] .state")).to_have_text("Muted")


def test_a_viewer_reads_but_cannot_change_and_the_form_names_a_bad_field(site: Site) -> None:
    with site.server.client(site.project.admin_token) as admin:
        body = {
            "name": "volume",
            "metric": "messages",
            "condition": {"kind": "threshold", "op": "above", "threshold": 1},
        }
        rule_pk = int(admin.post("/api/v1/alerts", json=body).json()["id"])
    base = f"/p/{site.project.name}/alerts"
    with signed_in(site.server, site.viewer) as viewer:
        listed = viewer.get(base)
        assert listed.status_code == 200 and "volume" in listed.text and 'id="new-alert"' not in listed.text
        assert viewer.get(f"{base}/{rule_pk}").status_code == 200
        assert viewer.get(f"{base}/new").status_code == 403
        form = {"csrf_token": viewer.csrf, "name": "x", "metric": "messages", "kind": "threshold",  # type: ignore[attr-defined]
                "op": "above", "threshold": "1", "window": "day"}  # fmt: skip
        assert viewer.post(f"{base}/new", data=form).status_code == 403
        assert viewer.post(f"{base}/{rule_pk}/delete", data={"csrf_token": viewer.csrf}).status_code == 403  # type: ignore[attr-defined]
        # Any member opts in to the digest for themselves.
        assert viewer.post(f"{base}/digest", data={"csrf_token": viewer.csrf, "digest": "on"}).status_code == 303  # type: ignore[attr-defined]
        assert 'name="digest" value="on" checked' in viewer.get(base).text
    with signed_in(site.server, site.admin) as admin_web:
        form = {"csrf_token": admin_web.csrf, "name": "mail", "metric": "messages", "kind": "threshold",  # type: ignore[attr-defined]
                "op": "above", "threshold": "1", "window": "day",
                "email_to": "team@example.com\nnot an address"}  # fmt: skip
        refused = admin_web.post(f"{base}/new", data=form)
        assert refused.status_code == 422
        assert "<strong>email_to</strong>" in refused.text and "not an e-mail address" in refused.text
        assert "not an address</textarea>" in refused.text  # what was typed is kept
        assert admin_web.post(f"{base}/new", data=form | {"csrf_token": "forged"}).status_code == 403
        form |= {"email_to": "team@example.com", "threshold": "lots"}
        assert "<strong>threshold</strong>: must be a number" in admin_web.post(f"{base}/new", data=form).text
        for field, value in (("cooldown_hours", "1e308"), ("cooldown_hours", "nan"), ("threshold", "inf"),
                             ("cooldown_hours", "-1"), ("periods", "9999"), ("name", "x" * 5000)):  # fmt: skip
            refused = admin_web.post(f"{base}/new", data=form | {"threshold": "1", field: value})
            assert refused.status_code == 422 and f"{field}" in refused.text, (field, value)
        form |= {"threshold": "1", "metric": "negative_share", "topic_id": str(site.topic_pk), "language": "ko",
                 "model": "gpt"}  # fmt: skip
        saved = admin_web.post(f"{base}/new", data=form)  # no webhook, so no secret to show: to the rule
        assert saved.status_code == 303 and re.search(r"/alerts/\d+$", saved.headers["location"])
        form |= {"metric": "messages"}
        two = admin_web.post(f"{base}/new", data=form)
        assert two.status_code == 422 and "<strong>filter</strong>" in two.text
        assert admin_web.get(f"{base}/999999").status_code == 404


def test_a_member_creates_and_edits_a_rule_and_a_viewer_cannot(site: Site) -> None:
    base = f"/p/{site.project.name}/alerts"
    with browser_as(site, site.member) as page:
        page.click("#new-alert")  # a member has the button
        page.fill("input[name=name]", "Pro plan volume")
        page.select_option("select[name=metric]", "messages")
        page.fill("input[name=metadata_key]", "plan")
        page.fill("input[name=metadata_value]", "pro")
        page.fill("input[name=threshold]", "100")
        page.fill("input[name=min_volume]", "0")
        screenshot(page, "alerts-form-member-metadata", full_page=True)
        page.click("#save-button")
        expect(page).to_have_url(re.compile(r"/alerts/\d+$"))
        expect(page.locator("#rule-description")).to_contain_text("Messages · metadata plan=pro")
        expect(page.locator("#rule-description")).to_contain_text("above 100 in a day")
        rule_pk = int(page.url.rsplit("/", 1)[1])
        page.click("#edit-alert")
        expect(page.locator("input[name=metadata_key]")).to_have_value("plan")  # the form shows what is stored
        page.fill("input[name=threshold]", "250")
        page.click("#save-button")
        expect(page.locator("#rule-description")).to_contain_text("above 250 in a day")
        page.select_option("#mute-form select[name=for]", "1h")
        page.click("#mute-form button[type=submit]")
        expect(page.locator("#mute-form")).to_contain_text("Muted until")
    with site.server.db.reader() as conn:
        saved = alerts.get(conn, site.project.pk, rule_pk)
    assert saved is not None and saved.definition["condition"]["threshold"] == 250.0 and saved.muted_until
    assert saved.definition["filter"]["metadata_key"] == "plan"
    with signed_in(site.server, site.viewer) as viewer:
        page_text = viewer.get(f"{base}/{rule_pk}").text
        assert (
            "Pro plan volume" in page_text and 'id="edit-alert"' not in page_text and 'id="mute-form"' not in page_text
        )
        assert viewer.get(f"{base}/{rule_pk}/edit").status_code == 403
        form = {"csrf_token": viewer.csrf, "name": "x", "metric": "messages", "kind": "threshold",  # type: ignore[attr-defined]
                "op": "above", "threshold": "1", "window": "day"}  # fmt: skip
        assert viewer.post(f"{base}/{rule_pk}/edit", data=form).status_code == 403
        assert (
            viewer.post(f"{base}/{rule_pk}/mute", data={"csrf_token": viewer.csrf, "for": "unmute"}).status_code == 403
        )  # type: ignore[attr-defined]
    with signed_in(site.server, site.member) as member:
        assert member.post(f"{base}/{rule_pk}/delete", data={"csrf_token": member.csrf}).status_code == 303  # type: ignore[attr-defined]
    with site.server.db.reader() as conn:
        assert alerts.get(conn, site.project.pk, rule_pk) is None
    # The API keeps the admin scope for writes: a read token is refused.
    with site.server.client(site.project.read_token) as reader:
        body = {"name": "r", "metric": "messages", "condition": {"kind": "threshold", "op": "above", "threshold": 1}}
        assert reader.post("/api/v1/alerts", json=body).status_code == 403


def test_an_emerging_topics_rule_names_its_topic_in_the_history(page: Page, site: Site) -> None:
    db = site.server.db
    with site.server.client(site.project.admin_token) as admin:
        body = {"name": "Emerging topics", "metric": "emerging_topics", "cooldown_minutes": 0,
                "condition": {"kind": "threshold", "op": "above", "threshold": 0}}  # fmt: skip
        created = admin.post("/api/v1/alerts", json=body)
        assert created.status_code == 201, created.text
        rule_pk = int(created.json()["id"])
    with db.writer() as conn:
        conn.execute(
            update(alert_rule).where(alert_rule.c.pk == rule_pk).values(evaluated_through=BASE - timedelta(days=1))
        )
    for i in range(11):
        evaluate_due(db, BASE + timedelta(days=i + 1, minutes=10))
    with db.reader() as conn:
        fired = [e["window_start"] for e in alerts.history(conn, site.project.pk, rule_pk)]
    # Billing: 35 messages in the 7 days to BASE+8 against 5 the 7 before (no history before BASE: not on
    # the days before), told once.
    assert fired == [BASE + timedelta(days=7)]
    page.goto(f"/p/{site.project.name}/alerts/{rule_pk}")
    row = page.locator("#alert-history tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator(".event-topics a")).to_have_text("Billing")
    expect(row.locator(".event-topics a")).to_have_attribute("href", re.compile(rf"/topics/{site.topic_pk}$"))
    screenshot(page, "alerts-emerging-history", full_page=True)


def test_past_digests_list_what_was_sent_and_show_the_e_mail(page: Page, site: Site, tmp_path) -> None:
    db = site.server.db
    last_week = week_of(utcnow()) - WEEK
    now = last_week + WEEK + timedelta(hours=2)
    with mail_server() as box, webhook_receiver([500] * 10) as hook:
        with db.writer() as conn:
            member_pk = accounts.account_pk(conn, site.member.email)
            assert member_pk is not None
            accounts.set_digest(conn, member_pk, site.project.pk, True)
            projects.set_project_setting(
                conn, site.project.name, digests.WEBHOOK_SETTING, {"url": hook.url + "/s3cret-path", "format": "json"}
            )
        with db.reader() as conn:
            (owed,) = digests.owed(conn, last_week)  # the member, and the viewer if an earlier test opted in
        assert site.member.email in owed.recipients
        assert digest_worker.record_due(db, now) == 1
        assert digest_worker.deliver_due(db, "w", now, LOOPBACK, smtp=box.smtp) == len(owed.recipients) + 1
        assert len(box.messages) == len(owed.recipients) and len(hook.requests) == 1
        (mail,) = [m for m in box.messages if m["To"] == site.member.email]
        sent_html = mail.get_body(("html",)).get_content()

    page.goto(f"/p/{site.project.name}/alerts")
    page.click("#past-digests")
    rows = page.locator("#digest-history tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.nth(0)).to_have_attribute("data-week", f"{last_week:%Y-%m-%d}")
    email = rows.nth(0).locator(".delivery[data-channel=email]", has_text=site.member.email)
    expect(email).to_contain_text(f"{site.member.email}: delivered")
    hook_row = rows.nth(0).locator(".delivery[data-channel=webhook]")
    expect(hook_row).to_contain_text("webhook at 127.0.0.1: retrying")
    expect(hook_row).to_contain_text("HTTP 500")
    expect(rows.nth(0)).not_to_contain_text("s3cret-path")  # a webhook URL is its secret: the host only
    screenshot(page, "alerts-past-digests", full_page=True)

    rows.nth(0).locator("a.view-email").click()
    expect(page.locator("#kpis tr").first).to_be_visible()
    expect(page.locator("h1")).to_contain_text(site.project.name)
    screenshot(page, "alerts-past-digest-email", full_page=True)

    with signed_in(site.server, site.viewer) as viewer:  # any member reads them
        listed = viewer.get(f"/p/{site.project.name}/alerts/digests")
        assert listed.status_code == 200 and f"{last_week:%Y-%m-%d}" in listed.text
        shown = viewer.get(f"/p/{site.project.name}/alerts/digests/{last_week:%Y-%m-%d}")
        assert shown.status_code == 200
        # The e-mail as it was sent: the same content, rendered with the same public URL.
        assert shown.text.replace("\r\n", "\n").strip() == sent_html.replace("\r\n", "\n").strip()
        policy = shown.headers["content-security-policy"]
        assert "script-src" not in policy and "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        text = viewer.get(f"/p/{site.project.name}/alerts/digests/{last_week:%Y-%m-%d}?format=text")
        assert text.headers["content-type"].startswith("text/plain") and "Messages:" in text.text
        for missing in (f"{last_week - WEEK:%Y-%m-%d}", "2026-13-01", "x" * 10, "../../etc"):
            assert viewer.get(f"/p/{site.project.name}/alerts/digests/{missing}").status_code == 404
