"""Were users helped: a conversation's outcome and signals, through the API, the dashboard's filter and
the labelled sets (bench/outcome_quality.py)."""

from __future__ import annotations

import sys
import time
import uuid

import httpx
from sqlalchemy import select

from conftest import REPO, Project, RunningServer
from convolens.store import enrichment
from convolens.store.tables import conversation
from web_support import add_account, signed_in

sys.path.insert(0, str(REPO / "bench"))
import outcome_quality

THANKED = [
    ("user", "How do I export my invoices as PDF?"),
    ("assistant", "Open Billing > Invoices, select the months you need and click Download PDF."),
    ("user", "Found it, thanks a lot!"),
]
GAVE_UP = [
    ("user", "How do I change the email address on my account?"),
    ("assistant", "Our app supports two-factor authentication for extra security."),
    ("user", "How can I update the email address of my account?"),
    ("assistant", "Two-factor authentication can be enabled in Settings."),
    ("user", "I need to change my account's email address, how?"),
    ("assistant", "You can enable two-factor authentication under Settings > Security."),
    ("user", "Forget it, I'll call support."),
]


def send(client: httpx.Client, conversation_id: str, turns: list[tuple[str, str]], start: int = 0) -> None:
    events = [
        {
            "type": "message",
            "conversation_id": conversation_id,
            "id": f"{conversation_id}-{start + i}",
            "role": role,
            "content": text,
            "timestamp": 1_780_000_000 + start + i,
        }
        for i, (role, text) in enumerate(turns)
    ]
    response = client.post("/api/v1/ingest", json={"events": events})
    assert response.status_code == 202, response.text


