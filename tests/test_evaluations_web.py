"""The evaluations pages in a browser: test sets and runs, one run's verdicts and reasons, what changed
between two versions, and two runs side by side (what got better, what got worse)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from conftest import RunningServer, make_project, running_server
from convolens.config import Limits
from convolens.store import migrate
from convolens.store.db import Database
from web_support import Account, add_account, launch_chromium, screenshot, signed_in

GOLDEN = {"golden_response": "Your order ships within 2 business days.", "capitalization": "agnostic",
          "punctuation": "agnostic"}  # fmt: skip


def _case(name: str, question: str, response: str) -> dict:
    return {"name": name, "messages": [{"role": "user", "message": question}], "pregenerated_response": response}


def _wait(api: httpx.Client, run_id: str) -> None:
    deadline = time.monotonic() + 60
    while api.get(f"/api/v1/evaluations/run/{run_id}").json()["status"] not in ("completed", "errored"):
        assert time.monotonic() < deadline
        time.sleep(0.2)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, str, Account, list[str]]]:
    home = tmp_path_factory.mktemp("evaluations-web")
    db = Database(f"sqlite:///{home / 'convolens.sqlite3'}")
    migrate.upgrade(db)
    with running_server(db, home, Limits()) as server:
        project = make_project(db, "shop")
        viewer = add_account(db, "viewer@example.com", project.name, "viewer")
        server.member = add_account(db, "member@example.com", project.name, "member")  # type: ignore[attr-defined]
        server.token = project.token  # type: ignore[attr-defined]
        evaluators = [{"evaluator": "golden_response", "options": GOLDEN},
                      {"evaluator": "length", "options": {"max_words": 12}}]  # fmt: skip
        before = [
            _case("shipping time", "How long does shipping take?", "Your order ships within 2 business days."),
            _case("shipping, rephrased", "When will it ship?", "It depends on many factors, hard to say."),
            _case("shipping, upset", "Why is it so slow?!", "your order ships within 2 business days"),
        ]
        after = [  # the prompt change: the rephrased case fixed, the upset one broken
            _case("shipping, rephrased", "When will it ship?", "Your order ships within 2 business days!"),
            _case("shipping, upset", "Why is it so slow?!", "I understand. Delivery times vary a lot, sorry."),
            _case("shipping, abroad", "Do you ship to Norway?", "Your order ships within 2 business days."),
        ]
        runs = []
        with server.client(project.admin_token) as admin:
            for topic in ({"name": "Shipping", "kind": "keyword", "keywords": ["ship", "shipping"]},
                          {"name": "Gift cards", "kind": "keyword", "keywords": ["gift card"]}):  # fmt: skip
                assert admin.post("/api/v1/topics", json=topic).status_code == 201
            for text in ("Can I pay with a gift card?", "gift card balance", "my gift card expired", "ship to Oslo?"):
                said = {"messages": [{"role": "user", "message": text}, {"role": "assistant", "message": "ok"}]}
                assert admin.post("/api/v1/log/conversation", json={"conversation": said}).status_code == 201
        with server.client(project.token) as api:
            assert api.post("/api/v1/test_sets", json={"name": "shipping", "test_cases": before,
                                                       "evaluators": evaluators}).status_code == 201  # fmt: skip
            assert api.post("/api/v1/test_sets", params={"copy_test_cases_from": "prior_version"},
                            json={"name": "shipping", "test_cases": after}).status_code == 201  # fmt: skip
            for version in (1, 2):
                started = api.post("/api/v1/evaluations/run", json={"test_set_name": "shipping", "version": version})
                runs.append(started.json()["data"]["run_id"])
                _wait(api, runs[-1])
            deadline = time.monotonic() + 120
            while True:  # the production messages enriched and rolled up, the cases embedded
                found = api.get("/api/v1/evaluations/coverage").json()
                volumes = {t["name"]: t["messages"] for t in found["topics"]}
                if volumes.get("Gift cards") == 3 and not found["test_cases_not_yet_matched"]:
                    break
                assert time.monotonic() < deadline, found
                time.sleep(0.5)
        yield server, project.name, viewer, runs
    db.dispose()


def test_the_pages_answer_and_refuse_what_is_not_there(site: tuple[RunningServer, str, Account, list[str]]) -> None:
    server, project, viewer, (first, _) = site
    base = f"/p/{quote(project)}/evaluations"
    with signed_in(server, viewer) as client:
        listing = client.get(base)
        assert listing.status_code == 200 and "shipping" in listing.text and first[:8] in listing.text
        run = client.get(f"{base}/runs/{first}")
        assert "<strong>2</strong> passed (67%)" in run.text
        assert "the response differs from the golden response" in run.text
        assert client.get(f"{base}/runs/{'f' * 32}").status_code == 404
        assert client.get(f"{base}/runs/not-an-id").status_code == 404
        assert client.get(f"{base}/compare", params={"a": first, "b": "x"}).status_code == 422
        assert client.get(f"{base}/sets/none-such").status_code == 404
        assert client.get(f"{base}/sets/shipping", params={"version": 9}).status_code == 404
    with httpx.Client(base_url=server.base_url) as anonymous:
        assert anonymous.get(base).status_code == 303  # to the sign-in page


def test_runs_and_versions_in_a_browser(site: tuple[RunningServer, str, Account, list[str]]) -> None:
    server, project, viewer, (first, _) = site
    base = f"/p/{quote(project)}/evaluations"
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page: Page = browser.new_page(viewport={"width": 1280, "height": 800}, base_url=server.base_url)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("/login")
        page.fill("input[name=email]", viewer.email)
        page.fill("input[name=password]", viewer.password)
        page.click("button[type=submit]")
        page.goto(base)
        expect(page.locator("#test-sets tbody tr")).to_have_count(1)
        expect(page.locator("#runs tbody tr")).to_have_count(2)
        expect(page.locator("#runs tbody tr").first).to_contain_text("4 / 4")  # v2: 4 cases
        expect(page.locator("#runs tbody tr").first).to_contain_text("75% (3)")
        screenshot(page, "evaluations-overview")
        expect(page.locator("#uncovered")).to_contain_text("Gift cards · 3")
        shipping = page.locator("#coverage tr", has_text="Shipping")
        expect(shipping).to_contain_text("3")  # the three v2 cases that ask about shipping
        expect(shipping).to_contain_text("100% (3/3)")
        page.locator("#coverage").scroll_into_view_if_needed()
        screenshot(page, "evaluations-coverage")

        page.click(f"a[href='{base}/runs/{first}']")
        expect(page.locator("#results tbody tr")).to_have_count(3)
        expect(page.locator("#results tr.failed")).to_have_count(1)
        expect(page.locator("#summary")).to_contain_text("3 / 3 items evaluated, 2 passed (67%)")
        rephrased = page.locator("#results tr", has_text="shipping, rephrased")
        expect(rephrased).to_contain_text("negative golden_response")
        expect(rephrased).to_contain_text("positive length")
        screenshot(page, "evaluations-run", full_page=True)

        page.goto(base)
        page.click("#compare-form button[type=submit]")  # A: the older run, B: the newer
        expect(page.locator("#compare-summary")).to_contain_text("1 better")
        expect(page.locator("#compare-summary")).to_contain_text("1 worse")
        expect(page.locator("#compare-summary")).to_contain_text("1 only in B")
        rows = page.locator("#pairs tbody tr")
        expect(rows.nth(0)).to_contain_text("shipping, upset")  # the worse first
        expect(rows.nth(0)).to_contain_text("worse")
        expect(rows.nth(1)).to_contain_text("shipping, rephrased")
        expect(rows.nth(1)).to_contain_text("better")
        screenshot(page, "evaluations-compare", full_page=True)

        page.goto(f"{base}/sets/shipping")
        expect(page.locator("#changes li")).to_have_count(3)
        expect(page.locator("#changes")).to_contain_text("added shipping, abroad")
        expect(page.locator("#changes")).to_contain_text("changed shipping, rephrased (pregenerated_response)")
        expect(page.locator("#cases tbody tr")).to_have_count(4)
        screenshot(page, "evaluations-test-set", full_page=True)
        browser.close()
    assert errors == []


def test_a_transcripts_reply_becomes_a_test_case(site: tuple[RunningServer, str, Account, list[str]]) -> None:
    server, project, viewer, _ = site
    said = [
        {"role": "system", "message": "You are the shop's assistant."},
        {"role": "user", "message": "Can I return opened headphones?"},
        {"role": "assistant", "message": "No idea, ask someone else."},
    ]
    with server.client(server.token) as api:  # type: ignore[attr-defined]
        assert api.post("/api/v1/log/conversation", json={"conversation": {"messages": said}}).status_code == 201
        cid = api.get("/api/v1/conversations").json()["conversations"][0]["id"]
    base = f"/p/{quote(project)}"
    form = {"conversation_id": cid, "message": "2", "test_set": "from production", "keep": "avoid"}
    with signed_in(server, viewer) as client:
        assert "Add to test set" not in client.get(f"{base}/conversations/{quote(cid)}").text
        refused = client.post(f"{base}/evaluations/from-conversation", data=form | {"csrf_token": client.csrf})
        assert refused.status_code == 403
    with signed_in(server, server.member) as client:  # type: ignore[attr-defined]
        assert client.get(f"{base}/conversations/{quote(cid)}").text.count("Add to test set") == 1
        no_token = client.post(f"{base}/evaluations/from-conversation", data=form)
        assert no_token.status_code == 403
        added = client.post(f"{base}/evaluations/from-conversation", data=form | {"csrf_token": client.csrf})
        assert added.status_code == 303
        assert added.headers["location"] == f"{base}/evaluations/sets/from%20production"
        not_a_reply = form | {"message": "1", "csrf_token": client.csrf}
        assert client.post(f"{base}/evaluations/from-conversation", data=not_a_reply).status_code == 422
        too_long = form | {"test_set": "x" * 129, "csrf_token": client.csrf}
        assert client.post(f"{base}/evaluations/from-conversation", data=too_long).status_code == 422
    with server.client(server.token) as api:  # type: ignore[attr-defined]
        stored = api.get("/api/v1/test_sets/from production").json()
    assert stored["version"] == 1 and len(stored["test_cases"]) == 1
    case = stored["test_cases"][0]
    assert case["name"] == f"{cid} #3"
    assert case["messages"] == [{"role": "system", "message": "You are the shop's assistant."},
                                {"role": "user", "message": "Can I return opened headphones?"}]  # fmt: skip
    assert case["pregenerated_response"] is None
    assert case["evaluators"] == [
        {"evaluator": "semantic_match",
         "options": {"golden_response": "No idea, ask someone else.", "threshold": None, "expect": "different"}}
    ]  # fmt: skip


def test_the_add_to_test_set_form_in_a_browser(site: tuple[RunningServer, str, Account, list[str]]) -> None:
    server, project, _, _ = site
    with server.client(server.token) as api:  # type: ignore[attr-defined]
        said = [{"role": "user", "message": "Do you sell gift cards?"},
                {"role": "assistant", "message": "Yes, from 10 to 200 euros, in store and online."}]  # fmt: skip
        assert api.post("/api/v1/log/conversation/thread",
                        json={"conversation": {"id": "gift-cards", "messages": said}}).status_code == 201  # fmt: skip
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page: Page = browser.new_page(viewport={"width": 1280, "height": 800}, base_url=server.base_url)
        page.goto("/login")
        page.fill("input[name=email]", server.member.email)  # type: ignore[attr-defined]
        page.fill("input[name=password]", server.member.password)  # type: ignore[attr-defined]
        page.click("button[type=submit]")
        page.goto(f"/p/{quote(project)}/conversations/gift-cards")
        page.click("details.to-test-set summary")
        page.fill("details.to-test-set input[name=test_set]", "gift cards")
        screenshot(page, "evaluations-add-to-test-set")
        page.click("details.to-test-set button[type=submit]")
        expect(page.locator("#cases tbody tr")).to_have_count(1)
        expect(page.locator("#cases")).to_contain_text("gift-cards #2")
        expect(page.locator("#cases")).to_contain_text("Do you sell gift cards?")
        browser.close()


def test_the_topics_page_shows_each_topics_test_coverage(site: tuple[RunningServer, str, Account, list[str]]) -> None:
    server, project, viewer, _ = site
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page: Page = browser.new_page(viewport={"width": 1280, "height": 800}, base_url=server.base_url)
        page.goto("/login")
        page.fill("input[name=email]", viewer.email)
        page.fill("input[name=password]", viewer.password)
        page.click("button[type=submit]")
        page.goto(f"/p/{quote(project)}/topics")
        expect(page.locator("#coverage-gaps")).to_contain_text("Gift cards · 3")
        gift_cards = page.locator("#topic-coverage-table tr", has_text="Gift cards")
        expect(gift_cards).to_contain_text("no test")
        expect(gift_cards).to_have_class("uncovered")
        shipping = page.locator("#topic-coverage-table tr", has_text="Shipping")
        expect(shipping).to_contain_text("100% (3/3)")  # the three v2 cases, all passed in the latest run
        expect(shipping.locator("td").nth(2)).to_have_text("3")
        page.locator("#topic-coverage").scroll_into_view_if_needed()
        screenshot(page, "topics-coverage")
        browser.close()
