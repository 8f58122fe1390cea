"""Context-compatible endpoints over real HTTP, on both backends (wire format: shared/context-api.md)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from conftest import Project, RunningServer, make_project

LANGCHAIN_BODY = {
    "conversation": {
        "messages": [
            {"role": "system", "message": "You translate English to French.", "type": "message"},
            {"role": "user", "message": "I love programming with LangChain.", "type": "message"},
            {"role": "assistant", "message": "J'adore programmer avec LangChain.", "type": "message"},
        ],
        "metadata": {"model": "gpt-4o-mini"},
    }
}


def only_conversation(api: httpx.Client, **params) -> dict:
    listing = api.get("/api/v1/conversations", params=params).json()
    assert listing["pagination"]["total_records"] == 1, listing
    return listing["conversations"][0]


def test_log_conversation_exact_langchain_body(api: httpx.Client) -> None:
    response = api.post("/api/v1/log/conversation", json=LANGCHAIN_BODY)
    assert response.status_code == 201 and response.json()["status"] == "ok"
    got = only_conversation(api)
    assert [(m["role"], m["message"], m["type"]) for m in got["messages"]] == [
        (m["role"], m["message"], m["type"]) for m in LANGCHAIN_BODY["conversation"]["messages"]
    ]
    assert got["metadata"] == {"model": "gpt-4o-mini"}
    assert got["messages"][2]["model"] == "gpt-4o-mini"
    for field in ("sentiment_trend", "topics", "suggested_topics"):
        assert field in got
    assert all(m["language"] is None and m["sentiment"] is None and m["topics"] == [] for m in got["messages"])


def test_each_log_call_is_a_new_conversation(api: httpx.Client) -> None:
    for _ in range(2):
        assert api.post("/api/v1/log/conversation", json=LANGCHAIN_BODY).status_code == 201
    assert api.get("/api/v1/conversations").json()["pagination"]["total_records"] == 2


def test_message_fields_round_trip(api: httpx.Client) -> None:
    body = {
        "conversation": {
            "messages": [
                {
                    "role": "user",
                    "message": "book it",
                    "event_timestamp": "2026-11-01T09:30:00Z",
                    "rating": -1,
                    "metadata": {"channel": "web"},
                    "name": "alice",
                },
                {
                    "role": "assistant",
                    "message": "calling tool",
                    "type": "tool",
                    "thought": "need the API",
                    "input": {"city": "Paris", "n": 2},
                    "observation": "ok",
                },
                {"role": "user", "message": "Checkout", "type": "event", "name": "Checkout"},
            ],
            "metadata": {"user_id": "u-42", "session_id": "s1"},
            "feedback": "helpful",
        }
    }
    assert api.post("/api/v1/log/conversation", json=body).status_code == 201
    got = only_conversation(api, start_time="2026-10-01")
    first, tool, event = got["messages"]
    assert (first["event_timestamp"], first["rating"], first["metadata"], first["name"]) == (
        "2026-11-01T09:30:00.000000Z",
        -1,
        {"channel": "web"},
        "alice",
    )
    assert (tool["type"], tool["thought"], tool["input"], tool["observation"]) == (
        "tool",
        "need the API",
        {"city": "Paris", "n": 2},
        "ok",
    )
    assert event["type"] == "event" and event["name"] == "Checkout"
    assert got["user_id"] == "u-42" and got["feedback"] == "helpful"


def test_upsert_continues_the_conversation(api: httpx.Client) -> None:
    history = [{"role": "user", "message": "hi"}, {"role": "assistant", "message": "hello"}]
    meta = {"user_id": "u1"}
    first = api.post("/api/v1/log/conversation/upsert", json={"conversation": {"messages": history, "metadata": meta}})
    assert first.status_code == 201
    history += [{"role": "user", "message": "and then?"}, {"role": "assistant", "message": "then this"}]
    second = api.post("/api/v1/log/conversation/upsert", json={"conversation": {"messages": history, "metadata": meta}})
    assert second.status_code == 201
    assert second.json()["data"]["id"] == first.json()["data"]["id"]
    assert second.json()["data"]["appended"] == 2
    got = only_conversation(api)
    assert [m["message"] for m in got["messages"]] == ["hi", "hello", "and then?", "then this"]


def test_upsert_with_other_metadata_or_history_is_a_new_conversation(api: httpx.Client) -> None:
    base = [{"role": "user", "message": "hi"}, {"role": "assistant", "message": "hello"}]
    post = lambda messages, meta: api.post(  # noqa: E731
        "/api/v1/log/conversation/upsert", json={"conversation": {"messages": messages, "metadata": meta}}
    )
    post(base, {"user_id": "u1"})
    post(base, {"user_id": "u2"})  # other metadata
    post([*base[:1], {"role": "assistant", "message": "different"}], {"user_id": "u1"})  # other start
    assert api.get("/api/v1/conversations").json()["pagination"]["total_records"] == 3


def test_first_upsert_needs_two_messages(api: httpx.Client) -> None:
    response = api.post(
        "/api/v1/log/conversation/upsert", json={"conversation": {"messages": [{"role": "user", "message": "alone"}]}}
    )
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "conversation.messages"


def test_thread_create_append_and_rate(api: httpx.Client) -> None:
    created = api.post(
        "/api/v1/log/conversation/thread",
        json={
            "conversation": {"messages": [{"role": "user", "message": "q1"}, {"role": "assistant", "message": "a1"}]}
        },
    )
    assert created.status_code == 201
    data = created.json()["data"]
    thread_id = data["id"]
    assert [(m["role"], m["message"]) for m in data["appended_messages"]] == [("user", "q1"), ("assistant", "a1")]
    appended = api.post(
        "/api/v1/log/conversation/thread",
        json={
            "conversation": {
                "id": thread_id,
                "messages": [{"role": "user", "message": "q2"}, {"role": "assistant", "message": "a2"}],
            }
        },
    ).json()["data"]
    assert appended["id"] == thread_id
    a2_id = appended["appended_messages"][1]["id"]

    # The docs' form: by message id.
    rated = api.patch(f"/api/v1/log/conversation/thread/{thread_id}", json={"messages": [{"id": a2_id, "rating": -1}]})
    assert rated.status_code == 200 and rated.json() == {"status": "ok"}
    # The SDK's form: a bare, positional array.
    assert (
        api.patch(f"/api/v1/log/conversation/thread/{thread_id}", json=[{"rating": None}, {"rating": 1}]).status_code
        == 200
    )
    got = api.get(f"/api/v1/conversations/{thread_id}").json()
    assert [(m["message"], m["rating"]) for m in got["messages"]] == [("q1", None), ("a1", 1), ("q2", None), ("a2", -1)]


def test_thread_with_client_id_is_created_then_appended(api: httpx.Client) -> None:
    for i in range(2):
        api.post(
            "/api/v1/log/conversation/thread",
            json={"conversation": {"id": "my-thread", "messages": [{"role": "user", "message": f"q{i}"}]}},
        )
    assert [m["message"] for m in api.get("/api/v1/conversations/my-thread").json()["messages"]] == ["q0", "q1"]


def test_rating_errors(api: httpx.Client) -> None:
    assert api.patch("/api/v1/log/conversation/thread/nope", json=[{"rating": 1}]).status_code == 404
    tid = api.post(
        "/api/v1/log/conversation/thread", json={"conversation": {"messages": [{"role": "user", "message": "q"}]}}
    ).json()["data"]["id"]
    too_many = api.patch(f"/api/v1/log/conversation/thread/{tid}", json=[{"rating": 1}, {"rating": 1}])
    assert too_many.status_code == 422 and too_many.json()["errors"][0]["field"] == "1"
    bad_value = api.patch(f"/api/v1/log/conversation/thread/{tid}", json=[{"rating": 7}])
    assert bad_value.status_code == 422
    unknown = api.patch(f"/api/v1/log/conversation/thread/{tid}", json={"messages": [{"id": "zz", "rating": 1}]})
    assert unknown.status_code == 404


def test_rating_bounds_name_their_field(api: httpx.Client) -> None:
    """The ratings PATCH passes the pipeline's bounds like every write: too many ratings, or a thread id
    no thread can have, is a 422 naming the field (both were looked up and answered 404 before)."""
    tid = api.post(
        "/api/v1/log/conversation/thread", json={"conversation": {"messages": [{"role": "user", "message": "q"}]}}
    ).json()["data"]["id"]
    many = api.patch(f"/api/v1/log/conversation/thread/{tid}", json={"messages": [{"id": "m", "rating": 1}] * 2001})
    assert many.status_code == 422
    [error] = many.json()["errors"]
    assert error["field"] == "messages" and error["msg"].startswith("has 2001 events; the limit is ")
    long_id = api.patch(f"/api/v1/log/conversation/thread/{'t' * 129}", json=[{"rating": 1}])
    assert long_id.status_code == 422
    assert [(e["field"], e["msg"]) for e in long_id.json()["errors"]] == [
        ("path.thread_id", "is 129 characters long; the limit is 128")
    ]
    # Within the bounds, the ratings are written as before; nothing rated still needs the thread.
    assert api.patch(f"/api/v1/log/conversation/thread/{tid}", json=[{"rating": 1}]).json() == {"status": "ok"}
    assert api.get(f"/api/v1/conversations/{tid}").json()["messages"][0]["rating"] == 1
    assert api.patch("/api/v1/log/conversation/thread/nope", json=[{"rating": None}]).status_code == 404
    assert api.patch(f"/api/v1/log/conversation/thread/{tid}", json=[{"rating": None}]).status_code == 200


def test_tenant_from_query_or_body(api: httpx.Client) -> None:
    api.post("/api/v1/log/conversation", params={"tenant_id": "t-query"}, json=LANGCHAIN_BODY)
    api.post("/api/v1/log/conversation", json={**LANGCHAIN_BODY, "tenant_id": "t-body"})
    clash = api.post("/api/v1/log/conversation", params={"tenant_id": "a"}, json={**LANGCHAIN_BODY, "tenant_id": "b"})
    assert clash.status_code == 422 and clash.json()["errors"][0]["field"] == "tenant_id"
    for tenant in ("t-query", "t-body"):
        assert only_conversation(api, tenant_id=tenant)["tenant_id"] == tenant
    assert api.get("/api/v1/conversations", params={"tenant_id": "none"}).json()["conversations"] == []


@pytest.mark.parametrize(
    "body,field",
    [
        ({"conversation": {"messages": [{"role": "robot", "message": "x"}]}}, "conversation.messages[0].role"),
        ({"conversation": {"messages": [{"role": "user"}]}}, "conversation.messages[0].message"),
        ({"conversation": {"messages": "nope"}}, "conversation.messages"),
        (
            {"conversation": {"messages": [{"role": "user", "message": "x", "rating": 3}]}},
            "conversation.messages[0].rating",
        ),
        ({"messages": []}, "conversation"),
        ({"conversation": {"messages": []}}, "conversation.messages"),
        ({"conversation": {"messages": [{"role": "user", "message": "x" * 5001}]}}, "conversation.messages[0].message"),
        (
            {"conversation": {"messages": [{"role": "user", "message": "x"}], "metadata": {"k": "v" * 201}}},
            "conversation.metadata.k",
        ),
        ({"conversation": {"messages": [{"role": "user", "message": "x"}]}, "tenant_id": "t" * 129}, "tenant_id"),
    ],
)
def test_bad_context_bodies_are_422(api: httpx.Client, body: dict, field: str) -> None:
    response = api.post("/api/v1/log/conversation", json=body)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]], response.json()


def test_list_pagination_and_window(api: httpx.Client) -> None:
    now = datetime.now(UTC)
    for i in range(5):
        stamp = (now - timedelta(days=i * 3)).isoformat()
        api.post(
            "/api/v1/log/conversation",
            json={"conversation": {"messages": [{"role": "user", "message": f"c{i}", "event_timestamp": stamp}]}},
        )
    default = api.get("/api/v1/conversations").json()  # last 6 days by default: i = 0, 1, 2
    assert default["pagination"]["total_records"] == 3
    page1 = api.get(
        "/api/v1/conversations", params={"per_page": 2, "start_time": (now - timedelta(days=30)).isoformat()}
    )
    p = page1.json()["pagination"]
    assert (p["total_records"], p["page_count"], p["current_page"], p["previous_page"], p["next_page"]) == (
        5,
        3,
        1,
        None,
        2,
    )
    page3 = api.get(
        "/api/v1/conversations", params={"per_page": 2, "page": 3, "start_time": (now - timedelta(days=30)).isoformat()}
    ).json()
    assert [c["messages"][0]["message"] for c in page3["conversations"]] == ["c4"]
    assert page3["pagination"]["next_page"] is None and page3["pagination"]["previous_page"] == 2
    assert [c["messages"][0]["message"] for c in page1.json()["conversations"]] == ["c0", "c1"]


@pytest.mark.parametrize(
    "params,field",
    [
        ({"per_page": 51}, "per_page"),
        ({"per_page": 0}, "per_page"),
        ({"page": 0}, "page"),
        ({"start_time": "last tuesday"}, "start_time"),
        ({"end_time": "2026-13-45"}, "end_time"),
        ({"start_time": "2026-02-01", "end_time": "2026-01-01"}, "start_time"),
    ],
)
def test_bad_list_parameters_are_422(api: httpx.Client, params: dict, field: str) -> None:
    response = api.get("/api/v1/conversations", params=params)
    assert response.status_code == 422
    assert any(e["field"].endswith(field) for e in response.json()["errors"]), response.json()


def test_series(api: httpx.Client) -> None:
    available = ["sentiment", "rating", "volume", "outcome"]
    assert api.get("/api/v1/conversations/series").json() == {"available": available}
    stamps = ["2026-11-02T10:00:00Z", "2026-11-02T11:00:00Z", "2026-11-04T10:00:00Z"]
    for i, stamp in enumerate(stamps):
        api.post(
            "/api/v1/log/conversation",
            json={
                "conversation": {
                    "messages": [
                        {"role": "user", "message": "q", "event_timestamp": stamp},
                        {"role": "assistant", "message": "a", "event_timestamp": stamp, "rating": 1 if i else -1},
                    ]
                }
            },
        )
    window = {"start_time": "2026-11-01T00:00:00Z", "end_time": "2026-11-05T00:00:00Z"}
    volume = api.get("/api/v1/conversations/series/volume", params=window).json()
    assert volume["type"] == "volume" and volume["period"] == "day"
    series = {s["name"]: s["data"] for s in volume["series"]}
    assert series["conversations"] == {
        "2026-11-01": 0,
        "2026-11-02": 2,
        "2026-11-03": 0,
        "2026-11-04": 1,
        "2026-11-05": 0,
    }
    assert series["messages"]["2026-11-02"] == 4
    weekly = api.get("/api/v1/conversations/series/volume", params={**window, "period": "week"}).json()
    assert {s["name"]: s["data"] for s in weekly["series"]}["conversations"] == {"2026-10-26": 0, "2026-11-02": 3}
    monthly = api.get("/api/v1/conversations/series/rating", params={**window, "period": "month"}).json()
    rating = {s["name"]: s["data"] for s in monthly["series"]}
    assert rating["positive"] == {"2026-11-01": 2} and rating["negative"] == {"2026-11-01": 1}

    def sentiment_days() -> set[str]:
        (average,) = api.get("/api/v1/conversations/series/sentiment", params=window).json()["series"]
        assert average["name"] == "average"
        return set(average["data"])

    deadline = time.monotonic() + 60
    while sentiment_days() != {"2026-11-02", "2026-11-04"}:  # once the worker has scored the user messages
        assert time.monotonic() < deadline, sentiment_days()
        time.sleep(0.1)
    assert api.get("/api/v1/conversations/series/bogus").status_code == 422
    assert api.get("/api/v1/conversations/series/volume", params={"period": "year"}).status_code == 422


def test_suggested_topics_empty_until_enrichment(api: httpx.Client) -> None:
    assert api.get("/api/v1/suggested_topics").json() == {"count": 0, "topics": []}


def test_context_routes_respect_project_boundaries(server: RunningServer, project: Project) -> None:
    other = make_project(server.db, "other")
    with server.client(other.token) as b:
        tid = b.post(
            "/api/v1/log/conversation/thread",
            json={"conversation": {"messages": [{"role": "user", "message": "private"}]}},
        ).json()["data"]["id"]
    with server.client(project.token) as a:
        assert a.get(f"/api/v1/conversations/{tid}").status_code == 404
        assert a.patch(f"/api/v1/log/conversation/thread/{tid}", json=[{"rating": -1}]).status_code == 404
        appended = a.post(
            "/api/v1/log/conversation/thread",
            json={"conversation": {"id": tid, "messages": [{"role": "user", "message": "intruder"}]}},
        )
        assert appended.status_code == 201  # lands in A's own thread of that id
        volume = a.get("/api/v1/conversations/series/volume").json()
        assert sum({s["name"]: s["data"] for s in volume["series"]}["conversations"].values()) == 1
    with server.client(other.token) as b:
        assert [m["message"] for m in b.get(f"/api/v1/conversations/{tid}").json()["messages"]] == ["private"]


def test_construct_complete_builds_what_model_construct_builds() -> None:
    from convolens.schemas.ingest import MessageEvent, construct_complete

    values = {name: None for name in MessageEvent.model_fields}
    values |= {"type": "message", "conversation_id": "c", "id": "m", "role": "user", "content": "hi", "kind": "message"}
    built = construct_complete(MessageEvent, dict(values))
    assert built == MessageEvent.model_construct(**values)
    assert built.model_fields_set == set(values) and built.content == "hi"
    assert built.model_dump()["conversation_id"] == "c"
    del values["error"]
    with pytest.raises(TypeError, match="error"):
        construct_complete(MessageEvent, values)