def read_when_enriched(client: httpx.Client, conversation_id: str, messages: int, timeout: float = 60) -> dict:
    """The conversation once all its ``messages`` are enriched (the outcome is refreshed as they are saved)."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/api/v1/conversations/{conversation_id}").json()
        got = body.get("messages", [])
        users = [m for m in got if m["role"] == "user"]
        if len(got) == messages and all(m["sentiment_label"] for m in users) and body.get("outcome"):
            return body
        assert time.monotonic() < deadline, f"not enriched: {body}"
        time.sleep(0.1)


def test_outcomes_and_signals_come_back_and_follow_a_growing_thread(server: RunningServer, project: Project) -> None:
    with server.client(project.token) as client:
        send(client, "thanked", THANKED)
        send(client, "gave-up", GAVE_UP)
        thanked = read_when_enriched(client, "thanked", 3)
        assert thanked["outcome"] == "resolved"
        assert "thanks" in thanked["outcome_signals"]
        gave_up = read_when_enriched(client, "gave-up", 7)
        assert gave_up["outcome"] == "unresolved"
        assert {"rephrase", "gives_up"} <= set(gave_up["outcome_signals"])

        # The user comes back: a wrong answer pointed out turns the resolved thread unresolved.
        send(
            client,
            "thanked",
            [
                ("user", "And how do I export them as CSV?"),
                ("assistant", "CSV export is not available for invoices."),
                ("user", "That's wrong, there is a CSV button right there on the page."),
            ],
            start=3,
        )
        grown = read_when_enriched(client, "thanked", 6)
        assert grown["outcome"] == "unresolved"
        assert "correction" in grown["outcome_signals"]

        window = {"start_time": "2026-01-01T00:00:00Z"}
        unresolved = client.get("/api/v1/conversations", params={**window, "outcome": "unresolved"}).json()
        assert {c["id"] for c in unresolved["conversations"]} == {"thanked", "gave-up"}
        gave_up_ids = client.get("/api/v1/conversations", params={**window, "signal": "gives_up"}).json()
        assert [c["id"] for c in gave_up_ids["conversations"]] == ["gave-up"]
        assert (
            client.get("/api/v1/conversations", params={**window, "outcome": "resolved"}).json()["conversations"] == []
        )

        bad = client.get("/api/v1/conversations", params={"outcome": "happy"})
        assert bad.status_code == 422
        assert "outcome" in bad.text
        bad = client.get("/api/v1/conversations", params={"signal": "1' OR 1=1"})
        assert bad.status_code == 422
        assert "signal" in bad.text


def test_explicit_copy_and_regenerate_events_count_as_feedback(server: RunningServer, project: Project) -> None:
    turns = [
        ("user", "Write a SQL query counting orders per day."),
        ("assistant", "SELECT date(created_at), count(*) FROM orders GROUP BY 1;"),
    ]
    with server.client(project.token) as client:
        send(client, "copied", turns)
        send(client, "regenerated", turns)
        for cid, name in (("copied", "copy"), ("regenerated", "regenerate")):
            event = {
                "type": "event",
                "conversation_id": cid,
                "id": f"{cid}-e",
                "name": name,
                "timestamp": 1_780_000_100,
            }
            assert client.post("/api/v1/ingest", json={"events": [event]}).status_code == 202
        # A Context client sends the event as a message of type "event" in the thread.
        thread = [{"role": role, "message": text} for role, text in turns] + [{"type": "event", "name": "share"}]
        logged = client.post(
            "/api/v1/log/conversation/thread", json={"conversation": {"id": "shared", "messages": thread}}
        )
        assert logged.status_code < 300, logged.text
        copied = read_when_enriched(client, "copied", 3)
        regenerated = read_when_enriched(client, "regenerated", 3)
        shared = read_when_enriched(client, "shared", 3)
    assert (copied["outcome"], copied["outcome_signals"]) == ("resolved", ["copy"])
    assert (regenerated["outcome"], regenerated["outcome_signals"]) == ("unresolved", ["regenerate"])
    assert (shared["outcome"], shared["outcome_signals"]) == ("resolved", ["share"])


def test_the_dashboard_filters_conversations_by_outcome_and_signal(server: RunningServer, project: Project) -> None:
    with server.client(project.token) as client:
        send(client, "dash-thanked", THANKED)
        send(client, "dash-gave-up", GAVE_UP)
        read_when_enriched(client, "dash-thanked", 3)
        read_when_enriched(client, "dash-gave-up", 7)
    account = add_account(server.db, f"{uuid.uuid4().hex[:8]}@example.com", project.name, "viewer")
    with signed_in(server, account) as web:
        base = f"/p/{project.name}/conversations?start=2026-01-01"
        resolved = web.get(base + "&outcome=resolved").text
        assert "dash-thanked" in resolved and "dash-gave-up" not in resolved
        rephrased = web.get(base + "&signal=rephrase").text
        assert "dash-gave-up" in rephrased and "dash-thanked" not in rephrased
        assert web.get(base + "&outcome=maybe").status_code == 422


def test_the_last_reply_says_whether_an_ending_was_help() -> None:
    """What the last reply did decides endings that say little themselves: an answered question the user
    leaves without a word is resolved (README: abandoned needs the assistant to have asked something); the
    same thanks after a deflection is no help; a clear "no" with its reason, accepted, is help. Before the
    reply was judged, the first read unknown and the sarcastic thanks resolved."""

    def thread(*turns: str) -> dict:
        roles = ("user", "assistant") * 5
        return {"messages": [{"role": r, "content": t} for r, t in zip(roles, turns, strict=False)]}

    rows = [
        thread(
            "How do I turn on dark mode in the desktop app?",
            "Open Preferences > Appearance and pick Dark under Theme; the change applies immediately.",
        ),
        thread(
            "Why was my loyalty discount not applied to my order?",
            "Discounts depend on various conditions.",
            "Wow, thanks, super clear.",
        ),
        thread(
            "Can I get my deposit back if I cancel the apartment viewing?",
            "No: the deposit is refundable only if you cancel at least 48 hours before the viewing; yours is "
            "tomorrow, so it is kept.",
            "Fair enough, I'll keep the appointment then.",
        ),
        thread(
            "My invoice shows two charges for March.",
            "Sorry about that! Could you tell me the invoice number and the amounts of both charges?",
        ),
    ]
    got = [
        outcome for outcome, _ in outcome_quality.evaluate([{**r, "outcome": "", "signals": []} for r in rows])["got"]
    ]
    assert got == ["resolved", "unresolved", "resolved", "abandoned"]


def test_a_save_s_reassessment_embeds_no_reply_under_the_write_lock(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Inside the save's transaction (the API's writes wait for it) a changed conversation is assessed again
    without embedding its last reply: one judged before the transaction reads as it did then, an unseen
    one as unjudged, and nothing is embedded."""
    from convolens.enrich import embedding, outcomes

    judged = "Open Billing > Invoices, tick the months you want and press Download as PDF."
    unseen = "Our offices are open Monday to Friday, 9 to 5, and we value your feedback a great deal."
    rows = [
        {
            "messages": [
                {"role": "user", "content": "How do I get my invoices as a PDF?"},
                {"role": "assistant", "content": reply},
            ]
        }
        for reply in (judged, unseen)
    ]
    read = outcome_quality.transcripts(rows)
    before = outcomes.assess_many({0: read[0]})

    def no_embedding(texts: list[str]):  # type: ignore[no-untyped-def]
        raise AssertionError(f"embedded under the write lock: {texts}")

    monkeypatch.setattr(embedding, "embed", no_embedding)
    again = outcomes.reassess_many(read)
    assert again[0] == before[0]
    assert again[1][0] in outcomes.CLASSES


