"""``POST /api/v1/ingest`` over real HTTP, on both backends: good input, bad input, bounds, auth."""

from __future__ import annotations

import gzip
import json
import zlib

import httpx
import pytest

from conftest import TEST_LIMITS, Project, RunningServer, make_project
from convolens.store import projects


def conv(cid: str = "c1", n: int = 2, **extra) -> list[dict]:
    events = [{"type": "conversation", "id": cid, "user_id": "u1", **extra}]
    events += [
        {
            "type": "message",
            "conversation_id": cid,
            "id": f"{cid}-{i}",
            "role": ("user", "assistant")[i % 2],
            "content": f"text {i}",
        }
        for i in range(n)
    ]
    return events


def test_batch_is_stored_and_reads_back(api: httpx.Client) -> None:
    events = [
        *conv("c1", 2, metadata={"plan": "pro"}, tenant_id="acme"),
        {"type": "event", "conversation_id": "c1", "id": "e1", "name": "Checkout", "properties": {"sku": "x"}},
        {"type": "rating", "conversation_id": "c1", "message_id": "c1-1", "rating": 1},
        {"type": "feedback", "conversation_id": "c1", "feedback": "great"},
        {
            "type": "message",
            "conversation_id": "c1",
            "id": "c1-2",
            "role": "assistant",
            "content": "more",
            "model": "gpt-4o",
            "input_tokens": 12,
            "output_tokens": 30,
            "latency_ms": 812.5,
            "timestamp": "2026-11-20T10:00:00+02:00",
        },
    ]
    response = api.post("/api/v1/ingest", json={"events": events})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == len(events)
    assert [r["status"] for r in body["results"]] == ["created"] * 4 + ["updated"] * 2 + ["created"]

    got = api.get("/api/v1/conversations/c1").json()
    assert got["tenant_id"] == "acme" and got["user_id"] == "u1" and got["feedback"] == "great"
    assert got["metadata"] == {"plan": "pro"}
    by_id = {m["id"]: m for m in got["messages"]}
    assert by_id["c1-1"]["rating"] == 1
    assert by_id["e1"]["type"] == "event" and by_id["e1"]["name"] == "Checkout"
    assert by_id["c1-2"]["event_timestamp"] == "2026-11-20T08:00:00.000000Z"  # converted to UTC
    assert (by_id["c1-2"]["model"], by_id["c1-2"]["output_tokens"], by_id["c1-2"]["latency_ms"]) == (
        "gpt-4o",
        30,
        812.5,
    )


def test_retry_is_idempotent(api: httpx.Client) -> None:
    events = conv("c1", 3)
    assert api.post("/api/v1/ingest", json={"events": events}).status_code == 202
    retry = api.post("/api/v1/ingest", json={"events": events}).json()
    assert [r["status"] for r in retry["results"][1:]] == ["duplicate"] * 3
    assert len(api.get("/api/v1/conversations/c1").json()["messages"]) == 3


