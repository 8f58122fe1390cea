"""The evaluation pages beyond test sets and runs, in a browser: online evaluation (a rule's pass rate by
day, topic and model; its rules and the LLM allowance), the setup page (the app under test, collection
rules) and a run cancelled by its button. The workers are stepped by the test."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from conftest import Project, RunningServer, make_project, running_server
from convolens.outbound import OutboundPolicy
from convolens.store import migrate
from convolens.store.db import Database
from convolens.worker.runner import Worker
from web_support import Account, add_account, launch_chromium, screenshot, signed_in


class Site:
    def __init__(self, server: RunningServer, project: Project, admin: Account, viewer: Account) -> None:
        self.server, self.project, self.admin, self.viewer = server, project, admin, viewer
        self.base = f"/p/{quote(project.name)}/evaluations"


def _log(api: httpx.Client, user: str, reply: str, model: str) -> None:
    said = [{"role": "user", "message": user}, {"role": "assistant", "message": reply}]
    body = {"conversation": {"messages": said, "metadata": {"model": model}}}
    assert api.post("/api/v1/log/conversation", json=body).status_code == 201


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("evaluation-pages")
    db = Database(f"sqlite:///{home / 'convolens.sqlite3'}")
    migrate.upgrade(db)
    loopback = OutboundPolicy.parse("127.0.0.0/8")
    with running_server(db, home, outbound=loopback, embedded_worker=False) as server:
        project = make_project(db, "pages")
        admin = add_account(db, "admin@example.com", project.name, "admin")
        viewer = add_account(db, "viewer@example.com", project.name, "viewer")
        with server.client(project.admin_token) as api:
            made = api.post("/api/v1/topics", json={"name": "Orders", "kind": "keyword", "keywords": ["order"]})
            assert made.status_code == 201
            rule = {"evaluator": {"evaluator": "attempts_answer"}, "sample_rate": 1}
            assert api.post("/api/v1/evaluations/online_rules", json=rule).status_code == 201
            _log(api, "Where is my order?", "It shipped yesterday and arrives on Friday.", "model-a")
            _log(api, "Cancel my order", "I'm sorry, I can't help with that.", "model-a")
            _log(api, "Do you ship to Norway?", "Yes, to Norway in about five days.", "model-b")
        worker = Worker(db)
        worker.drain()
        worker.evaluate_runs.online_settle = timedelta(0)
        assert worker.evaluate_runs.online() == 3
        yield Site(server, project, admin, viewer)
    db.dispose()


def _sign_in(page: Page, account: Account) -> None:
    page.goto("/login")
    page.fill("input[name=email]", account.email)
    page.fill("input[name=password]", account.password)
    page.click("button[type=submit]")


def test_online_scores_by_day_topic_and_model_and_rules_from_the_page(site: Site) -> None:
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page: Page = browser.new_page(viewport={"width": 1280, "height": 800}, base_url=site.server.base_url)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        _sign_in(page, site.admin)
        page.goto(site.base)
        page.click("text=Online evaluation →")
        expect(page.locator("#online-total")).to_contain_text("67% passed")
        expect(page.locator("#online-total")).to_contain_text("2 of 3 replies judged")
        expect(page.locator("#online-by-model tbody tr").nth(0)).to_contain_text("model-a")
        expect(page.locator("#online-by-model tbody tr").nth(0)).to_contain_text("50%")
        expect(page.locator("#online-by-model tbody tr").nth(1)).to_contain_text("100%")
        expect(page.locator("#online-by-topic tbody tr")).to_have_count(1)
        expect(page.locator("#online-by-topic tbody tr")).to_contain_text("Orders")
        expect(page.locator("#online-scores .uplot")).to_have_count(1)  # the chart drew
        screenshot(page, "evaluations-online", full_page=True)

        page.select_option("#add-online-rule select[name=evaluator]", "regex")
        page.fill("#add-online-rule input[name=options]", '{"pattern": "Norway"}')
        page.fill("#add-online-rule input[name=sample_rate]", "0.5")
        page.click("#add-online-rule button[type=submit]")
        expect(page).to_have_url(re.compile(r"/evaluations/online\?rule=\d+$"))
        expect(page.locator("#online-empty")).to_be_visible()
        expect(page.locator("#online-rules tbody tr")).to_have_count(2)
        expect(page.locator("#online-rules tbody tr").nth(1)).to_contain_text("50%")

        page.fill("#online-budget input[name=llm_daily_cap]", "50")
        page.click("#online-budget button[type=submit]")
        expect(page.locator("#online-budget")).to_contain_text("0 of 50 replies")
        page.locator("#online-rules tbody tr").nth(1).locator("button").click()
        expect(page.locator("#online-rules tbody tr")).to_have_count(1)
        browser.close()
    assert errors == []
    with signed_in(site.server, site.admin) as client:
        bad = {"evaluator": "regex", "options": "{not json", "sample_rate": "1", "csrf_token": client.csrf}
        refused = client.post(f"{site.base}/online/rules", data=bad)
        assert refused.status_code == 422 and "options: not valid JSON" in refused.text
        unknown = client.post(f"{site.base}/online/rules", data=bad | {"evaluator": "nope", "options": ""})
        assert unknown.status_code == 422 and "evaluator: no evaluator named" in unknown.text
    with signed_in(site.server, site.viewer) as client:
        page_text = client.get(f"{site.base}/online").text
        assert "67% passed" in page_text and 'id="add-online-rule"' not in page_text
        data = {"llm_daily_cap": "5", "csrf_token": client.csrf}
        assert client.post(f"{site.base}/online/budget", data=data).status_code == 403


def test_the_app_under_test_and_collection_rules_are_set_on_the_setup_page(site: Site) -> None:
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page: Page = browser.new_page(viewport={"width": 1280, "height": 800}, base_url=site.server.base_url)
        _sign_in(page, site.admin)
        page.goto(f"{site.base}/setup")
        expect(page.locator("#app-now")).to_contain_text("No app under test")
        page.fill("#app-form input[name=url]", "http://127.0.0.1:9/chat")
        page.fill("#app-form input[name=authorization]", "Bearer s3")
        page.click("#app-form button[type=submit]")
        expect(page.locator("#app-now")).to_contain_text("http://127.0.0.1:9/chat")
        expect(page.locator("#app-now")).to_contain_text("with the Authorization header you set")
        # Saved again with the header left empty: the stored one is kept.
        page.click("#app-form button[type=submit] >> text=Save")
        expect(page.locator("#app-now")).to_contain_text("with the Authorization header you set")

        page.fill("#add-collect-rule input[name=test_set]", "thumbs-down")
        page.select_option("#add-collect-rule select[name=topic]", label="about Orders")
        page.fill("#add-collect-rule input[name=sample_rate]", "0.25")
        page.click("#add-collect-rule button[type=submit]")
        expect(page.locator("#collect-rules tbody tr")).to_have_count(1)
        expect(page.locator("#collect-rules tbody tr")).to_contain_text("thumbs-down about Orders")
        expect(page.locator("#collect-rules tbody tr")).to_contain_text("25%")
        screenshot(page, "evaluations-setup", full_page=True)
        browser.close()
    with site.server.client(site.project.admin_token) as api:
        app = api.get("/api/v1/evaluations/app").json()
        rules = api.get("/api/v1/evaluations/collect_rules").json()["rules"]
    assert app == {"url": "http://127.0.0.1:9/chat", "has_authorization": True}
    assert [(r["test_set_name"], r["sample_rate"], r["keep"]) for r in rules] == [("thumbs-down", 0.25, "avoid")]
    with signed_in(site.server, site.admin) as client:
        refused = client.post(f"{site.base}/setup/app", data={"url": "ftp://example.com/x", "csrf_token": client.csrf})
        assert refused.status_code == 422 and "url:" in refused.text
        removed = client.post(f"{site.base}/setup/rules/{rules[0]['id']}/remove", data={"csrf_token": client.csrf})
        assert removed.status_code == 303
        again = client.post(f"{site.base}/setup/rules/{rules[0]['id']}/remove", data={"csrf_token": client.csrf})
        assert again.status_code == 404
        assert client.post(f"{site.base}/setup/app", data={"remove": "1", "csrf_token": client.csrf}).status_code == 303
    with signed_in(site.server, site.viewer) as client:
        text = client.get(f"{site.base}/setup").text
        assert "No app under test" in text and 'id="app-form"' not in text
        data = {"url": "http://127.0.0.1:9/x", "csrf_token": client.csrf}
        assert client.post(f"{site.base}/setup/app", data=data).status_code == 403


def test_a_run_is_cancelled_with_its_button(site: Site) -> None:
    cases = [{"name": f"c{i}", "messages": [{"role": "user", "message": "hi"}], "pregenerated_response": "hello"}
             for i in range(3)]  # fmt: skip
    with site.server.client(site.project.token) as api:
        body = {
            "name": "slow",
            "test_cases": cases,
            "evaluators": [{"evaluator": "length", "options": {"max_words": 5}}],
        }
        assert api.post("/api/v1/test_sets", json=body).status_code == 201
        run_id = api.post("/api/v1/evaluations/run", json={"test_set_name": "slow", "version": 1}).json()["data"][
            "run_id"
        ]
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page: Page = browser.new_page(viewport={"width": 1280, "height": 800}, base_url=site.server.base_url)
        _sign_in(page, site.admin)
        page.goto(f"{site.base}/runs/{run_id}")
        expect(page.locator("#summary")).to_contain_text("pending")
        screenshot(page, "evaluations-run-cancel-button")
        page.click("#cancel-run button")
        expect(page.locator("#summary")).to_contain_text("cancelled")
        expect(page.locator("#cancel-run")).to_have_count(0)
        expect(page.locator("#results")).to_contain_text("No item was evaluated before the run was cancelled")
        screenshot(page, "evaluations-run-cancelled")
        browser.close()
    with site.server.client(site.project.token) as api:
        read = api.get(f"/api/v1/evaluations/run/{run_id}").json()
    assert (read["status"], read["cancelled"], read["progress"]["completed"]) == ("errored", True, 0)
    with signed_in(site.server, site.viewer) as client:
        assert "cancel-run" not in client.get(f"{site.base}/runs/{run_id}").text
        refused = client.post(f"{site.base}/runs/{run_id}/cancel", data={"csrf_token": client.csrf})
        assert refused.status_code == 403
    with signed_in(site.server, site.admin) as client:
        finished = client.post(f"{site.base}/runs/{run_id}/cancel", data={"csrf_token": client.csrf})
        assert finished.status_code == 409
