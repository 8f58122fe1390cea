"""Hostile values inside well-formed bodies and query strings, over real HTTP on both backends: times at
the ends of the calendar, free-form JSON too deep, too large, with NUL or infinite numbers, names with
control characters. Each is a 4xx naming its field (it was a 500, or stored to break a reader later);
the in-range neighbours are accepted, and a Context custom event without a message is stored."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from conftest import TEST_LIMITS
from convolens.enrich.pii import EMAIL_DUMMY
from convolens.schemas.bounds import json_problem

# Each was a 500 (OverflowError moving it to UTC, or a day added to it later) or is outside the range.
BAD_TIMES = [
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-05:00",
    "0001-01-01",
    "9999-12-31",
    "1969-12-31T23:59:59Z",
    "2200-01-01T00:00:00Z",
]


def _native(event: dict) -> dict:
    return {"events": [event]}


def _context(*messages: dict) -> dict:
    return {"conversation": {"messages": list(messages)}}


MESSAGE = {"type": "message", "conversation_id": "c", "role": "user", "content": "hi"}
HELLO = {"role": "user", "message": "hello"}
# Every timestamp a client can send, as (path, body with the time put in by .format, field named).
TIMESTAMP_FIELDS = [
    ("/api/v1/ingest", lambda t: _native({"type": "conversation", "id": "c", "timestamp": t}),
     "events[0].conversation.timestamp"),
    ("/api/v1/ingest", lambda t: _native({**MESSAGE, "timestamp": t}), "events[0].message.timestamp"),
    ("/api/v1/ingest", lambda t: _native({"type": "event", "conversation_id": "c", "name": "n", "timestamp": t}),
     "events[0].event.timestamp"),
    ("/api/v1/log/conversation", lambda t: _context({**HELLO, "event_timestamp": t}),
     "conversation.messages[0].event_timestamp"),
    ("/api/v1/log/conversation/upsert", lambda t: _context(HELLO, {**HELLO, "event_timestamp": t}),
     "conversation.messages[1].event_timestamp"),
    ("/api/v1/log/conversation/thread", lambda t: _context({**HELLO, "event_timestamp": t}),
     "conversation.messages[0].event_timestamp"),
]  # fmt: skip


def assert_names(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, (response.status_code, response.text[:300])
    body = response.json()
    fields = [e["field"] for e in body["errors"]]
    assert any(f.startswith(field) for f in fields), fields
    assert field in body["detail"], body["detail"]


@pytest.mark.parametrize("when", BAD_TIMES)
@pytest.mark.parametrize(("path", "body", "field"), TIMESTAMP_FIELDS, ids=lambda v: v if isinstance(v, str) else "")
def test_a_time_out_of_range_is_422_naming_the_field(api: httpx.Client, path, body, field, when) -> None:
    assert_names(api.post(path, json=body(when)), field)


def test_a_time_is_moved_to_utc_before_its_range_is_checked(api: httpx.Client) -> None:
    # 00:30 at +01:00 is still 1969 in UTC; 23:30 at -01:00 is already 1970.
    early = api.post("/api/v1/ingest", json=_native({**MESSAGE, "timestamp": "1970-01-01T00:30:00+01:00"}))
    assert_names(early, "events[0].message.timestamp")
    for conversation, when in (("first", "1969-12-31T23:30:00-01:00"), ("last", "2199-12-31T23:59:59Z")):
        event = {**MESSAGE, "conversation_id": conversation, "timestamp": when}
        assert api.post("/api/v1/ingest", json=_native(event)).status_code == 202
    stored = [api.get(f"/api/v1/conversations/{c}").json()["messages"][0] for c in ("first", "last")]
    assert [m["event_timestamp"] for m in stored] == ["1970-01-01T00:30:00.000000Z", "2199-12-31T23:59:59.000000Z"]
    # and the read APIs take the whole range, their day arithmetic included
    window = {"start_time": "1970-01-01T00:00:00Z", "end_time": "1970-01-02T00:00:00Z"}
    listed = api.get("/api/v1/conversations", params=window).json()["conversations"]
    assert [c["id"] for c in listed] == ["first"]
    late = {"start_time": "2199-12-01", "end_time": "2199-12-31T23:59:59.999999Z", "period": "month"}
    assert api.get("/api/v1/metrics", params=late).json()["series"][0]["data"]["2199-12-01"]["messages"] == 1


READ_ROUTES = [
    "/api/v1/conversations",
    "/api/v1/conversations/series/volume",
    "/api/v1/conversations/series/sentiment",
    "/api/v1/metrics",
]
BAD_WINDOWS = [
    ({"end_time": "0001-01-01"}, "end_time"),
    ({"start_time": "9999-12-31T23:59:59-05:00"}, "start_time"),
    ({"start_time": "0001-01-01", "end_time": "0001-01-02"}, "start_time"),
    ({"start_time": "9999-12-30", "end_time": "9999-12-31"}, "start_time"),
    ({"end_time": "9999-12-31"}, "end_time"),
    ({"start_time": "1969-12-31T23:59:59Z", "end_time": "1970-01-05"}, "start_time"),
]


@pytest.mark.parametrize(("params", "field"), BAD_WINDOWS)
@pytest.mark.parametrize("path", READ_ROUTES)
def test_a_query_time_out_of_range_is_422_naming_it(api: httpx.Client, path: str, params: dict, field: str) -> None:
    response = api.get(path, params=params)
    assert_names(response, field)
    assert response.json()["errors"][0]["loc"] == ["query", field]


def _nested(depth: int) -> dict:
    value: object = "leaf"
    for _ in range(depth - 1):
        value = {"a": value}
    return {"a": value}


RAW_INFINITY = "1e400"  # a JSON number every parser reads as infinity
# (event or Context message, as raw JSON text where a number cannot be written by json.dumps; field)
HOSTILE_VALUES = [
    # free-form JSON: depth (300 was a 500 from the JSON writer's 255-level limit), size, NUL, numbers
    (json.dumps(_native({**MESSAGE, "extra": _nested(300)})), "events[0].extra.a"),
    (json.dumps(_native({**MESSAGE, "extra": _nested(TEST_LIMITS.max_extra_depth + 1)})), "events[0].extra.a"),
    (json.dumps(_native({**MESSAGE, "extra": {"blob": "x" * (TEST_LIMITS.max_extra_bytes + 1)}})), "events[0].extra"),
    (json.dumps(_native({**MESSAGE, "extra": {"list": ["x" * 1000] * 80}})), "events[0].extra"),
    (json.dumps(_native({**MESSAGE, "extra": {"a": ["ok", "nul\x00"]}})), "events[0].extra.a[1]"),
    (json.dumps(_native({**MESSAGE, "extra": {"nul\x00key": 1}})), "events[0].extra"),
    (json.dumps(_native({**MESSAGE, "extra": {"x": 1.5}})).replace("1.5", RAW_INFINITY), "events[0].extra.x"),
    (json.dumps(_native({**MESSAGE, "extra": {"x": 1.5}})).replace("1.5", "NaN"), "events[0].extra.x"),
    # finite numbers
    (json.dumps(_native({**MESSAGE, "latency_ms": 1.5})).replace("1.5", RAW_INFINITY), "events[0].message.latency_ms"),
    (json.dumps(_native({**MESSAGE, "metadata": {"k": 1.5}})).replace("1.5", RAW_INFINITY), "events[0].metadata.k"),
    (json.dumps(_native({"type": "conversation", "id": "c", "metadata": {"k": 1.5}})).replace("1.5", "-Infinity"),
     "events[0].metadata.k"),
    (json.dumps(_native({"type": "event", "conversation_id": "c", "name": "n", "properties": {"k": 1.5}}))
     .replace("1.5", "NaN"), "events[0].properties.k"),
    # names: identifier-like
    (json.dumps(_native({"type": "event", "conversation_id": "c", "name": "two\nlines"})), "events[0].name"),
    (json.dumps(_native({"type": "event", "conversation_id": "c", "name": "n" * 129})), "events[0].name"),
    (json.dumps(_native({"type": "event", "conversation_id": "c", "name": ""})), "events[0].name"),
    (json.dumps(_native({**MESSAGE, "name": "tab\there"})), "events[0].name"),
    # an agent's step, typed on the native message as on Context's: input is JSON, thought and observation texts
    (json.dumps(_native({**MESSAGE, "input": _nested(300)})), "events[0].input.a"),
    (json.dumps(_native({**MESSAGE, "thought": "nul\x00"})), "events[0].thought"),
    (json.dumps(_native({**MESSAGE, "observation": "x" * (TEST_LIMITS.max_content_chars + 1)})),
     "events[0].observation"),
    # Context: input is the free-form JSON, thought and observation are texts
    (json.dumps(_context({**HELLO, "input": _nested(300)})), "conversation.messages[0].input.a"),
    (json.dumps(_context({**HELLO, "input": {"q": "nul\x00"}})), "conversation.messages[0].input.q"),
    (json.dumps(_context({**HELLO, "input": {"q": 1.5}})).replace("1.5", RAW_INFINITY),
     "conversation.messages[0].input.q"),
    (json.dumps(_context({**HELLO, "thought": "nul\x00"})), "conversation.messages[0].thought"),
    (json.dumps(_context({**HELLO, "observation": "nul\x00"})), "conversation.messages[0].observation"),
    (json.dumps(_context({**HELLO, "thought": "x" * (TEST_LIMITS.max_content_chars + 1)})),
     "conversation.messages[0].thought"),
    (json.dumps(_context(HELLO, {**HELLO, "message": "x" * (TEST_LIMITS.max_content_chars + 1)})),
     "conversation.messages[1].message"),
    (json.dumps({"conversation": {"messages": [HELLO], "feedback": "nul\x00"}}), "conversation.feedback"),
    (json.dumps(_context({**HELLO, "type": "event", "name": "click\x07"})), "conversation.messages[0].name"),
    (json.dumps({"conversation": {"messages": [HELLO], "metadata": {"k": 1.5}}}).replace("1.5", RAW_INFINITY),
     "conversation.metadata.k"),
    # ids a URL cannot reach: browsers and HTTP clients resolve "." and ".." as path segments
    (json.dumps(_native({"type": "conversation", "id": ".."})), "events[0].id"),
    (json.dumps(_native({**MESSAGE, "conversation_id": "."})), "events[0].conversation_id"),
    (json.dumps({"conversation": {"messages": [HELLO], "metadata": {"user_id": ".."}}}),
     "conversation.metadata.user_id"),
    (json.dumps(_native({**MESSAGE, "user_id": "."})), "events[0].user_id"),
    (json.dumps(_native({"type": "conversation", "id": "c", "user_id": ".."})), "events[0].user_id"),
    # free-form JSON past the parsers' ~1,000 levels: not even parsed, still a 422 naming the field
    ('{"events":[{"type":"message","conversation_id":"c","role":"user","content":"hi","extra":{"a":'
     + "[" * 2000 + "]" * 2000 + "}}]}", "events[0].extra.a"),
    ('{"conversation":{"messages":[{"role":"user","message":"hi","input":' + '{"k":' * 1500 + "1"
     + "}" * 1500 + "}]}}", "conversation.messages[0].input.k"),
    # a message (not an event) still needs its role and its text
    (json.dumps(_context({"message": "no role"})), "conversation.messages[0].role"),
    (json.dumps(_context({"role": "user"})), "conversation.messages[0].message"),
    (json.dumps(_context({"type": "event"})), "conversation.messages[0].name"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "field"), HOSTILE_VALUES, ids=[f for _, f in HOSTILE_VALUES])
def test_a_hostile_value_is_422_naming_the_field(api: httpx.Client, text: str, field: str) -> None:
    path = "/api/v1/ingest" if text.startswith('{"events"') else "/api/v1/log/conversation"
    assert len(text) < TEST_LIMITS.max_body_bytes  # the bound under test is not the body's
    response = api.post(path, content=text, headers={"Content-Type": "application/json"})
    assert_names(response, field)


def test_a_native_message_carries_an_agent_step_as_a_context_message_does(api: httpx.Client) -> None:
    """The native message's thought, input and observation (what Context's messages carry, so that they
    translate into the native batch losslessly) are scrubbed and stored, and read back as Context's."""
    step = {
        "thought": "look the customer up: ann@example.org",
        "input": {"query": "ann@example.org", "limit": 3},
        "observation": "found 1",
    }
    tool = {**MESSAGE, "conversation_id": "step", "role": "assistant", "kind": "tool", "name": "crm", **step}
    response = api.post("/api/v1/ingest", json={"events": [{**MESSAGE, "conversation_id": "step"}, tool]})
    assert response.status_code == 202, response.text[:300]
    stored = api.get("/api/v1/conversations/step").json()["messages"][1]
    assert stored["thought"] == "look the customer up: " + EMAIL_DUMMY
    assert stored["input"] == {"query": EMAIL_DUMMY, "limit": 3}
    assert (stored["observation"], stored["type"], stored["name"]) == ("found 1", "tool", "crm")


