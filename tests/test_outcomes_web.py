"""Were users helped, on the dashboard: the overview's resolved share and its chart of resolved, unresolved
and abandoned conversations per bucket, whose counts link to exactly the conversations they count, and the
conversation list filtered to unresolved + rephrase. Real server on SQLite, Debian's Chromium; leaves
screenshots in test-artifacts/screenshots/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from conftest import Project, RunningServer, make_project, running_server
from convolens.store import migrate
from convolens.store.db import Database
from convolens.timeutil import utcnow
from test_outcomes import GAVE_UP, THANKED
from web_support import Account, add_account, launch_chromium, screenshot, signed_in, wait_until_enriched

ASKED_BACK = [
    ("user", "My printer will not connect to the office wifi."),
    ("assistant", "Which printer model is it, and what does its display show when it tries to connect?"),
]
# (days ago, conversation) per kind: more resolved lately, the unresolved ones early in the range.
TURNS = {"gave-up": GAVE_UP, "thanked": THANKED, "asked": ASKED_BACK}
PLAN = [(8, "gave-up"), (8, "thanked"), (6, "gave-up"), (6, "asked"), (4, "thanked"), (4, "thanked"),
        (2, "thanked"), (2, "asked"), (1, "thanked"), (1, "gave-up")]  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Project, dict[str, str]]]:
    home = tmp_path_factory.mktemp("outcomes-web")
    db = Database(f"sqlite:///{home / 'convolens.sqlite3'}")
    migrate.upgrade(db)
    project = make_project(db, "helped")
    kinds: dict[str, str] = {}
    with running_server(db, home) as server:
        noon = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
        events = []
        for n, (days_ago, kind) in enumerate(PLAN):
            cid, turns = f"c{n}-{kind}", TURNS[kind]
            kinds[cid] = kind
            at = noon - timedelta(days=days_ago)
            events.append({"type": "conversation", "id": cid, "user_id": f"user-{n % 4}"})
            events += [
                {"type": "message", "conversation_id": cid, "id": f"{cid}-{i}", "role": role, "content": text,
                 "timestamp": (at + timedelta(minutes=i)).isoformat()}
                for i, (role, text) in enumerate(turns)
            ]  # fmt: skip
        with server.client(project.admin_token) as client:
            for name, words in (("Email address", ["email address"]), ("Invoices", ["invoices"])):
                body = {"name": name, "kind": "keyword", "keywords": words}
                assert client.post("/api/v1/topics", json=body).status_code == 201
            assert client.post("/api/v1/ingest", json={"events": events}).status_code == 202
        wait_until_enriched(db)
        yield server, project, kinds
    db.dispose()


@pytest.fixture(scope="module")
def viewer(site: tuple[RunningServer, Project, dict[str, str]]) -> Account:
    server, project, _ = site
    return add_account(server.db, "helped-viewer@example.com", project.name, "viewer")


def listed(html: str) -> set[str]:
    return set(re.findall(r'/conversations/(c\d+-[a-z-]+)"', html))


def test_the_overview_counts_outcomes_and_links_to_them(
    site: tuple[RunningServer, Project, dict[str, str]], viewer: Account
) -> None:
    server, project, kinds = site
    with signed_in(server, viewer) as client:
        page = client.get(f"/p/{quote(project.name)}/overview")
        assert page.status_code == 200
        html = page.text
        # 5 thanked, 3 gave up, 2 asked back and left: 5 of 10 judged resolved.
        assert re.search(r'id="kpi-resolved">50%<', html), re.search(r'id="kpi-resolved">[^<]*', html)
        link = re.search(r'id="kpi-unresolved-link" href="([^"]+)"', html).group(1).replace("&amp;", "&")
        assert "outcome=unresolved" in link and "started=1" in link
        unresolved = client.get(link).text
        assert listed(unresolved) == {cid for cid, kind in kinds.items() if kind == "gave-up"}
        # A bucket's count links to that bucket's conversations only.
        eight_days_ago = (utcnow() - timedelta(days=8)).date().isoformat()
        row = re.search(rf'<tr data-bucket="{eight_days_ago}">(.*?)</tr>', html, re.S).group(1)
        cell = re.search(r'class="num outcome-unresolved"><a href="([^"]+)">1<', row)
        assert cell, row
        assert listed(client.get(cell.group(1).replace("&amp;", "&")).text) == {"c0-gave-up"}
        # The filter is checked like the others.
        assert client.get(f"/p/{quote(project.name)}/conversations?started=yes").status_code == 422


def test_the_resolved_chart_and_the_unresolved_rephrased_list_in_a_browser(
    site: tuple[RunningServer, Project, dict[str, str]], viewer: Account
) -> None:
    server, project, kinds = site
    base = f"/p/{quote(project.name)}"
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page: Page = browser.new_page(viewport={"width": 1280, "height": 800}, base_url=server.base_url)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("/login")
        page.fill("input[name=email]", viewer.email)
        page.fill("input[name=password]", viewer.password)
        page.click("button[type=submit]")
        page.goto(f"{base}/overview")
        expect(page.locator("#kpi-resolved")).to_have_text("50%")
        chart = page.locator("#outcomes .chart canvas")
        expect(chart).to_have_count(1)  # uPlot drew it
        legend = page.locator("#outcomes .u-legend")
        for name in ("Resolved", "Unresolved", "Abandoned"):
            expect(legend).to_contain_text(name)
        page.locator("#outcomes").scroll_into_view_if_needed()
        screenshot(page, "outcomes-overview-chart")
        page.locator("#kpis, .kpis").first.scroll_into_view_if_needed()
        screenshot(page, "outcomes-overview-kpis")
        # From the chart's link to the list it counts.
        page.locator("#outcomes a.outcome-link.unresolved").click()
        expect(page.locator("#total")).to_have_text("3")
        expect(page.locator("input[name=started]")).to_be_checked()
        # Narrowed to those where the user asked again in other words.
        page.select_option("select[name=signal]", "rephrase")
        page.click("#filters button[type=submit]")
        expect(page).to_have_url(re.compile(r"signal=rephrase"))
        rows = page.locator("#conversations tbody tr")
        expect(rows).to_have_count(3)
        for i in range(3):
            expect(rows.nth(i).locator("td.outcome")).to_contain_text("unresolved")
            expect(rows.nth(i).locator("td.outcome .tag.signal.rephrase")).to_have_text("rephrase")
        assert listed(page.content()) == {cid for cid, kind in kinds.items() if kind == "gave-up"}
        screenshot(page, "outcomes-unresolved-rephrase")
        # Where the unresolved ones are: per topic, per user.
        page.goto(f"{base}/topics")
        email = page.locator("#topics tr", has=page.locator("a", has_text="Email address"))
        expect(email.locator("td.unresolved")).to_have_text("100%")  # 3 gave up, none answered
        expect(
            page.locator("#topics tr", has=page.locator("a", has_text="Invoices")).locator("td.unresolved")
        ).to_have_text("0%")
        screenshot(page, "outcomes-topics")
        page.goto(f"{base}/users")
        expect(page.locator("#users td.unresolved").first).not_to_be_empty()
        screenshot(page, "outcomes-users")
        assert errors == []
        browser.close()
