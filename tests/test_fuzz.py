"""Hostile and broken input: schemathesis over the server's own OpenAPI, and hypothesis-made JSON.

Whatever arrives, the answer is a 2xx or a clear 4xx (never a 5xx), and what was accepted reads back
exactly as it was sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from conftest import Project, RunningServer, make_project, running_server
from convolens.config import Limits
from convolens.store import migrate, projects
from convolens.store.db import Database

COUNTS: dict[str, int] = {"schemathesis": 0, "hypothesis": 0}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Project]]:
    home = tmp_path_factory.mktemp("fuzz")
    db = Database(f"sqlite:///{home / 'convolens.sqlite3'}")
    migrate.upgrade(db)
    # No rate limit here: the fuzzer should reach the handlers, not the limiter.
    project = make_project(db, "fuzz")
    with db.writer() as conn:  # storage fidelity is under test here, not PII scrubbing (test_pii.py)
        projects.set_project_setting(conn, project.name, "pii_scrubbing", False)
    with running_server(db, home, Limits(rate_limit_per_second=0)) as server:
        yield server, project
    db.dispose()


def test_schemathesis_finds_no_server_error(fuzz_server) -> None:
    """Every operation of /openapi.json, with valid and with invalid data, with a valid token."""
    server, project = fuzz_server
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    headers = {"Authorization": f"Bearer {project.token}"}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def check(case) -> None:
                COUNTS["schemathesis"] += 1
                case.call_and_validate(
                    base_url=server.base_url, headers=headers, checks=[not_a_server_error, response_schema_conformance]
                )

            try:
                check()
            except Unsatisfiable:
                # An operation with nothing to get wrong (no parameters, no body) has no negative cases.
                assert mode is GenerationMode.NEGATIVE, operation.label


# -- hypothesis: random JSON of every awkward kind -----------------------------------------------

awkward_text = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=50),
    st.sampled_from(
        [
            "",
            "\x00",
            "a\x00b",
            "👋🏽🇰🇷",
            "مرحبا بالعالم",
            "\u202eevil\u202c",
            "😀" * 300,
            "x" * 6000,
            "\ud800",
            "null",
            "1e309",
            "-0",
            "<script>alert(1)</script>",
        ]
    ),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    awkward_text,
    st.integers().map(str),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(awkward_text, inner, max_size=4)),
    max_leaves=20,
)


def message_like() -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {
            "type": st.sampled_from(["message", "conversation", "rating", "event", "feedback", "bogus"]),
            "conversation_id": st.one_of(awkward_text, st.integers()),
            "role": st.sampled_from(["user", "assistant", "system", "tool", "wizard", 3]),
            "content": st.one_of(awkward_text, st.integers(), st.none()),
        },
        optional={
            "id": awkward_text,
            "metadata": st.dictionaries(awkward_text, json_values, max_size=5),
            "rating": st.one_of(st.integers(-3, 3), awkward_text),
            "timestamp": awkward_text,
            "name": awkward_text,
            "feedback": awkward_text,
            "extra": json_values,
        },
    )


def encode(value: object, *, raw_mangle: int) -> bytes:
    """JSON bytes, sometimes broken in ways a JSON encoder would never produce."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False) if value is not ... else "{"
    data = text.encode("utf-8", "surrogatepass")
    if raw_mangle == 1:
        data = data.replace(b"{", b'{"dup": 1, "dup": 2, ', 1) if data.startswith(b"{") else data
    elif raw_mangle == 2:
        data = data[: len(data) // 2]  # truncated
    elif raw_mangle == 3:
        data = data + b"\xff\xfe"  # invalid UTF-8
    elif raw_mangle == 4:
        data = b"[" * 5000 + b"]" * 5000  # deep nesting
    return data


@given(
    body=st.one_of(json_values, st.fixed_dictionaries({"events": st.lists(message_like(), max_size=6)})),
    mangle=st.sampled_from([0, 0, 0, 1, 2, 3, 4]),
    path=st.sampled_from(
        [
            "/api/v1/ingest",
            "/api/v1/log/conversation",
            "/api/v1/log/conversation/thread",
            "/api/v1/log/conversation/upsert",
            "/v1/traces",
            "/v1/logs",
        ]
    ),
)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_random_json_gets_2xx_or_a_clear_4xx(fuzz_server, body, mangle, path) -> None:
    server, project = fuzz_server
    COUNTS["hypothesis"] += 1
    with server.client(project.token) as client:
        response = client.post(
            path, content=encode(body, raw_mangle=mangle), headers={"Content-Type": "application/json"}
        )
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert response.json()["detail"]


@given(
    content=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=300),
    meta_value=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=100),
)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_accepted_text_reads_back_byte_for_byte(fuzz_server, content, meta_value) -> None:
    server, project = fuzz_server
    COUNTS["hypothesis"] += 1
    with server.client(project.token) as client:
        sent = client.post(
            "/api/v1/log/conversation/thread",
            json={"conversation": {"messages": [{"role": "user", "message": content, "metadata": {"k": meta_value}}]}},
        )
        assert sent.status_code == 201, sent.text
        thread_id = sent.json()["data"]["id"]
        got = client.get(f"/api/v1/conversations/{thread_id}").json()["messages"][0]
    assert got["message"].encode("utf-8") == content.encode("utf-8")
    assert got["metadata"] == {"k": meta_value}