def test_free_form_json_at_its_bounds_is_stored(api: httpx.Client) -> None:
    deep = _nested(TEST_LIMITS.max_extra_depth)
    big = {"blob": "x" * (TEST_LIMITS.max_extra_bytes - 100)}
    for cid, extra in (("deep", deep), ("big", big)):
        response = api.post("/api/v1/ingest", json=_native({**MESSAGE, "conversation_id": cid, "extra": extra}))
        assert response.status_code == 202, response.text[:300]


@pytest.mark.parametrize(
    "path", ["/api/v1/log/conversation", "/api/v1/log/conversation/thread", "/api/v1/log/conversation/upsert"]
)
def test_a_context_event_without_a_message_is_stored_as_an_event(api: httpx.Client, path: str) -> None:
    body = _context(
        HELLO,
        {"type": "event", "name": "user_clicked", "role": "user"},
        {"type": "event", "name": "Checkout", "metadata": {"plan": "pro"}},
    )
    response = api.post(path, json=body)
    assert response.status_code == 201, response.text
    messages = api.get(f"/api/v1/conversations/{response.json()['data']['id']}").json()["messages"]
    assert [(m["type"], m["role"], m["message"]) for m in messages] == [
        ("message", "user", "hello"),
        ("event", "user", "user_clicked"),
        ("event", "system", "Checkout"),
    ]
    assert messages[2]["metadata"] == {"plan": "pro"}


