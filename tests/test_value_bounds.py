"""Hostile values inside well-formed bodies and query strings, over real HTTP on both backends: times at
the ends of the calendar. Each is a 4xx naming its field (it was a 500); the in-range neighbours are
accepted."""

from __future__ import annotations

import httpx
import pytest

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
