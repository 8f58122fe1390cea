"""Translations where people read them: the Context read API, the transcript (original and translation side
by side, a toggle), the conversation list, the exports and the settings page, against a real server whose
project's provider is the local OpenAI-compatible stub. Leaves screenshots in test-artifacts/screenshots/."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from conftest import Project, RunningServer, make_project, running_server
from convolens.outbound import OutboundPolicy
from convolens.store import migrate, projects, translations
from convolens.store.db import Database
from openai_stub import openai_stub
from web_support import Account, add_account, launch_chromium, screenshot, signed_in

KOREAN = [
    ("user", "안녕하세요. 지난달에 결제가 두 번 되었는데 환불받을 수 있을까요?"),
    ("assistant", "불편을 드려 죄송합니다. 중복 결제를 확인했고 환불을 요청했습니다. 3~5일 안에 처리됩니다."),
    ("user", "감사합니다! 그리고 <b>굵게</b> 표시된 요금제를 해지하고 싶어요."),
    ("assistant", "해지는 설정 > 구독 메뉴에서 언제든지 할 수 있습니다."),
]
ENGLISH = "Thanks, that answers my question about invoices."
# What a real model would answer, so that the screenshots read as they would in use.
IN_ENGLISH = {
    KOREAN[0][1]: "Hello. I was charged twice last month. Can I get a refund?",
    KOREAN[1][1]: "Sorry for the trouble. I found the duplicate charge and requested a refund. "
    "It will be processed within 3-5 days.",
    KOREAN[2][1]: "Thank you! And I want to cancel the plan shown in <b>bold</b>.",
    KOREAN[3][1]: "You can cancel at any time under Settings > Subscription.",
}


def into_english(target: str, texts: list[str]) -> dict:
    return {"translations": [IN_ENGLISH.get(text, f"[{target}] {text}") for text in texts]}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Project, list[dict]]]:
    home = tmp_path_factory.mktemp("translation-web")
    db = Database(f"sqlite:///{home / 'convolens.sqlite3'}")
    migrate.upgrade(db)
    project = make_project(db, "tr")
    with openai_stub(lambda topic, text: None, translate=into_english) as (url, requests):
        with db.writer() as conn:
            projects.set_project_setting(conn, project.name, "llm", {"base_url": url, "model": "stub-model"})
            projects.set_project_setting(conn, project.name, "translation", {"enabled": True, "daily_cap": 100})
        with running_server(db, home, outbound=OutboundPolicy.parse("127.0.0.1")) as server:
            with server.client(project.admin_token) as client:
                topic = {"name": "Refunds", "kind": "keyword", "keywords": ["환불"]}
                assert client.post("/api/v1/topics", json=topic).status_code == 201
                for thread_id, messages in (("ko-refund", KOREAN), ("en-thanks", [("user", ENGLISH)])):
                    body = {"conversation": {"id": thread_id, "messages": [
                        {"role": r, "message": t} for r, t in messages
                    ]}}  # fmt: skip
                    assert client.post("/api/v1/log/conversation/thread", json=body).status_code == 201
                _wait_for_translations(client)
            yield server, project, requests
    db.dispose()


def _wait_for_translations(client: httpx.Client, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        view = client.get("/api/v1/conversations/ko-refund").json()
        if all(m["translation"] for m in view["messages"]):
            return
        assert time.monotonic() < deadline, view
        time.sleep(0.2)


@pytest.fixture(scope="module")
def admin(site: tuple[RunningServer, Project, list[dict]]) -> Account:
    server, project, _ = site
    return add_account(server.db, "translation-admin@example.com", project.name, "admin")


def test_the_read_api_shows_translations(site: tuple[RunningServer, Project, list[dict]]) -> None:
    server, project, requests = site
    with server.client(project.read_token) as client:
        korean = client.get("/api/v1/conversations/ko-refund").json()
        english = client.get("/api/v1/conversations/en-thanks").json()
    assert [m["translation"] for m in korean["messages"]] == [IN_ENGLISH[text] for _, text in KOREAN]
    assert english["messages"][0]["translation"] is None  # the project's own language
    translation_calls = [r for r in requests if "texts" in r["body"]["messages"][-1]["content"]]
    assert len(translation_calls) == 1  # the whole conversation in one request


def test_exports_carry_the_translation(site: tuple[RunningServer, Project, list[dict]], admin: Account) -> None:
    server, project, _ = site
    base = f"/p/{quote(project.name)}"
    with signed_in(server, admin) as client:
        rows = {r["id"]: r for r in csv.DictReader(io.StringIO(client.get(f"{base}/export.csv").text))}
        lines = [json.loads(line) for line in client.get(f"{base}/export.jsonl").text.splitlines()]
    assert rows["ko-refund"]["first_user_message_translation"] == IN_ENGLISH[KOREAN[0][1]]
    assert rows["en-thanks"]["first_user_message_translation"] == ""
    by_id = {line["id"]: line for line in lines}
    assert by_id["ko-refund"]["messages"][1]["translation"] == IN_ENGLISH[KOREAN[1][1]]


def test_topic_samples_carry_the_translation(site: tuple[RunningServer, Project, list[dict]], admin: Account) -> None:
    server, project, _ = site
    base = f"/p/{quote(project.name)}"
    with signed_in(server, admin) as client:
        topics_page = client.get(f"{base}/topics").text
        with server.client(project.read_token) as api:
            topic_id = api.get("/api/v1/topics").json()["topics"][0]["id"]
        topic_page = client.get(f"{base}/topics/{topic_id}").text
    # Representative messages on the topics page, and sample conversations on the topic's own page.
    expected = f'<div class="preview-translation">{IN_ENGLISH[KOREAN[0][1]]}</div>'
    assert expected in topics_page
    assert f'<span class="preview-translation">{IN_ENGLISH[KOREAN[0][1]]}</span>' in topic_page


def test_translation_settings_are_checked_and_saved(
    site: tuple[RunningServer, Project, list[dict]], admin: Account
) -> None:
    server, project, _ = site
    url = f"/p/{quote(project.name)}/settings/translation"
    with signed_in(server, admin) as client:
        form = {"csrf_token": client.csrf, "enabled": "on", "language": "en", "daily_cap": "100"}
        bad_language = client.post(url, data={**form, "language": "english"})
        assert bad_language.status_code == 422 and "language" in bad_language.text
        bad_cap = client.post(url, data={**form, "daily_cap": "-5"})
        assert bad_cap.status_code == 422 and "daily_cap" in bad_cap.text
        assert client.post(url, data={**form, "language": "DE", "daily_cap": "250"}).status_code == 303
        with server.db.reader() as conn:
            saved = translations.settings_from(projects.settings_of(conn, project.pk))
        assert saved == translations.TranslationSettings(language="de", enabled=True, daily_cap=250)
        page = client.get(f"/p/{quote(project.name)}/settings").text
        assert 'id="translated-today"' in page and "4 of 250" in page
        # Back as it was, for the other tests of this module.
        assert client.post(url, data=form).status_code == 303


def test_a_korean_transcript_beside_its_translation(
    site: tuple[RunningServer, Project, list[dict]], admin: Account
) -> None:
    server, project, _ = site
    base = f"/p/{quote(project.name)}"
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page: Page = browser.new_page(viewport={"width": 1280, "height": 800}, base_url=server.base_url)
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto("/login")
        page.fill("input[name=email]", admin.email)
        page.fill("input[name=password]", admin.password)
        page.click("button[type=submit]")
        page.goto(f"{base}/conversations")
        row = page.locator("#conversations tr", has=page.locator("a[href$='/conversations/ko-refund']"))
        expect(row.locator(".preview-translation")).to_have_text(IN_ENGLISH[KOREAN[0][1]])
        screenshot(page, "translation-conversations")
        page.goto(f"{base}/conversations/ko-refund")
        transcript = page.locator("#transcript")
        originals, translated = transcript.locator(".original"), transcript.locator(".translation")
        expect(originals).to_have_count(4)
        expect(translated.first).to_contain_text(IN_ENGLISH[KOREAN[0][1]])
        expect(originals.first).to_have_attribute("lang", "ko")
        # Side by side: the translation starts level with its original, to its right.
        left, right = originals.first.bounding_box(), translated.first.bounding_box()
        assert left and right and right["x"] > left["x"] + left["width"] - 1 and abs(right["y"] - left["y"]) < 2
        # Markup in a message (and in its translation) is text, never HTML.
        expect(originals.nth(2)).to_contain_text("<b>굵게</b>")
        expect(translated.nth(2)).to_contain_text("<b>bold</b>")
        expect(translated.first.locator(".label")).to_have_text("Translation (en)")
        screenshot(page, "translation-transcript")
        toggle = page.locator("#toggle-translation")
        toggle.click()
        expect(translated.first).to_be_hidden()
        expect(originals.first).to_be_visible()
        expect(toggle).to_have_text("Show translations")
        screenshot(page, "translation-transcript-hidden")
        toggle.click()
        expect(translated.first).to_be_visible()
        page.goto(f"{base}/conversations/en-thanks")
        expect(page.locator("#toggle-translation")).to_have_count(0)  # nothing translated, no toggle
        page.goto(f"{base}/settings")
        section = page.locator("section", has=page.locator("#translation"))
        expect(section.locator("input[name=enabled]")).to_be_checked()
        section.scroll_into_view_if_needed()
        screenshot(page, "translation-settings")
        assert dialogs == []
        browser.close()
