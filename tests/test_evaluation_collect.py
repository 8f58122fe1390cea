"""Collection rules: thumbs-down replies of a topic (or all), sampled, become test cases by themselves."""

from __future__ import annotations

from datetime import timedelta

from conftest import Project, RunningServer
from convolens.store import collect_rules
from convolens.worker.runner import Worker
from web_support import wait_until_enriched


def _log(api, user: str, reply: str, rating: int) -> None:  # type: ignore[no-untyped-def]
    said = [{"role": "user", "message": user}, {"role": "assistant", "message": reply, "rating": rating}]
    assert api.post("/api/v1/log/conversation", json={"conversation": {"messages": said}}).status_code == 201


def test_thumbs_down_replies_become_test_cases(server: RunningServer, project: Project) -> None:
    with server.client(project.admin_token) as api:
        topic = api.post("/api/v1/topics", json={"name": "Refunds", "kind": "keyword", "keywords": ["refund"]}).json()
        on_topic = api.post("/api/v1/evaluations/collect_rules",
                            json={"test_set_name": "refund regressions", "topic_id": topic["id"]})  # fmt: skip
        assert on_topic.status_code == 201
        made = on_topic.json()
        assert made == {"id": made["id"], "test_set_name": "refund regressions", "topic_id": topic["id"],
                        "sample_rate": 1.0, "keep": "avoid", "collected": 0}  # fmt: skip
        everything = {"test_set_name": "all thumbs down", "keep": "golden", "sample_rate": 1}
        assert api.post("/api/v1/evaluations/collect_rules", json=everything).status_code == 201
        _log(api, "I want a refund for the broken lamp", "No.", -1)
        _log(api, "What is my refund status?", "It is being processed.", 1)
        _log(api, "Where is my parcel?", "Dunno.", -1)
        wait_until_enriched(server.db, project_pk=project.pk)
        worker = Worker(server.db)
        worker.evaluate_runs.collect_settle = timedelta(0)
        assert worker.evaluate_runs.collect() == 3
        worker.evaluate_runs._collect_due = 0.0
        assert worker.evaluate_runs.collect() == 0  # the cursors moved on: nothing twice
        refunds = api.get("/api/v1/test_sets/refund regressions").json()
        everything_set = api.get("/api/v1/test_sets/all thumbs down").json()
        listed = api.get("/api/v1/evaluations/collect_rules").json()
    assert [c["messages"][-1]["message"] for c in refunds["test_cases"]] == ["I want a refund for the broken lamp"]
    assert refunds["test_cases"][0]["evaluators"][0]["options"]["expect"] == "different"
    assert refunds["test_cases"][0]["evaluators"][0]["options"]["golden_response"] == "No."
    assert sorted(c["messages"][-1]["message"] for c in everything_set["test_cases"]) == [
        "I want a refund for the broken lamp",
        "Where is my parcel?",
    ]
    assert sorted(r["collected"] for r in listed["rules"]) == [1, 2]


def test_collection_rules_are_checked(server: RunningServer, project: Project) -> None:
    with server.client(project.admin_token) as api:
        missing = api.post("/api/v1/evaluations/collect_rules", json={"test_set_name": "x", "topic_id": "999999"})
        assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "topic_id"
        zero = api.post("/api/v1/evaluations/collect_rules", json={"test_set_name": "x", "sample_rate": 0})
        assert zero.status_code == 422 and zero.json()["errors"][0]["field"] == "sample_rate"
        assert api.delete("/api/v1/evaluations/collect_rules/123456789").status_code == 404
        made = api.post("/api/v1/evaluations/collect_rules", json={"test_set_name": "x"}).json()
        assert api.delete(f"/api/v1/evaluations/collect_rules/{made['id']}").status_code == 204
    with server.client(project.token) as api:
        assert api.post("/api/v1/evaluations/collect_rules", json={"test_set_name": "x"}).status_code == 403


def test_sampling_is_deterministic_and_near_its_rate() -> None:
    ids = [f"message-{i}" for i in range(4000)]
    kept = [i for i in ids if collect_rules.sampled(i, 0.25)]
    assert kept == [i for i in ids if collect_rules.sampled(i, 0.25)]
    assert 900 <= len(kept) <= 1100


def test_erasing_a_user_removes_the_test_cases_made_from_their_conversations(
    server: RunningServer, project: Project
) -> None:
    """A collected case quotes the user's words: erasure (GDPR) removes it from every version of its test
    set, with what runs stored of it, and leaves the other users' cases."""
    with server.client(project.admin_token) as api:
        rule = {"test_set_name": "thumbs down", "keep": "golden", "sample_rate": 1}
        assert api.post("/api/v1/evaluations/collect_rules", json=rule).status_code == 201
        for user, text in (("leaving", "Cancel my order 4411 now"), ("staying", "Where is my parcel?")):
            events = [
                {"type": "conversation", "id": f"{user}-c", "user_id": user},
                {"type": "message", "conversation_id": f"{user}-c", "role": "user", "content": text},
                {
                    "type": "message",
                    "conversation_id": f"{user}-c",
                    "role": "assistant",
                    "content": "No.",
                    "rating": -1,
                },
            ]
            assert api.post("/api/v1/ingest", json={"events": events}).status_code == 202
        wait_until_enriched(server.db, project_pk=project.pk)
        worker = Worker(server.db)
        worker.evaluate_runs.collect_settle = timedelta(0)
        assert worker.evaluate_runs.collect() == 2
        before = api.get("/api/v1/test_sets/thumbs down").json()
        assert sorted(c["messages"][-1]["message"] for c in before["test_cases"]) == [
            "Cancel my order 4411 now",
            "Where is my parcel?",
        ]
        assert api.delete("/api/v1/users/leaving").status_code == 200
        after = api.get("/api/v1/test_sets/thumbs down").json()
    assert [c["messages"][-1]["message"] for c in after["test_cases"]] == ["Where is my parcel?"]
    assert after["test_case_count"] == 1 and "4411" not in str(after)