# -- hypothesis: times across the whole calendar, at any UTC offset ------------------------------

offsets = st.one_of(st.none(), st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m))))
calendar = st.one_of(
    st.datetimes(timezones=offsets),  # year 1 to 9999, where hypothesis likes to try both ends
    st.datetimes(datetime(1969, 12, 30), datetime(1970, 1, 2), timezones=offsets),
    st.datetimes(datetime(2199, 12, 30), datetime(2200, 1, 2), timezones=offsets),
)


def in_accepted_range(when: datetime) -> bool:
    """Whether the time, moved to UTC by hand (not as the server does), is in 1970..2199."""
    try:
        utc = when.replace(tzinfo=None) - (when.utcoffset() or timedelta(0))
    except OverflowError:
        return False
    return datetime(1970, 1, 1) <= utc < datetime(2200, 1, 1)


@given(when=calendar)
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_time_is_accepted_in_range_or_a_422_naming_it(fuzz_server, when: datetime) -> None:
    server, project = fuzz_server
    COUNTS["hypothesis"] += 1
    stamp = when.isoformat()
    event = {"type": "message", "conversation_id": "times", "role": "user", "content": "t", "timestamp": stamp}
    with server.client(project.token) as client:
        sent = client.post("/api/v1/ingest", json={"events": [event]})
        listed = client.get("/api/v1/conversations", params={"start_time": stamp, "end_time": stamp})
    if in_accepted_range(when):
        assert (sent.status_code, listed.status_code) == (202, 200), (stamp, sent.text, listed.text)
    else:
        assert sent.status_code == 422 and sent.json()["errors"][0]["field"] == "events[0].message.timestamp", stamp
        assert listed.status_code == 422 and listed.json()["errors"][0]["field"] == "start_time", stamp


def test_report_counts(fuzz_server, tmp_path_factory) -> None:
    # Not an assertion about behaviour: writes how much was tried, for the closing note and CI logs.
    out = Path(tmp_path_factory.getbasetemp()) / "fuzz-counts.json"
    out.write_text(json.dumps(COUNTS))
    print(f"fuzz counts: {COUNTS}")
    assert COUNTS["hypothesis"] >= 530 and COUNTS["schemathesis"] >= 500


def test_nothing_was_stored_with_a_nul_or_broken_text(fuzz_server) -> None:
    server, project = fuzz_server
    with server.db.reader() as conn:
        from sqlalchemy import select

        from convolens.store.tables import message

        for (content,) in conn.execute(select(message.c.content).where(message.c.project_pk == project.pk)):
            assert "\x00" not in content
            content.encode("utf-8")  # raises on a lone surrogate


def test_ingest_of_a_huge_metadata_key_count_is_422(fuzz_server) -> None:
    server, project = fuzz_server
    with server.client(project.token) as client:
        response = client.post(
            "/api/v1/ingest",
            json={"events": [{"type": "conversation", "id": "c", "metadata": {str(i): i for i in range(10_000)}}]},
        )
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "events[0].metadata"


def test_deeply_nested_extra_is_refused_cleanly(fuzz_server) -> None:
    server, project = fuzz_server
    nested = '{"a":' * 3000 + '"leaf"' + "}" * 3000  # deeper than any JSON encoder would write
    body = (
        '{"events": [{"type": "message", "conversation_id": "c", "role": "user", "content": "x", "extra": '
        + nested
        + "}]}"
    )
    with server.client(project.token) as client:
        response = client.post("/api/v1/ingest", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text[:300]
    assert isinstance(httpx.Response(200, content=response.content).json(), dict)
