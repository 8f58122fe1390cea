"""The LLM outcome judge, against the local OpenAI-compatible stub: a project that chose it gets verdicts
and reasons for its conversations, several conversations a request, never more a day than its cap; a
thread that grows goes back to the offline outcome until judged again; without a provider, or with one the
outbound guard refuses, nothing is sent. Real server, both backends."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
from playwright.sync_api import expect, sync_playwright
from sqlalchemy import select

from conftest import RunningServer, make_project, running_server, separate_database
from convolens.enrich import outcome_judge as asking
from convolens.outbound import OutboundPolicy
from convolens.store import outcome_judge, projects
from convolens.store.db import Database
from convolens.store.tables import outcome_judge_usage
from convolens.worker.runner import Worker
from openai_stub import JUDGE_PROMPT, openai_stub
from test_outcome_rollups import send
from test_outcomes import GAVE_UP, THANKED, read_when_enriched
from web_support import add_account, launch_chromium, screenshot, signed_in

DAY = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
CONVERSATIONS = 13
CAP = 12  # one conversation more than the day's cap


def abandon_all(conversations: list[dict]) -> dict:
    """The stub's judge: every conversation abandoned (the rules never say so of these), with a reason and
    a signal the rules do not see in them."""
    return {
        "conversations": [
            {
                "id": c["id"],
                "verdict": "abandoned",
                "reason": f"Left after {len(c['messages'])} messages.",
                "signals": ["off_target", "not-a-signal"],
            }
            for c in conversations
        ]
    }


def send_with_copy(client: httpx.Client, cid: str, user: str, at: datetime) -> None:
    events = [{"type": "conversation", "id": cid, "user_id": user}]
    for i, (role, text) in enumerate(THANKED):
        timestamp = (at + timedelta(minutes=i)).isoformat()
        events.append({"type": "message", "conversation_id": cid, "id": f"{cid}-{i}", "role": role,
                       "content": text, "timestamp": timestamp})  # fmt: skip
    timestamp = (at + timedelta(minutes=len(THANKED))).isoformat()
    events.append({"type": "event", "conversation_id": cid, "id": f"{cid}-e", "name": "copy", "timestamp": timestamp})
    response = client.post("/api/v1/ingest", json={"events": events})
    assert response.status_code == 202, response.text


def judge_requests(requests: list[dict]) -> list[dict]:
    return [r for r in requests if r["body"]["messages"][-1]["content"].startswith(JUDGE_PROMPT)]


def configure(db: Database, name: str, url: str | None, cap: int = CAP) -> None:
    with db.writer() as conn:
        if url is not None:
            projects.set_project_setting(conn, name, "llm", {"base_url": url, "model": "stub-model"})
        projects.set_project_setting(conn, name, "outcome_judge", {"enabled": True, "daily_cap": cap})


def listed(client: httpx.Client) -> dict[str, dict]:
    response = client.get("/api/v1/conversations", params={"start_time": "2026-11-01T00:00:00Z", "per_page": 50})
    assert response.status_code == 200, response.text
    return {c["id"]: c for c in response.json()["conversations"]}


def test_the_judge_gives_verdicts_in_batches_within_the_cap(database_url: str, tmp_path: Path) -> None:
    with (
        separate_database(database_url, tmp_path, "judge") as db,
        openai_stub(lambda topic, text: None, judge=abandon_all) as (url, requests),
    ):
        project = make_project(db, "judged")
        configure(db, project.name, url)
        with running_server(db, tmp_path, outbound=OutboundPolicy.parse("127.0.0.1")) as server:
            with server.client(project.token) as client:
                for i in range(CONVERSATIONS - 1):
                    send(client, f"j{i}", f"user{i}", THANKED, DAY + timedelta(minutes=i))
                # The newest (judged: the judge takes newest first) also carries a client event, a fact the
                # judge's signals must not erase; in the same request as its messages, so read with them.
                send_with_copy(client, "j12", "user12", DAY + timedelta(minutes=12))
                deadline = time.monotonic() + 90
                while sum(c["outcome_by"] == "llm" for c in listed(client).values()) < CAP:
                    assert time.monotonic() < deadline, listed(client)
                    time.sleep(0.2)
                found = listed(client)
                judged = {cid: c for cid, c in found.items() if c["outcome_by"] == "llm"}
                assert len(judged) == CAP
                assert all(c["outcome"] == "abandoned" for c in judged.values())
                assert all(c["outcome_reason"] == "Left after 3 messages." for c in judged.values())
                (left,) = [c for c in found.values() if c["outcome_by"] != "llm"]
                assert (left["outcome"], left["outcome_by"], left["outcome_reason"]) == ("resolved", "rules", None)
                # The judge's signals replace the offline ones (the rules read "thanks"): a verdict and the
                # signals shown beside it never disagree. Unknown names are dropped.
                assert {cid: c["outcome_signals"] for cid, c in judged.items()} == {
                    cid: ["off_target", "copy"] if cid == "j12" else ["off_target"] for cid in judged
                }
                assert left["outcome_signals"] == ["thanks"]
                # Batched: 12 conversations in 2 requests (10 a request), each sent once; the 13th waits
                # for tomorrow's allowance, which the day's count shows spent.
                asked = judge_requests(requests)
                assert len(asked) == -(-CAP // asking.BATCH)
                assert sum(r["body"]["messages"][-1]["content"].count('"id":') for r in asked) == CAP
                with db.reader() as conn:
                    used = conn.execute(select(outcome_judge_usage.c.conversations)).scalars().all()
                assert used == [CAP]
                # The metrics count the judge's verdicts, each conversation once.
                day = client.get(
                    "/api/v1/metrics", params={"start_time": "2026-11-20T00:00:00Z", "end_time": "2026-11-21T00:00:00Z"}
                ).json()["series"][0]["data"]["2026-11-20"]
                assert day["outcomes"] == {"resolved": 1, "unresolved": 0, "abandoned": CAP, "unknown": 0}

                # Shown on the conversation, and chosen on the settings page.
                show_the_judge(server, project.name, next(iter(judged)))

                # A judged thread grows: the rules read it again (the day's cap is spent, so they stay).
                cid = next(c for c in judged if c != "j12")  # j12 also holds an event: 4 items, not 3
                send(client, cid, "again", [("user", "That's wrong, there is no such button.")], DAY, first=3)
                grown = read_when_enriched(client, cid, 4)
                assert (grown["outcome_by"], grown["outcome_reason"]) == ("rules", None)
                assert grown["outcome"] != "abandoned"
            assert len(judge_requests(requests)) == -(-CAP // asking.BATCH)


def show_the_judge(server: RunningServer, project: str, conversation_id: str) -> None:
    admin = add_account(server.db, f"judge-{uuid.uuid4().hex[:6]}@example.com", project, "admin")
    base = f"/p/{quote(project)}"
    with signed_in(server, admin) as web:
        page = web.get(f"{base}/conversations/{conversation_id}").text
        assert 'id="outcome-reason">Judged by the project\'s LLM: Left after 3 messages.<' in page
        form = {"csrf_token": web.csrf, "enabled": "on", "daily_cap": "-1"}
        refused = web.post(f"{base}/settings/outcome-judge", data=form)
        assert refused.status_code == 422 and "daily_cap" in refused.text
        assert web.post(f"{base}/settings/outcome-judge", data={**form, "daily_cap": str(CAP)}).status_code == 303
        settings = web.get(f"{base}/settings").text
        assert f"Sent to the judge today: {CAP} of {CAP}." in settings
    with server.db.reader() as conn:
        assert outcome_judge.settings_from(projects.settings_of(conn, projects.get_project_pk(conn, project))) == (
            outcome_judge.JudgeSettings(enabled=True, daily_cap=CAP)
        )
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 800}, base_url=server.base_url)
        page.goto("/login")
        page.fill("input[name=email]", admin.email)
        page.fill("input[name=password]", admin.password)
        page.click("button[type=submit]")
        page.goto(f"{base}/conversations/{conversation_id}")
        expect(page.locator("#outcome-reason")).to_be_visible()
        screenshot(page, "outcome-judge-transcript")
        page.goto(f"{base}/settings")
        page.locator("#outcome-judge").scroll_into_view_if_needed()
        screenshot(page, "outcome-judge-settings")
        browser.close()


def test_no_provider_or_a_refused_one_sends_nothing(database_url: str, tmp_path: Path) -> None:
    with (
        separate_database(database_url, tmp_path, "unjudged") as db,
        openai_stub(lambda topic, text: None, judge=abandon_all) as (url, requests),
    ):
        without = make_project(db, "no-provider")
        refused = make_project(db, "loopback")
        configure(db, without.name, None)
        configure(db, refused.name, url)  # the stub is on 127.0.0.1, which the default guard refuses
        with running_server(db, tmp_path) as server:
            for project in (without, refused):
                with server.client(project.token) as client:
                    send(client, "t", "u", THANKED, DAY)
                    send(client, "g", "u", GAVE_UP, DAY)
                    assert read_when_enriched(client, "t", 3)["outcome_by"] == "rules"
                    assert read_when_enriched(client, "g", 7)["outcome_by"] == "rules"
            # The judge step, run here as well as by the server's worker: the guard refuses the loopback
            # provider at connection time, and the project without one is never asked about.
            worker = Worker(db, outbound=OutboundPolicy())
            worker.judge_outcomes()
            worker.judges.close()
            for project in (without, refused):
                with server.client(project.token) as client:
                    assert {c["outcome_by"] for c in listed(client).values()} == {"rules"}
        assert requests == []


def test_a_hostile_or_failing_answer_judges_nothing_it_should_not() -> None:
    from convolens.config import LlmSettings
    from convolens.enrich.llm import LlmJudge
    from convolens.store.enrichment import Turn

    transcripts = {41: [Turn("user", "message", None, "hi"), Turn("assistant", "message", None, "hello")],
                   42: [Turn("user", "message", None, "x" * 5000)]}  # fmt: skip

    def hostile(conversations: list[dict]) -> dict:
        assert [len(m["text"]) for m in conversations[1]["messages"]] == [asking.TURN_CHARS]  # sent cut short
        return {
            "conversations": [
                {
                    "id": 0,
                    "verdict": "Resolved ",
                    "reason": "fine\x00\x1b[31m" + "y" * 10_000,
                    "signals": ["Thanks", 3],
                },
                {"id": 0, "verdict": "unresolved", "reason": "a second verdict for the same one"},
                {"id": 1, "verdict": "great", "reason": "not a verdict"},
                {"id": 7, "verdict": "resolved"},
                {"id": True, "verdict": "resolved"},
                "junk",
            ]
        }

    with openai_stub(lambda topic, text: None, judge=hostile) as (url, requests):
        llm = LlmJudge(LlmSettings(base_url=url, model="stub"))
        found = asking.judge(llm, transcripts)
        llm.close()
    assert list(found) == [41]
    verdict, reason, signals = found[41]
    assert signals == ("thanks",)
    assert verdict == "resolved" and reason.startswith("fine") and reason.isprintable()
    assert len(reason) == asking.REASON_CHARS
    with openai_stub(lambda topic, text: None, judge=lambda conversations: None) as (url, requests):
        llm = LlmJudge(LlmSettings(base_url=url, model="stub"))
        assert asking.judge(llm, transcripts) is None  # a 500: no verdict, the rules' outcome stays
        llm.close()
    assert len(requests) == 1