def test_gzip_body(api: httpx.Client) -> None:
    payload = httpx.Request("POST", "/", json={"events": conv("gz", 2)}).read()
    response = api.post(
        "/api/v1/ingest",
        content=gzip.compress(payload),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 202, response.text
    assert len(api.get("/api/v1/conversations/gz").json()["messages"]) == 2


def test_gzip_bomb_is_refused(api: httpx.Client) -> None:
    # 64 MiB of zeros squeezes to ~64 KiB: within the body limit, far over the inflated limit.
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = bomb.compress(b"0" * (64 * 1024 * 1024)) + bomb.flush()
    assert len(data) < TEST_LIMITS.max_body_bytes
    response = api.post("/api/v1/ingest", content=data, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "decompressed" in response.json()["detail"]


def test_corrupt_gzip_is_a_400(api: httpx.Client) -> None:
    response = api.post("/api/v1/ingest", content=b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400 and "gzip" in response.json()["detail"]


def test_body_over_the_limit_is_413(api: httpx.Client) -> None:
    big = "x" * (TEST_LIMITS.max_body_bytes + 10)
    response = api.post("/api/v1/ingest", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413


@pytest.mark.parametrize(
    "body,field",
    [
        (
            {"events": [{"type": "message", "conversation_id": "c", "role": "wizard", "content": "x"}]},
            "events[0].message.role",
        ),
        (
            {"events": [{"type": "message", "conversation_id": "c", "role": "user", "content": 5}]},
            "events[0].message.content",
        ),
        ({"events": [{"type": "message", "conversation_id": "c", "role": "user"}]}, "events[0].message.content"),
        ({"events": [{"type": "teleport"}]}, "events[0]"),
        ({"events": [{"type": "rating", "conversation_id": "c", "rating": 5}]}, "events[0].rating.rating"),
        (
            {
                "events": [
                    {"type": "message", "conversation_id": "c", "role": "user", "content": "x", "input_tokens": -1}
                ]
            },
            "events[0].message.input_tokens",
        ),
        (
            {
                "events": [
                    {
                        "type": "message",
                        "conversation_id": "c",
                        "role": "user",
                        "content": "x",
                        "timestamp": "yesterday",
                    }
                ]
            },
            "events[0].message.timestamp",
        ),
        (
            {"events": [{"type": "conversation", "id": "c", "metadata": {"nested": {"a": 1}}}]},
            "events[0].conversation.metadata.nested",
        ),
        ({"events": [{"type": "conversation", "id": "c", "surprise": 1}]}, "events[0].conversation.surprise"),
        ({"evnts": []}, "evnts"),
        ([1, 2], ""),
        # beyond a 64-bit column (found by the fuzz test as a 500 from SQLite's OverflowError)
        ({"client": {"dropped": 2**63}, "events": []}, "client.dropped"),
        (
            {
                "events": [
                    {"type": "message", "conversation_id": "c", "role": "user", "content": "x", "output_tokens": 2**63}
                ]
            },
            "events[0].message.output_tokens",
        ),
    ],
)
def test_wrong_shapes_are_422_naming_the_field(api: httpx.Client, body: object, field: str) -> None:
    response = api.post("/api/v1/ingest", json=body)
    assert response.status_code == 422, response.text
    fields = [e["field"] for e in response.json()["errors"]]
    assert any(f.startswith(field) for f in fields), fields


@pytest.mark.parametrize(
    "event,field",
    [
        ({"type": "message", "conversation_id": "c", "role": "user", "content": "x" * 5001}, "events[0].content"),
        (
            {"type": "message", "conversation_id": "c" * 129, "role": "user", "content": "x"},
            "events[0].conversation_id",
        ),
        ({"type": "message", "conversation_id": "c", "role": "user", "content": "nul\x00byte"}, "events[0].content"),
        ({"type": "conversation", "id": "c", "metadata": {f"k{i}": i for i in range(11)}}, "events[0].metadata"),
        ({"type": "conversation", "id": "c", "metadata": {"k": "v" * 201}}, "events[0].metadata.k"),
        ({"type": "conversation", "id": "", "metadata": {}}, "events[0].id"),
        ({"type": "conversation", "id": "line\nbreak"}, "events[0].id"),
    ],
)
def test_bounds_are_422_naming_the_field(api: httpx.Client, event: dict, field: str) -> None:
    response = api.post("/api/v1/ingest", json={"events": [event]})
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]
    assert field in response.json()["detail"]


def test_too_many_events(api: httpx.Client) -> None:
    events = [{"type": "message", "conversation_id": "c", "role": "user", "content": "x"}] * 201
    response = api.post("/api/v1/ingest", json={"events": events})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "events"


def test_a_rejected_batch_stores_nothing(api: httpx.Client) -> None:
    events = [
        *conv("atomic", 2),
        {"type": "message", "conversation_id": "atomic", "role": "user", "content": "x" * 6000},
    ]
    assert api.post("/api/v1/ingest", json={"events": events}).status_code == 422
    assert api.get("/api/v1/conversations/atomic").status_code == 404


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe garbage", b'{"events": [}'])
def test_malformed_json_is_4xx(api: httpx.Client, raw: bytes) -> None:
    response = api.post("/api/v1/ingest", content=raw, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500
    assert response.json()["detail"]


def test_unicode_round_trips(api: httpx.Client) -> None:
    text = "مرحبا 👋🏽 안녕하세요 \u202eRTL\u202c \\ \" '"
    events = [{"type": "message", "conversation_id": "uni", "id": "u", "role": "user", "content": text}]
    assert api.post("/api/v1/ingest", json={"events": events}).status_code == 202
    assert api.get("/api/v1/conversations/uni").json()["messages"][0]["message"] == text


# -- auth ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer not-a-token", "Bearer cl_wrong"])
def test_missing_or_bad_token_is_401(server: RunningServer, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    with server.client() as client:
        for method, path in (("POST", "/api/v1/ingest"), ("GET", "/api/v1/conversations")):
            response = client.request(method, path, headers=headers, json={"events": []})
            assert response.status_code == 401, (path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_revoked_token_is_401_at_once(server: RunningServer, project: Project) -> None:
    context = {"conversation": {"messages": [{"role": "user", "message": "hi"}]}}
    with server.client(project.token) as client:
        assert client.get("/api/v1/conversations").status_code == 200
        # Writes just made: their token is remembered by the check before the body (auth.RecentTokens)...
        assert client.post("/api/v1/ingest", json={"events": conv("w")}).status_code == 202
        assert client.post("/api/v1/log/conversation", json=context).status_code == 201
        with server.db.writer() as conn:
            assert projects.revoke_token(conn, project.token[:11]) == 1
        assert client.get("/api/v1/conversations").status_code == 401
        # ...and still refused from the next request on: each write looks its token up itself.
        assert client.post("/api/v1/ingest", json={"events": conv("x")}).status_code == 401
        assert client.post("/api/v1/log/conversation", json=context).status_code == 401


def test_scopes(server: RunningServer, project: Project) -> None:
    with server.client(project.ingest_token) as client:
        assert client.post("/api/v1/ingest", json={"events": conv("s")}).status_code == 202
        denied = client.get("/api/v1/conversations/s")
        assert denied.status_code == 403 and "read" in denied.json()["detail"]
    with server.client(project.read_token) as client:
        assert client.get("/api/v1/conversations/s").status_code == 200
        assert client.post("/api/v1/ingest", json={"events": conv("t")}).status_code == 403


def test_a_token_of_project_a_cannot_see_project_b(server: RunningServer, project: Project) -> None:
    other = make_project(server.db, "other")
    with server.client(other.token) as b:
        assert b.post("/api/v1/ingest", json={"events": conv("secret-b", 2)}).status_code == 202
    with server.client(project.token) as a:
        assert a.get("/api/v1/conversations/secret-b").status_code == 404
        listing = a.get("/api/v1/conversations").json()
        assert listing["pagination"]["total_records"] == 0
        # Writing to the same id from A creates A's own conversation, leaving B's untouched.
        assert a.post("/api/v1/ingest", json={"events": conv("secret-b", 1)}).status_code == 202
    with server.client(other.token) as b:
        assert len(b.get("/api/v1/conversations/secret-b").json()["messages"]) == 2
    # Ratings cannot reach into another project's messages either.
    with server.client(project.token) as a:
        result = a.post(
            "/api/v1/ingest",
            json={
                "events": [{"type": "rating", "conversation_id": "secret-b", "message_id": "secret-b-1", "rating": -1}]
            },
        )
        assert result.json()["results"][0]["status"] == "not_found"
    with server.client(other.token) as b:
        assert [m["rating"] for m in b.get("/api/v1/conversations/secret-b").json()["messages"]] == [None, None]


def test_health(server: RunningServer) -> None:
    with server.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["database"] in ("sqlite", "postgresql")


def test_concurrent_writers_to_one_conversation(server: RunningServer, project: Project) -> None:
    """Many clients appending to the same conversation at once: no lost message, no shared position."""
    from concurrent.futures import ThreadPoolExecutor

    def send(worker: int) -> int:
        with server.client(project.token) as client:
            for batch in range(5):
                events = [
                    {
                        "type": "message",
                        "conversation_id": "busy",
                        "id": f"w{worker}-b{batch}-{i}",
                        "role": "user",
                        "content": f"{worker}/{batch}/{i}",
                        "user_id": f"user-{worker % 3}",
                    }
                    for i in range(4)
                ]
                assert client.post("/api/v1/ingest", json={"events": events}).status_code == 202
        return worker

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(8)))
    with server.client(project.token) as client:
        got = client.get("/api/v1/conversations/busy").json()
    assert got["message_count"] == 8 * 5 * 4
    assert len({m["id"] for m in got["messages"]}) == 160
    with server.db.reader() as conn:
        from sqlalchemy import func, select

        from convolens.store.tables import message

        positions = conn.execute(
            select(func.count(func.distinct(message.c.position))).where(message.c.project_pk == project.pk)
        ).scalar_one()
    assert positions == 160


def test_concurrent_batches_sharing_users_and_conversations(server: RunningServer, project: Project) -> None:
    """Batches that touch the same end users and conversations in different orders: all accepted
    (on PostgreSQL this deadlocked before rows were locked in key order)."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    def send(worker: int) -> list[int]:
        rng = random.Random(worker)
        statuses = []
        with server.client(project.token) as client:
            for batch in range(6):
                order = list(range(12))
                rng.shuffle(order)
                events = []
                for c in order:
                    events.append({"type": "conversation", "id": f"shared-{c}", "user_id": f"u{(c * 7) % 5}"})
                    events.append(
                        {
                            "type": "message",
                            "conversation_id": f"shared-{c}",
                            "id": f"w{worker}-b{batch}-c{c}",
                            "role": "user",
                            "content": "hi",
                        }
                    )
                statuses.append(client.post("/api/v1/ingest", json={"events": events}).status_code)
        return statuses

    with ThreadPoolExecutor(6) as pool:
        results = [s for statuses in pool.map(send, range(6)) for s in statuses]
    assert set(results) == {202}
    with server.client(project.token) as client:
        total = sum(len(client.get(f"/api/v1/conversations/shared-{c}").json()["messages"]) for c in range(12))
    assert total == 6 * 6 * 12


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"conversation_id": "\ud800"}, "events[0].conversation_id"),
        ({"content": "half a pair \udc00"}, "events[0].content"),
        ({"metadata": {"k": "\ud83d"}}, "events[0].metadata.k"),
        ({"extra": {"input": ["\ud800"]}}, "events[0].extra.input[0]"),
    ],
)
def test_unpaired_surrogates_are_a_422_naming_the_field(api: httpx.Client, event: dict, field: str) -> None:
    body = {"type": "message", "conversation_id": "c", "role": "user", "content": "hi", **event}
    # json.dumps writes lone surrogates as \\u escapes, which is how they arrive from a real client
    response = api.post(
        "/api/v1/ingest", content=json.dumps({"events": [body]}), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field


def test_unpaired_surrogates_in_a_context_body_are_a_422(api: httpx.Client) -> None:
    body = {"conversation": {"messages": [{"role": "user", "message": "ok", "input": {"q": "\udfff"}}]}}
    response = api.post(
        "/api/v1/log/conversation", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422 and "input" in response.text
