"""The topics page at two levels, in Chromium: categories first (each with its volume, its topics one
click away), and the map's bubbles ringed by category. The categories are the worker's own: the demo
data is clustered as in production. Screenshots go to test-artifacts/screenshots/topics-categories*."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from conftest import RunningServer, running_server
from convolens.config import Limits, Settings
from convolens.demo import DEMO_PROJECT, add_demo_topics, demo_token, seed
from convolens.store import categories, migrate, projects, topics
from convolens.store.db import Database
from web_support import SCREENSHOTS, add_account, launch_chromium, screenshot, wait_until_enriched


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("categories-web")
    db = Database(f"sqlite:///{home / 'convolens.sqlite3'}")
    migrate.upgrade(db)
    token, _ = demo_token(Settings(database_url=db.url, home=home), db)
    add_demo_topics(db)
    with running_server(db, home, Limits()) as server:
        seed(server.base_url, token, 300)
        wait_until_enriched(db)
        # The worker clusters the uncovered messages on its own once there are enough of them.
        deadline = time.monotonic() + 180
        while not _categorised(db):
            assert time.monotonic() < deadline, "no categories after the clustering run"
            time.sleep(0.5)
        server.account = add_account(db, "pm@example.com", DEMO_PROJECT, "member")  # type: ignore[attr-defined]
        yield server
    db.dispose()


def _categorised(db: Database) -> bool:
    with db.reader() as conn:
        pk = projects.get_project_pk(conn, DEMO_PROJECT)
        return any(t.category_pk for t in topics.list_topics(conn, pk, ("suggested",)))


@pytest.fixture
def page(web: RunningServer) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=web.base_url)
        page = context.new_page()
        page.goto("/p/demo/topics")
        page.fill("input[name=email]", web.account.email)  # type: ignore[attr-defined]
        page.fill("input[name=password]", web.account.password)  # type: ignore[attr-defined]
        page.click("button[type=submit]")
        expect(page).to_have_url(re.compile(r"/p/demo/topics$"))
        yield page
        browser.close()


def test_the_topics_page_shows_categories_first_with_their_topics(page: Page, web: RunningServer) -> None:
    with web.db.reader() as conn:
        pk = projects.get_project_pk(conn, DEMO_PROJECT)
        stored = {c.pk: c.name for c in categories.list_categories(conn, pk)}
        members: dict[int | None, set[str]] = {}
        for t in topics.list_topics(conn, pk, ("active", "suggested")):
            members.setdefault(t.category_pk, set()).add(str(t.pk))
    assert 1 <= len(stored) <= 12

    # The categories come before the topic tables, the largest first, "Uncategorised" last.
    section = page.locator("#categories")
    expect(section).to_be_visible()
    assert section.evaluate("s => s.compareDocumentPosition(document.querySelector('#topics')) & 4") == 4
    shown = page.locator("details.category")
    names = [shown.nth(i).locator(".category-name").inner_text() for i in range(shown.count())]
    assert set(names) - {"Uncategorised"} == {stored[pk] for pk in members if pk in stored}
    volumes = [
        int(shown.nth(i).locator("summary .messages").inner_text().replace(",", "")) for i in range(shown.count())
    ]
    named = [v for n, v in zip(names, volumes, strict=True) if n != "Uncategorised"]
    assert named == sorted(named, reverse=True) and named[0] > 0
    if "Uncategorised" in names:
        assert names[-1] == "Uncategorised"  # the demo's defined topics, which no admin put in a category

    # The largest is open with its topics; each category lists exactly its own topics.
    first = shown.first
    expect(first).to_have_attribute("open", "")
    for i in range(shown.count()):
        category = shown.nth(i)
        pk = category.get_attribute("data-category")
        listed = {category.locator("tbody tr").nth(j).get_attribute("data-topic")
                  for j in range(category.locator("tbody tr").count())}  # fmt: skip
        assert listed == members[int(pk) if pk else None]
    screenshot(page, "topics-categories")
    screenshot(page, "topics-categories-full", full_page=True)
    section.screenshot(path=str(SCREENSHOTS / "topics-categories-list.png"))
    first.screenshot(path=str(SCREENSHOTS / "topics-category-open.png"))

    # A closed category opens with a click on its summary (no script: a <details>).
    if shown.count() > 1:
        second = shown.nth(1)
        assert not second.locator("tbody tr").first.is_visible()
        second.locator("summary").click()
        expect(second.locator("tbody tr").first).to_be_visible()

    # The map rings each bubble in its category's colour, and the legend names the categories.
    legend = page.locator("#category-legend li")
    assert [legend.nth(i).inner_text().strip() for i in range(legend.count())] == names
    rings = {page.locator(f"#topic-map a.bubble[data-topic='{t}'] circle").get_attribute("stroke")
             for t in members[int(first.get_attribute("data-category") or 0) or None]
             if page.locator(f"#topic-map a.bubble[data-topic='{t}']").count()}  # fmt: skip
    assert len(rings) == 1
    page.locator("#topic-map-card").scroll_into_view_if_needed()
    page.locator("#topic-map-card").screenshot(path=str(SCREENSHOTS / "topics-categories-map.png"))

    # Drilling down: a topic of the category opens its own page.
    link = first.locator("tbody tr a").first
    topic_id = first.locator("tbody tr").first.get_attribute("data-topic")
    link.click()
    expect(page).to_have_url(re.compile(rf"/p/demo/topics/{topic_id}$"))


def test_a_member_puts_a_defined_topic_in_a_category(page: Page, web: RunningServer) -> None:
    target = page.locator("details.category").first
    category_pk = target.get_attribute("data-category")
    category_name = target.locator(".category-name").inner_text()
    page.locator("#topics a", has_text="Billing").first.click()
    expect(page.locator("#topic-category")).to_have_count(0)  # uncategorised: no category in the trail
    messages = page.locator("#topic-messages").inner_text()
    assert int(messages.replace(",", "")) > 0
    form = page.locator("form.topic-form")
    form.locator("select[name=category_id]").select_option(category_pk)
    form.locator("button[type=submit]").click()
    expect(page.locator("#topic-category")).to_have_text(category_name)
    # Moving a topic is no redefinition: its figures stay, nothing is applied to older messages again.
    expect(page.locator("#topic-messages")).to_have_text(messages)
    expect(page.locator(".notice")).to_have_count(0)
    screenshot(page, "topic-in-category")
    page.locator("#topic-category").click()
    expect(page.locator(f"details.category[data-category='{category_pk}'] tbody")).to_contain_text("Billing")
    expect(page.locator(f"details.category[data-category='{category_pk}'] .category-count")).to_contain_text(
        "1 defined"
    )