def test_the_json_walk_is_bounded_by_the_limits_not_by_the_value() -> None:
    # Values no JSON parser would hand over (10**5 levels; a million items), built here to show the
    # walk neither recurses (RecursionError) nor queues every item before it stops.
    deep: object = "leaf"
    for _ in range(100_000):
        deep = [deep]
    assert json_problem(deep, 32, 65536) == ((0,) * 32, "nests deeper than 32 levels")
    wide = [0] * 1_000_000
    start = time.thread_time()
    assert json_problem({"a": wide}, 32, 65536) == ((), "is over 65536 bytes as JSON")
    assert time.thread_time() - start < 0.05
    assert json_problem({"ok": [1, 2.5, "three", None, True, {"k": "v"}]}, 32, 65536) is None


@pytest.mark.parametrize("thread_id", [".", ".."])
def test_a_thread_id_a_url_cannot_carry_is_422_naming_it(api: httpx.Client, thread_id: str) -> None:
    response = api.post(
        "/api/v1/log/conversation/thread", json={"conversation": {"id": thread_id, "messages": [HELLO]}}
    )
    assert_names(response, "conversation.id")


def test_ids_that_merely_hold_dots_are_stored(api: httpx.Client) -> None:
    events = [{"type": "conversation", "id": "...", "user_id": ".a"}, {**MESSAGE, "conversation_id": "...", "id": ".."}]
    response = api.post("/api/v1/ingest", json={"events": events})
    assert response.status_code == 202, response.text
    assert api.get("/api/v1/conversations/...").json()["id"] == "..."
