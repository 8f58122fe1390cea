"""The alert pages in a real Chromium: an admin creates a rule through the form after previewing when it
would have fired, sees it listed, its history after the workers decided its windows, and a failing
webhook's error on the settings page; a viewer reads but cannot change; the form names a bad field.
Screenshots go to test-artifacts/screenshots/ (alerts-*.png)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy import update

from alert_support import label, quiet_server, send_day, webhook_receiver
from conftest import Project, RunningServer, make_project
from convolens.store import alerts, migrate
from convolens.store.db import Database
from convolens.store.tables import alert_rule
from convolens.timeutil import utcnow
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
        yield Site(server, project, admin, viewer, topic_pk, hook)


@pytest.fixture
def page(site: Site) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=site.server.base_url)
        page = context.new_page()
        page.goto(f"/p/{site.project.name}/alerts")
        page.fill("input[name=email]", site.admin.email)
        page.fill("input[name=password]", site.admin.password)
        page.click("button[type=submit]")
        expect(page).to_have_url(re.compile(r"/alerts$"))
        yield page
        browser.close()


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