def test_outcome_quality_on_the_labelled_sets() -> None:
    """Floors a little under what bench/outcome_quality.py measured (printed with -s): accuracy over the four
    outcomes and over the rows labelled resolved, unresolved or abandoned (the issue's target: 0.8), the
    rows whose label contradicts the README scored as it reads them (as the model was trained)."""
    for name, (floor, floor_three) in OUTCOME_FLOORS.items():
        result = outcome_quality.evaluate(outcome_quality.readme_reading(outcome_quality.load(name)))
        print(name, result["accuracy"], result["accuracy_three"], result["signals"])
        assert result["accuracy"] >= floor, (name, result["accuracy"])
        assert result["accuracy_three"] >= floor_three, (name, result["accuracy_three"])


# The model is trained on every set here but fresh7 ... fresh10 (bench/train_outcomes.py), so the others are
# in-sample figures, floors against a regression; fresh7 ... fresh10, written by sessions that never saw the
# code, were each read once blind (stop 36), and are in no fit.
OUTCOME_FLOORS = {
    # Retrained in stop 39 over the sentiment classifier of twenty-five sets: leave-one-set-out pooled 0.8713
    # -> 0.8655 (bench/train_outcomes.py --loso, the same machine); in-sample figures moved both ways, the four
    # sets in no fit (fresh7 ... fresh10) each the same or up.
    "outcomes_tune.jsonl": (0.85, 0.87),  # measured 0.871 / 0.893 (0.895 / 0.911 before)
    "outcomes_train2.jsonl": (0.89, 0.9),  # measured 0.91 / 0.928
    "outcomes_holdout.jsonl": (0.8, 0.82),  # measured 0.821 / 0.847 (0.846 / 0.874 in stop 38)
    "outcomes_fresh.jsonl": (0.9, 0.93),  # measured 0.933 / 0.963
    "outcomes_fresh3.jsonl": (0.81, 0.79),  # measured 0.842 / 0.821
    "outcomes_fresh4.jsonl": (0.94, 0.95),  # measured 0.967 / 0.977
    "outcomes_fresh5.jsonl": (0.82, 0.87),  # measured 0.84 / 0.894
    "outcomes_fresh6.jsonl": (0.88, 0.88),  # measured 0.907 / 0.909
    # Blind once with the sentiment classifier of six sets (0.8125 / 0.801, 0.831 / 0.844); as measured since
    # the classifier and these weights were retrained on more sets (the same outcome features):
    "outcomes_fresh7.jsonl": (0.78, 0.78),  # measured 0.8125 / 0.8085 (0.806 / 0.801 in stop 38)
    "outcomes_fresh8.jsonl": (0.81, 0.81),  # measured 0.831 / 0.837
    "outcomes_fresh9.jsonl": (0.85, 0.85),  # blind: 0.875 / 0.872; now 0.881 / 0.879
    "outcomes_fresh10.jsonl": (0.78, 0.78),  # blind once (stop 37's final model): 0.8125 / 0.8085; now 0.8125 / 0.8085
}


def test_the_outcome_reads_a_bounded_end_of_a_long_thread(server: RunningServer, project: Project) -> None:
    """However long a thread grows, one refresh reads its last OUTCOME_WINDOW messages, each cut short."""
    long_text = "Still broken after the update, here is the whole log: " + "x" * 4_000
    turns = [("user" if i % 2 == 0 else "assistant", f"{i} {long_text}") for i in range(48)]
    with server.client(project.token) as client:
        send(client, "long", turns[:24])
        send(client, "long", turns[24:], start=24)
    with server.db.reader() as conn:
        pk = conn.execute(
            select(conversation.c.pk).where(conversation.c.project_pk == project.pk, conversation.c.id == "long")
        ).scalar_one()
        read = enrichment.transcripts(conn, [pk])[pk]
    assert len(read) == enrichment.OUTCOME_WINDOW
    assert read[-1].content.startswith("47 ") and read[0].content.startswith(f"{48 - enrichment.OUTCOME_WINDOW} ")
    assert max(len(t.content) for t in read) == enrichment.OUTCOME_CHARS
