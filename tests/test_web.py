"""The dashboard end to end, in Debian's Chromium driven by Playwright, against a real server seeded with
the demo data through the public API; and its security: escaping, CSRF, roles, CSP, project isolation.

Every test leaves a 1280x800 screenshot of what it saw in test-artifacts/screenshots/."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from conftest import RunningServer, running_server
from convolens.config import Limits
from convolens.demo import DEMO_PROJECT, add_demo_topics, demo_token, seed
from convolens.outbound import OutboundPolicy, system_resolver
from convolens.store import explore, migrate, projects
from convolens.store.db import Database
from convolens.store.explore import ConversationFilter
from convolens.timeutil import utcnow
from web_support import SCREENSHOTS, Account, add_account, launch_chromium, screenshot, signed_in, wait_until_enriched

XSS = "<script>alert(1)</script> and <img src=x onerror=alert(2)> in a message"
# The LLM provider hosts the settings tests save, resolved by the server's outbound policy (no DNS here):
# public addresses, and one name that leads into a private network.
WEB_DNS = {
    "llm.example": ["93.184.216.34"],
    "other.example": ["93.184.216.35"],
    "intranet.example": ["93.184.216.36", "10.0.0.9"],
}


def _web_dns(host: str, port: int) -> list[str]:
    return WEB_DNS[host] if host in WEB_DNS else system_resolver(host, port)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("web")
    db = Database(f"sqlite:///{home / 'convolens.sqlite3'}")
    migrate.upgrade(db)
    from convolens.config import Settings

    token, _ = demo_token(Settings(database_url=db.url, home=home), db)
    add_demo_topics(db)
    with running_server(db, home, Limits(), outbound=OutboundPolicy(resolve=_web_dns)) as server:
        seed(server.base_url, token, 150)
        other_token = _other_project(server)
        httpx.post(
            f"{server.base_url}/api/v1/ingest",
            headers={"Authorization": f"Bearer {token}"},
            json={"events": [
                {"type": "conversation", "id": "xss", "user_id": "mallory"},
                {"type": "message", "conversation_id": "xss", "id": "xss-1", "role": "user", "content": XSS},
                {"type": "message", "conversation_id": "xss", "id": "xss-2", "role": "assistant",
                 "content": "I will not run that."},
            ]},
        ).raise_for_status()  # fmt: skip
        assert other_token
        wait_until_enriched(db)
        server.demo_token = token  # type: ignore[attr-defined]
        yield server
    db.dispose()


def _other_project(server: RunningServer) -> str:
    with server.db.writer() as conn:
        pk, _ = projects.ensure_project(conn, "other")
        token, _ = projects.create_token(conn, pk, frozenset({"ingest", "read"}))
    httpx.post(
        f"{server.base_url}/api/v1/ingest",
        headers={"Authorization": f"Bearer {token}"},
        json={"events": [
            {"type": "conversation", "id": "secret-conv", "user_id": "b-user"},
            {"type": "message", "conversation_id": "secret-conv", "id": "s1", "role": "user",
             "content": "project B's private question"},
        ]},
    ).raise_for_status()  # fmt: skip
    return token


@pytest.fixture(scope="module")
def people(web: RunningServer) -> dict[str, Account]:
    return {
        "admin": add_account(web.db, "admin@example.com", DEMO_PROJECT, "admin"),
        "member": add_account(web.db, "member@example.com", DEMO_PROJECT, "member"),
        "viewer": add_account(web.db, "viewer@example.com", DEMO_PROJECT, "viewer"),
        "outsider": add_account(web.db, "b-admin@example.com", "other", "admin"),
    }


@pytest.fixture(scope="module")
def chromium() -> Iterator:
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, web: RunningServer, people: dict[str, Account]) -> Iterator[Page]:
    context = chromium.new_context(
        viewport={"width": 1280, "height": 800}, base_url=web.base_url, accept_downloads=True
    )
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs  # type: ignore[attr-defined]
    log_in(page, people["admin"])
    yield page
    assert dialogs == [], f"a script ran: {dialogs}"
    context.close()


def log_in(page: Page, account: Account) -> None:
    page.goto("/p/demo/overview")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.fill("input[name=email]", account.email)
    page.fill("input[name=password]", account.password)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/p/demo/overview$"))


def api(web: RunningServer, path: str, **params: str) -> dict:
    response = httpx.get(
        f"{web.base_url}{path}", params=params, headers={"Authorization": f"Bearer {web.demo_token}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def count(text: str) -> int:
    return int(text.replace(",", "").strip())


# -- the product team's journeys ---------------------------------------------------------------------


def test_overview_numbers_equal_the_api(page: Page, web: RunningServer) -> None:
    screenshot(page, "overview")
    start, end = page.input_value("input[name=start]"), page.input_value("input[name=end]")
    window = {"start_time": f"{start}T00:00:00Z", "end_time": f"{end}T23:59:59.999999Z"}
    by_day = api(web, "/api/v1/metrics", **window)
    (series,) = by_day["series"]
    rows = page.locator("#buckets tbody tr")
    assert rows.count() == len(by_day["buckets"])
    shown_days = 0
    for i in range(rows.count()):
        row = rows.nth(i)
        bucket = row.get_attribute("data-bucket")
        cells = [c.strip() for c in row.locator("td").all_inner_texts()]
        expected = series["data"].get(bucket)
        if expected is None:
            assert count(cells[2]) == 0
            continue
        shown_days += 1
        assert (count(cells[1]), count(cells[2]), count(cells[3])) == (
            expected["conversations"], expected["messages"], expected["users"]
        ), bucket  # fmt: skip
        assert (count(cells[6]), count(cells[7])) == (expected["ratings_up"], expected["ratings_down"])
    assert shown_days >= 20  # the demo spreads conversations over 28 days
    messages = sum(b["messages"] for b in series["data"].values())
    assert count(page.inner_text("#kpi-messages")) == messages
    volume = api(web, "/api/v1/conversations/series/volume", **window)
    started = sum({s["name"]: s["data"] for s in volume["series"]}["conversations"].values())
    assert count(page.inner_text("#kpi-conversations")) >= started - 5  # conversations spanning the window's start
    by_language = api(web, "/api/v1/metrics", group_by="language", period="month", **window)
    for row in page.locator("#languages tbody tr").all():
        # the row's API group: a message with no detectable language is "(none)" there, "not detected" here
        name, shown = row.get_attribute("data-group"), count(row.locator("td").nth(1).inner_text())
        group = next(s for s in by_language["series"] if s["group"] == name)
        assert shown == sum(b["messages"] for b in group["data"].values())
    assert page.locator("#top-topics tbody tr").count() >= 1
    assert page.locator(".chart .uplot").count() >= 4  # the vendored chart library drew the charts


def test_filter_conversations_and_open_a_transcript(page: Page, web: RunningServer) -> None:
    page.click("nav.side >> text=Conversations")
    total = count(page.inner_text("#total"))
    assert total > 100
    page.fill("input[name=q]", "still")
    page.select_option("select[name=sentiment]", "negative")
    page.click("#filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"q=still.*sentiment=negative|sentiment=negative.*q=still"))
    filtered = count(page.inner_text("#total"))
    assert 0 < filtered < total
    with web.db.reader() as conn:
        f = _filter_of(page.url)
        _rows, expected = explore.page(conn, projects.get_project_pk(conn, DEMO_PROJECT), f, 1, 50)
    assert filtered == expected
    screenshot(page, "conversations-filtered")
    shared = page.url  # the filters are in the URL: the same view opens from a link
    page.goto(shared)
    assert count(page.inner_text("#total")) == filtered
    page.locator("a.conversation-link").first.click()
    expect(page).to_have_url(re.compile(r"/p/demo/conversations/[^/?]+$"))
    transcript = page.locator("#transcript")
    expect(transcript.locator(".message.user").first).to_be_visible()
    assert "still" in transcript.inner_text().lower()
    assert transcript.locator(".badge.negative").count() >= 1  # the negative message the filter matched
    screenshot(page, "transcript")


def _filter_of(url: str) -> ConversationFilter:
    from datetime import datetime
    from urllib.parse import parse_qs, urlparse

    q = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
    return ConversationFilter(
        start=datetime.fromisoformat(q["start"]),
        end=datetime.combine(datetime.fromisoformat(q["end"]).date(), datetime.max.time()),
        text=q.get("q"),
        sentiment=q.get("sentiment"),
        language=q.get("language") or None,
    )


def test_create_a_keyword_topic_and_see_it_applied(page: Page, web: RunningServer) -> None:
    page.click("nav.side >> text=Topics")
    screenshot(page, "topics")
    form = page.locator("#new-topic")
    form.locator("input[name=name]").fill("Passwords")
    form.locator("input[value=keyword]").check()
    form.locator("textarea[name=keywords]").fill("password, 비밀번호")
    form.locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/p/demo/topics/\d+$"))
    expect(page.locator("h1")).to_contain_text("Passwords")
    # The worker applies the new topic to the stored messages in the background; the page catches up.
    for _ in range(120):
        if count(page.inner_text("#topic-messages")) > 0:
            break
        page.wait_for_timeout(500)
        page.reload()
    assert count(page.inner_text("#topic-messages")) > 0
    screenshot(page, "topic")
    samples = page.locator("#samples a")
    assert samples.count() >= 1
    samples.first.click()
    assert re.search(r"password|비밀번호", page.inner_text("#transcript"), re.IGNORECASE)
    expect(page.locator("#transcript .tag.topic", has_text="Passwords").first).to_be_visible()


def _topic_figures(web: RunningServer, page: Page, status: str = "active") -> dict[str, dict]:
    """The API's figures for the page's range, by topic name."""
    start, end = page.input_value("input[name=start]"), page.input_value("input[name=end]")
    window = {"start_time": f"{start}T00:00:00Z", "end_time": f"{end}T23:59:59.999999Z"}
    listed = api(web, "/api/v1/topics", status=status, figures="true", **window)
    return {t["name"]: t["figures"] for t in listed["topics"]}


def _settled_figures(web: RunningServer, page: Page) -> dict[str, dict[str, dict]]:
    """The API's figures (active and suggested topics) as the page shows them: the session server's worker
    may redo suggestions or enrich between two reads, so the page is reloaded until the figures read before
    and after it agree."""
    for _ in range(10):
        before = {status: _topic_figures(web, page, status) for status in ("active", "suggested")}
        page.reload()
        after = {status: _topic_figures(web, page, status) for status in ("active", "suggested")}
        if before == after:
            return after
    raise AssertionError("the topic figures kept changing under the page")


def test_topics_page_shows_each_topics_figures_and_a_map(page: Page, web: RunningServer) -> None:
    page.click("nav.side >> text=Topics")
    settled = _settled_figures(web, page)
    expected = settled["active"]
    screenshot(page, "topics-figures")
    screenshot(page, "topics-figures-full", full_page=True)
    rows = page.locator("#topics tbody tr")
    assert rows.count() == len(expected) >= 2
    words = {"new": "new", "growing": "growing", "shrinking": "shrinking", "steady": "steady",
             "quiet": "no messages", "unknown": "no earlier data"}  # fmt: skip
    # The demo's 28 days of data fit in the default 30-day range: nothing earlier to call a topic new against.
    assert {f["trend"] for f in expected.values()} == {"unknown"}
    for i in range(rows.count()):
        row = rows.nth(i)
        name = row.locator(".topic-name > a").inner_text()
        figures = expected[name]
        assert count(row.locator("td.messages").inner_text()) == figures["messages"]
        assert words[figures["trend"]] in row.locator(".trend").inner_text()
        assert (row.locator(".tag.emerging").count() == 1) == figures["emerging"]
        # The rule is on the badge for whoever hovers it.
        assert "previous period" in row.locator(".trend").get_attribute("title")
        shown = row.locator(".quotes li").all_inner_texts()
        assert [s.strip() for s in shown] == [s["text"] for s in figures["samples"]]
        assert len({s.casefold() for s in shown}) == len(shown)
    assert any(f["samples"] for f in expected.values())
    expect(page.locator("#topics-legend")).to_contain_text("at least 25% more / fewer")
    bubbles = page.locator("#topic-map a.bubble")
    assert bubbles.count() == sum(1 for f in expected.values() if f["messages"]) + sum(
        1 for f in settled["suggested"].values() if f["messages"]
    )
    target = bubbles.first
    topic_id = target.get_attribute("data-topic")
    target.locator("circle").click()
    expect(page).to_have_url(re.compile(rf"/p/demo/topics/{topic_id}$"))


def test_overview_shows_where_users_are_unhappy(page: Page, web: RunningServer) -> None:
    # Angry billing questions (the demo's Billing topic matches "charged" and "refund"), one reply rated down.
    complaints = [
        "I was charged twice and nobody answers, this is terrible!",
        "Still no refund after three weeks, I am furious.",
        "You charged me again?! Awful service.",
    ]
    events: list[dict] = []
    for i, text in enumerate(complaints):
        events += [
            {"type": "conversation", "id": f"angry-{i}", "user_id": f"angry-{i}"},
            {"type": "message", "conversation_id": f"angry-{i}", "id": f"angry-{i}-q", "role": "user", "content": text},
            {"type": "message", "conversation_id": f"angry-{i}", "id": f"angry-{i}-a", "role": "assistant",
             "content": "Sorry to hear that.", **({"rating": -1} if i == 0 else {})},
        ]  # fmt: skip
    httpx.post(
        f"{web.base_url}/api/v1/ingest", headers={"Authorization": f"Bearer {web.demo_token}"}, json={"events": events}
    ).raise_for_status()
    wait_until_enriched(web.db)
    settled = _settled_figures(web, page)
    panel = page.locator("#unhappy")
    panel.scroll_into_view_if_needed()
    screenshot(page, "overview-unhappy")
    panel.screenshot(path=str(SCREENSHOTS / "overview-unhappy-panel.png"))
    expected = {**settled["active"], **settled["suggested"]}
    ranked = sorted(
        (name for name, f in expected.items() if f["unhappy_messages"] > 0),
        key=lambda name: (-expected[name]["unhappy_messages"], -expected[name]["messages"], name),
    )[:5]
    items = panel.locator(".unhappy-list > li")
    assert ranked and [items.nth(i).locator("a.name").inner_text() for i in range(items.count())] == ranked
    first = items.first
    quotes = [q.strip() for q in first.locator(".quotes li").all_inner_texts()]
    assert quotes and quotes == [s["text"] for s in expected[ranked[0]]["unhappy_samples"]]
    expect(first.locator(".unhappy-figure")).to_contain_text(f"of {expected[ranked[0]]['messages']:,} messages")
    first.locator(".quotes a").first.click()
    expect(page).to_have_url(re.compile(r"/p/demo/conversations/"))


def test_topic_figures_in_the_api_are_opt_in_and_checked(web: RunningServer) -> None:
    plain = api(web, "/api/v1/topics")
    assert plain["topics"] and all("figures" not in t for t in plain["topics"]) and "start_time" not in plain
    headers = {"Authorization": f"Bearer {web.demo_token}"}
    for params, field in (({"figures": "maybe"}, "figures"), ({"figures": "true", "start_time": "soon"}, "start_time")):
        response = httpx.get(f"{web.base_url}/api/v1/topics", params=params, headers=headers)
        assert response.status_code == 422 and field in response.text, response.text


def test_create_and_revoke_a_token(page: Page, web: RunningServer) -> None:
    page.click("nav.side >> text=Settings")
    form = page.locator("#create-token")
    form.locator("input[name=label]").fill("browser test")
    form.locator("button[type=submit]").click()
    token = page.inner_text("#token-value").strip()
    assert token.startswith("cl_")
    screenshot(page, "settings-token-created")
    body = {"events": [{"type": "message", "conversation_id": "from-new-token", "role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.post(f"{web.base_url}/api/v1/ingest", json=body, headers=headers).status_code == 202
    page.goto("/p/demo/settings")
    assert token not in page.content()  # shown once, never again
    row = page.locator(f"#tokens tr[data-prefix='{token[:12]}']")
    if row.count() == 0:
        row = page.locator("#tokens tr", has_text="browser test")
    row.locator("button", has_text="Revoke").click()
    expect(page.locator("#tokens tr.revoked", has_text="browser test")).to_be_visible()
    revoked = httpx.post(f"{web.base_url}/api/v1/ingest", json=body, headers=headers)
    assert revoked.status_code == 401


def test_export_csv_has_the_filtered_rows(page: Page, web: RunningServer, tmp_path: Path) -> None:
    page.goto("/p/demo/conversations?language=ko")
    shown = count(page.inner_text("#total"))
    assert shown > 0
    with page.expect_download() as download:
        page.click("#export-csv")
    path = tmp_path / "export.csv"
    download.value.save_as(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert len(rows) == shown
    assert all("ko" in r["languages"].split() for r in rows)
    listed = set(page.locator("a.conversation-link").evaluate_all("els => els.map(e => e.getAttribute('href'))"))
    assert {f"/p/demo/conversations/{r['id']}" for r in rows} >= listed
    with page.expect_download() as download:
        page.click("#export-jsonl")
    lines = Path(download.value.path()).read_text().splitlines()
    assert len(lines) == shown and all(json.loads(line)["messages"] for line in lines)


def test_users_page_and_retention(page: Page) -> None:
    page.click("nav.side >> text=Users")
    assert count(page.inner_text("#total")) > 10
    assert page.locator("#cohorts tbody tr").count() == 8
    page.click("#users th >> text=Messages")
    values = [count(t) for t in page.locator("#users tbody tr td:nth-child(3)").all_inner_texts()]
    assert values == sorted(values, reverse=True)
    screenshot(page, "users")
    page.locator("#users tbody tr a").first.click()
    expect(page.locator("h1")).to_contain_text("User")
    assert page.locator("#conversations tbody tr").count() >= 1
    screenshot(page, "user")


def test_log_out(page: Page) -> None:
    page.click("#logout")
    expect(page).to_have_url(re.compile(r"/login$"))
    screenshot(page, "login")
    page.goto("/p/demo/overview")
    expect(page).to_have_url(re.compile(r"/login\?next="))


# -- security ---------------------------------------------------------------------------------------


def test_markup_in_messages_renders_as_text(page: Page) -> None:
    page.goto("/p/demo/conversations/xss")
    transcript = page.locator("#transcript")
    expect(transcript).to_contain_text("<script>alert(1)</script>")
    expect(transcript).to_contain_text("<img src=x onerror=alert(2)>")
    assert transcript.locator("script").count() == 0
    assert page.locator("img[src=x]").count() == 0
    page.goto("/p/demo/conversations?q=onerror")
    expect(page.locator("#conversations")).to_contain_text("<script>alert(1)</script>")
    assert page.locator("img[src=x]").count() == 0
    screenshot(page, "xss-as-text")
    # the page fixture asserts that no dialog opened


def test_a_form_without_its_csrf_token_is_refused(web: RunningServer, people: dict[str, Account]) -> None:
    with signed_in(web, people["admin"]) as client:
        refused = client.post("/p/demo/topics", data={"name": "Sneaky", "kind": "keyword", "keywords": "x"})
        assert refused.status_code == 403
        forged = client.post(
            "/p/demo/topics", data={"name": "Sneaky", "kind": "keyword", "keywords": "x", "csrf_token": "forged"}
        )
        assert forged.status_code == 403
        assert "Sneaky" not in client.get("/p/demo/topics").text
        created = client.post(
            "/p/demo/topics", data={"name": "Honest", "kind": "keyword", "keywords": "x", "csrf_token": client.csrf}
        )
        assert created.status_code == 303
        assert client.post("/logout").status_code == 403  # logging out is a form too


def test_roles(web: RunningServer, people: dict[str, Account]) -> None:
    with signed_in(web, people["viewer"]) as viewer:
        assert viewer.get("/p/demo/overview").status_code == 200
        home = viewer.get("/p/demo/")  # a project's own address opens its overview
        assert home.status_code == 303 and home.headers["location"] == "/p/demo/overview"
        assert viewer.get("/p/demo").headers["location"] == "/p/demo/overview"
        assert viewer.get("/p/no-such-project/").status_code in (403, 404)
        assert viewer.get("/p/demo/settings").status_code == 403
        for path, data in (
            ("/p/demo/settings/tokens", {"scopes": "ingest"}),
            ("/p/demo/settings/members", {"email": "x@example.com", "role": "admin"}),
            ("/p/demo/topics", {"name": "Nope", "kind": "keyword", "keywords": "nope"}),
        ):
            assert viewer.post(path, data={**data, "csrf_token": viewer.csrf}).status_code == 403, path
        assert "Settings" not in viewer.get("/p/demo/overview").text.split("<main>")[0]
    with signed_in(web, people["member"]) as member:
        assert member.get("/p/demo/settings").status_code == 403
        made = member.post(
            "/p/demo/topics",
            data={"name": "Member topic", "kind": "keyword", "keywords": "m", "csrf_token": member.csrf},
        )
        assert made.status_code == 303


def test_pages_carry_a_strict_content_security_policy(web: RunningServer, people: dict[str, Account]) -> None:
    with signed_in(web, people["admin"]) as client:
        for path in ("/login", "/p/demo/overview", "/p/demo/conversations", "/p/demo/settings", "/p/nope/overview"):
            policy = client.get(path).headers["content-security-policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
            assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
        cookie = next(c for c in client.cookies.jar if c.name == "convolens_session")
        assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite", "").lower() == "lax"


def test_another_projects_pages_are_unreachable(web: RunningServer, people: dict[str, Account]) -> None:
    with signed_in(web, people["admin"]) as demo_admin:
        for path in ("/p/other/overview", "/p/other/conversations", "/p/other/conversations/secret-conv",
                     "/p/other/export.csv", "/p/other/settings", "/p/other/users/b-user"):  # fmt: skip
            response = demo_admin.get(path)
            assert response.status_code == 404, path
            assert "private question" not in response.text
        assert demo_admin.get("/p/demo/conversations/secret-conv").status_code == 404
        assert "secret-conv" not in demo_admin.get("/p/demo/export.csv").text
    with signed_in(web, people["outsider"]) as outsider:
        assert outsider.get("/p/demo/overview").status_code == 404
        assert outsider.get("/p/other/conversations/secret-conv").status_code == 200


def test_wrong_password_and_open_redirects(web: RunningServer, people: dict[str, Account]) -> None:
    with httpx.Client(base_url=web.base_url) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
        wrong = client.post(
            "/login", data={"email": people["admin"].email, "password": "nope", "csrf_token": token, "next": "/"}
        )
        assert wrong.status_code == 401 and "Wrong e-mail or password" in wrong.text
        ok = client.post(
            "/login",
            data={"email": people["admin"].email, "password": people["admin"].password, "csrf_token": token,
                  "next": "//evil.example/"},
        )  # fmt: skip
        assert ok.status_code == 303 and ok.headers["location"] == "/"


def test_the_users_create_cli(tmp_path: Path) -> None:
    import os
    import subprocess

    from conftest import CLI
    from convolens.store import accounts

    env = {**os.environ, "CONVOLENS_HOME": str(tmp_path)}
    env.pop("CONVOLENS_DATABASE_URL", None)
    made = subprocess.run(
        [*CLI, "users", "create", "--email", "PM@Example.com", "--role", "viewer", "--project", "shop"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    password = re.search(r"password \(shown once, to be changed at first sign-in\): (\S+)", made.stdout).group(1)
    again = subprocess.run(
        [*CLI, "users", "create", "--email", "pm@example.com", "--role", "admin", "--project", "shop"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert again.returncode == 0 and "unchanged" in again.stdout
    bad = subprocess.run(
        [*CLI, "users", "create", "--email", "not-an-address", "--role", "admin", "--project", "shop"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "e-mail" in bad.stderr
    db = Database(f"sqlite:///{tmp_path / 'convolens.sqlite3'}")
    with db.reader() as conn:
        pk = accounts.verify(conn, "pm@example.com", password)
        assert pk is not None and accounts.verify(conn, "pm@example.com", "wrong password") is None
        (membership,) = accounts.session(
            conn, accounts.start_session(conn, pk, accounts_now()), accounts_now()
        ).memberships
    assert (membership.project, membership.role) == ("shop", "admin")
    db.dispose()


def accounts_now():  # type: ignore[no-untyped-def]

    return utcnow()


# -- settings, suggestions and bad input, over HTTP ------------------------------------------------------


def test_members_are_managed_by_admins(web: RunningServer, people: dict[str, Account]) -> None:
    from convolens.store import accounts

    with signed_in(web, people["admin"]) as client:
        form = {"email": "New.PM@example.com", "role": "viewer", "csrf_token": client.csrf}
        added = client.post("/p/demo/settings/members", data=form)
        assert added.status_code == 201 and "new.pm@example.com" in added.text
        password = re.search(r'id="account-password">([^<]+)<', added.text).group(1)
        with web.db.reader() as conn:
            pk = accounts.verify(conn, "new.pm@example.com", password)
            admin_pk = accounts.account_pk(conn, people["admin"].email)
            demo = projects.get_project_pk(conn, DEMO_PROJECT)
        assert pk is not None
        promoted = client.post(f"/p/demo/settings/members/{pk}", data={"role": "member", "csrf_token": client.csrf})
        assert promoted.status_code == 303
        with web.db.reader() as conn:
            assert (pk, "new.pm@example.com", "member") in accounts.members(conn, demo)
        # The only admin of the project cannot demote or remove themselves.
        for role in ("viewer", "remove"):
            kept = client.post(f"/p/demo/settings/members/{admin_pk}", data={"role": role, "csrf_token": client.csrf})
            assert kept.status_code == 409 and "at least one admin" in kept.text
        bad = client.post("/p/demo/settings/members", data={**form, "email": "nope"})
        assert bad.status_code == 422 and "email" in bad.text
        odd_role = client.post("/p/demo/settings/members", data={**form, "role": "owner"})
        assert odd_role.status_code == 422 and "role" in odd_role.text
        removed = client.post(f"/p/demo/settings/members/{pk}", data={"role": "remove", "csrf_token": client.csrf})
        assert removed.status_code == 303
        with web.db.reader() as conn:
            assert all(m[0] != pk for m in accounts.members(conn, demo))


def test_llm_key_is_never_shown_back(web: RunningServer, people: dict[str, Account]) -> None:
    with signed_in(web, people["admin"]) as client:
        form = {
            "base_url": "https://llm.example/v1",
            "model": "m1",
            "api_key": "sk-very-secret-1234",
            "csrf_token": client.csrf,
        }
        assert client.post("/p/demo/settings/llm", data=form).status_code == 303
        page = client.get("/p/demo/settings").text
        assert "sk-very-secret-1234" not in page and "https://llm.example/v1" in page and "set (leave empty" in page
        assert client.post("/p/demo/settings/llm", data={**form, "api_key": "", "model": "m2"}).status_code == 303
        with web.db.reader() as conn:
            stored = projects.settings_of(conn, projects.get_project_pk(conn, DEMO_PROJECT))["llm"]
        assert stored == {"base_url": "https://llm.example/v1", "model": "m2", "api_key": "sk-very-secret-1234"}
        bad = client.post("/p/demo/settings/llm", data={**form, "base_url": "ftp://x"})
        assert bad.status_code == 422 and "base_url" in bad.text
        assert client.post("/p/demo/settings/llm", data={"clear": "1", "csrf_token": client.csrf}).status_code == 303
        with web.db.reader() as conn:
            assert projects.settings_of(conn, projects.get_project_pk(conn, DEMO_PROJECT))["llm"] is None


def _stored_llm(web: RunningServer) -> dict | None:
    with web.db.reader() as conn:
        return projects.settings_of(conn, projects.get_project_pk(conn, DEMO_PROJECT)).get("llm")


@pytest.mark.parametrize(
    ("base_url", "problem"),
    [
        ("http://127.0.0.1:5432/v1", "not public"),
        ("http://169.254.169.254/latest", "not public"),
        ("http://0x7f000001/v1", "not public"),
        ("http://2130706433/v1", "not public"),
        ("http://[fd00:ec2::254]/v1", "not public"),
        ("http://[::ffff:127.0.0.1]/v1", "not public"),
        ("http://localhost:5432/v1", "not public"),
        ("https://intranet.example/v1", "resolves to 10.0.0.9"),
        ("https://llm.example/v1?x=", "query"),
        ("https://admin:pw-in-url@llm.example/v1", "user name or password"),
    ],
)
def test_llm_provider_url_must_be_public(
    web: RunningServer, people: dict[str, Account], base_url: str, problem: str
) -> None:
    """A project admin cannot point the provider at this machine, its network or a metadata service:
    the settings page says why, naming the field, and nothing is saved."""
    with signed_in(web, people["admin"]) as client:
        form = {"base_url": base_url, "model": "m", "api_key": "sk-x", "csrf_token": client.csrf}
        refused = client.post("/p/demo/settings/llm", data=form)
        assert refused.status_code == 422
        error = re.search(r'<p class="error" id="llm-error" role="alert">([^<]*)</p>', refused.text)
        assert error and error.group(1).startswith("base_url: ") and problem in error.group(1), refused.text
        assert "pw-in-url" not in refused.text
    assert _stored_llm(web) is None


def test_llm_key_is_bound_to_its_origin(web: RunningServer, people: dict[str, Account]) -> None:
    """An empty key field keeps the stored key only while the provider's scheme, host and port stay the
    same: re-pointing it elsewhere would otherwise send the key there."""
    with signed_in(web, people["admin"]) as client:

        def save(base_url: str, api_key: str = "") -> httpx.Response:
            form = {"base_url": base_url, "model": "m", "api_key": api_key, "csrf_token": client.csrf}
            return client.post("/p/demo/settings/llm", data=form)

        assert save("https://llm.example/v1", "sk-bound-1").status_code == 303
        assert save("https://LLM.example:443/v2/").status_code == 303  # the path only: the key stays
        assert _stored_llm(web) == {"base_url": "https://llm.example/v2", "model": "m", "api_key": "sk-bound-1"}
        for elsewhere in ("https://other.example/v2", "https://llm.example:8443/v2", "http://llm.example/v2"):
            assert save("https://llm.example/v2", "sk-bound-1").status_code == 303
            moved = save(elsewhere)
            assert moved.status_code == 200 and 'id="llm-notice"' in moved.text and "key was removed" in moved.text
            assert _stored_llm(web) == {"base_url": elsewhere, "model": "m", "api_key": None}, elsewhere
            assert "set (leave empty" not in moved.text
        assert save("https://other.example/v1", "sk-new-2").status_code == 303  # a new key with the new origin
        assert _stored_llm(web)["api_key"] == "sk-new-2"
        with web.db.writer() as conn:  # a URL saved before credentials were refused
            llm = {"base_url": "https://admin:pw-old-url@llm.example/v1", "model": "m", "api_key": "sk-old"}
            projects.set_project_setting(conn, DEMO_PROJECT, "llm", llm)
        page = client.get("/p/demo/settings").text
        assert "pw-old-url" not in page and 'value="https://llm.example/v1"' in page
        assert client.post("/p/demo/settings/llm", data={"clear": "1", "csrf_token": client.csrf}).status_code == 303
    assert _stored_llm(web) is None


def test_suggestions_are_accepted_or_dismissed(web: RunningServer, people: dict[str, Account]) -> None:
    from convolens.store import topics

    with web.db.writer() as conn:
        demo = projects.get_project_pk(conn, DEMO_PROJECT)
        make = lambda name: topics.create(  # noqa: E731
            conn, demo, name=name, kind="suggested", status="suggested", now=utcnow(),
            definition={"keywords": ["visa"], "phrases": ["Do I need a visa?"], "size": 12, "threshold": 0.5},
        )  # fmt: skip
        keep, drop = make("visa, japan"), make("egg, boil")
    with signed_in(web, people["member"]) as client:
        listing = client.get("/p/demo/topics").text
        assert "visa, japan" in listing and "Do I need a visa?" in listing
        accepted = client.post(f"/p/demo/topics/{keep}/accept", data={"name": "Visas", "csrf_token": client.csrf})
        assert accepted.status_code == 303
        dismissed = client.post(f"/p/demo/topics/{drop}/dismiss", data={"csrf_token": client.csrf})
        assert dismissed.status_code == 303
        again = client.post(f"/p/demo/topics/{keep}/accept", data={"csrf_token": client.csrf})
        assert again.status_code == 409
    with web.db.reader() as conn:
        accepted_row, dropped_row = topics.get(conn, demo, keep), topics.get(conn, demo, drop)
    assert (accepted_row.name, accepted_row.kind, accepted_row.status) == ("Visas", "semantic", "active")
    assert accepted_row.definition["examples"] == ["Do I need a visa?"]
    assert dropped_row.status == "dismissed"


def test_bad_input_gets_a_page_naming_the_problem(web: RunningServer, people: dict[str, Account]) -> None:
    with signed_in(web, people["admin"]) as client:
        for path, word in (
            ("/p/demo/overview?start=yesterday", "dates"),
            ("/p/demo/overview?start=2026-12-01&end=2026-01-01", "start"),
            ("/p/demo/conversations?topic=abc", "topic"),
            ("/p/demo/conversations?sentiment=furious", "sentiment"),
            ("/p/demo/conversations?meta=nokey", "key=value"),
            ("/p/demo/conversations?q=%00", "printable"),
            ("/p/demo/users?sort=password", "sort"),
            ("/p/demo/topics/99999999", "no such topic"),
            ("/p/demo/export.xml", "csv"),
        ):
            response = client.get(path)
            assert 400 <= response.status_code < 500, (path, response.status_code)
            assert word in response.text, path
        empty = client.post("/p/demo/topics", data={"name": "", "kind": "keyword", "csrf_token": client.csrf})
        assert empty.status_code == 422 and "name" in empty.text
        no_keywords = client.post("/p/demo/topics", data={"name": "K", "kind": "keyword", "csrf_token": client.csrf})
        assert no_keywords.status_code == 422 and "keyword" in no_keywords.text
        long_query = client.get("/p/demo/conversations", params={"q": "x" * 5000})
        assert long_query.status_code == 200
        for path, status, word in (("/p/demo/users?page=abc", 422, "page"), ("/p/demo/nowhere", 404, "Not Found")):
            page = client.get(path)
            assert page.status_code == status and word in page.text and page.text.startswith("<!doctype html>")
        assert client.get("/api/v1/nowhere").headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("end=0001-01-01", "end"),  # the default start, 30 days before, was before year 1: a 500
        ("start=0001-01-01&end=0001-01-02", "start"),
        ("start=9999-12-30&end=9999-12-31", "start"),  # a bucket edge a day later was after 9999: a 500
        ("end=9999-12-31", "end"),
        ("start=1969-12-31&end=1970-01-05", "start"),
        ("start=2026-13-45", "start"),
    ],
)
def test_a_date_out_of_range_is_a_400_page_naming_it(
    web: RunningServer, people: dict[str, Account], query: str, parameter: str
) -> None:
    topic_id = api(web, "/api/v1/topics")["topics"][0]["id"]
    with signed_in(web, people["viewer"]) as client:
        for page in ("overview", "conversations", "users", "topics", f"topics/{topic_id}", "export.csv"):
            response = client.get(f"/p/demo/{page}?{query}")
            assert response.status_code == 400, (page, response.status_code)
            assert response.text.startswith("<!doctype html>") and f"{parameter}: dates must" in response.text, page


def test_the_project_switcher_lists_every_project_of_the_account(web: RunningServer) -> None:
    both = add_account(web.db, "both@example.com", DEMO_PROJECT, "viewer")
    add_account(web.db, "both@example.com", "other", "member")
    with signed_in(web, both) as client:
        page = client.get("/p/demo/overview").text
        assert 'href="/p/other/overview"' in page and 'href="/p/demo/overview"' in page
        assert client.get("/p/other/conversations/secret-conv").status_code == 200


def test_sign_in_attempts_are_limited(web: RunningServer) -> None:
    with httpx.Client(base_url=web.base_url) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
        guess = {"email": "victim@example.com", "password": "guess", "csrf_token": token, "next": "/"}
        # Ten guesses, then refused. The allowance refills one guess per 6 s, so on a slow machine the
        # refusal may come a guess or two later: count the refills the guesses' own duration allows.
        started = time.monotonic()
        statuses: list[int] = []
        while 429 not in statuses and len(statuses) < 30:
            statuses.append(client.post("/login", data=guess).status_code)
        refills = int((time.monotonic() - started) / 6) + 1
        assert statuses[-1] == 429 and set(statuses[:-1]) == {401}
        assert 10 <= len(statuses) - 1 <= 10 + refills
        other = client.post("/login", data={**guess, "email": "someone-else@example.com"})
        assert other.status_code == 401  # the limit is per e-mail, not a lock-out of everyone
