"""The hot write routes (server/asgi/fast_path.py) answer exactly as FastAPI's own routes do.

Each request goes once through the app as served (the hot path) and once through FastAPI's stack alone
(the same endpoints, reached by FastAPI's routing and dependency solving); the answers must agree. The
hot path must also really be taken for well-formed requests, and leave everything else to FastAPI.
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from conftest import TEST_LIMITS, Project, make_project
from convolens.config import Settings
from convolens.schemas.context import ThreadBody
from convolens.schemas.ingest import IngestBatch
from convolens.server.api import context_log, ingest
from convolens.server.app import create_app
from convolens.server.asgi.body_limits import BoundedBodyMiddleware
from convolens.server.asgi.fast_path import FastPath, FastPathMismatch, FastRoute
from convolens.server.asgi.observability import RequestContextMiddleware
from convolens.store import migrate


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Project]]:
    home: Path = tmp_path_factory.mktemp("hot")
    settings = Settings(
        database_url=f"sqlite:///{home / 'convolens.sqlite3'}", home=home, limits=TEST_LIMITS, embedded_worker=False
    )
    app = create_app(settings)
    migrate.upgrade(app.state.db)
    yield app, make_project(app.state.db)
    app.state.db.dispose()


class _Counting:
    """FastAPI's own stack, counting the requests that reach it."""

    def __init__(self, app: Any) -> None:
        self.app, self.calls = app, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


@pytest.fixture
def paths(setup: tuple[Any, Project], monkeypatch: pytest.MonkeyPatch) -> tuple[TestClient, TestClient, _Counting]:
    """(the app as served, FastAPI's stack alone, the counter of what reached FastAPI from the first)."""
    app, _ = setup
    counting = _Counting(app.fastapi)
    hot = app.front.app.app.app  # RequestContextMiddleware -> WriteAdmission -> BoundedBodyMiddleware -> FastPath
    assert isinstance(hot, FastPath)
    monkeypatch.setattr(hot, "app", counting)
    plain = RequestContextMiddleware(BoundedBodyMiddleware(app.fastapi, limits=TEST_LIMITS), metrics=app.state.metrics)
    return TestClient(app), TestClient(plain), counting


def _conversation(tenant: str | None = None, text: str = "How do I reset my password?") -> dict:
    body: dict[str, Any] = {
        "conversation": {
            "messages": [{"role": "user", "message": text}, {"role": "assistant", "message": "Use the link."}],
            "metadata": {"user_id": "u1", "plan": "pro"},
        }
    }
    if tenant:
        body["tenant_id"] = tenant
    return body


def _batch() -> dict:
    cid = uuid.uuid4().hex
    return {
        "events": [
            {"type": "conversation", "id": cid, "user_id": "u1", "metadata": {"plan": "pro"}},
            {"type": "message", "conversation_id": cid, "id": f"{cid}-0", "role": "user", "content": "hi"},
            {"type": "message", "conversation_id": cid, "id": f"{cid}-1", "role": "assistant", "content": "hello"},
            {"type": "rating", "conversation_id": cid, "message_id": f"{cid}-1", "rating": 1},
            {"type": "feedback", "conversation_id": "nowhere", "feedback": "?"},
        ]
    }


def _without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<id>" if k == "id" else _without_ids(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


CASES = {
    "native batch": ("/api/v1/ingest", lambda: orjson.dumps(_batch()), {}, "token"),
    "context log": ("/api/v1/log/conversation", lambda: orjson.dumps(_conversation()), {}, "token"),
    "context log, tenant in the query": (
        "/api/v1/log/conversation?tenant_id=acme",
        lambda: orjson.dumps(_conversation()),
        {},
        "token",
    ),
    "upsert": (
        "/api/v1/log/conversation/upsert",
        lambda: orjson.dumps(_conversation(text=uuid.uuid4().hex)),
        {},
        "token",
    ),
    "thread": (
        "/api/v1/log/conversation/thread",
        lambda: orjson.dumps(
            {"conversation": {"id": uuid.uuid4().hex, "messages": [{"role": "user", "message": "hi"}]}}
        ),
        {},
        "token",
    ),
    "unknown token": ("/api/v1/log/conversation", lambda: orjson.dumps(_conversation()), {}, "cl_unknown"),
    "read-only token": ("/api/v1/ingest", lambda: orjson.dumps(_batch()), {}, "read_token"),
    "content over its bound": (
        "/api/v1/log/conversation",
        lambda: orjson.dumps(_conversation(text="x" * (TEST_LIMITS.max_content_chars + 1))),
        {},
        "token",
    ),
    "tenants disagree": (
        "/api/v1/log/conversation?tenant_id=a",
        lambda: orjson.dumps(_conversation(tenant="b")),
        {},
        "token",
    ),
    "gzip body": (
        "/api/v1/ingest",
        lambda: gzip.compress(orjson.dumps(_batch())),
        {"Content-Encoding": "gzip"},
        "token",
    ),
}
# Refused without FastAPI (by the admission or the hot path), as FastAPI's route would refuse them.
CASES |= {
    "malformed JSON": ("/api/v1/ingest", lambda: b'{"events": [}', {}, "token"),
    "invalid shape": ("/api/v1/log/conversation", lambda: b'{"conversation": {"messages": "no"}}', {}, "token"),
    "no token": ("/api/v1/ingest", lambda: orjson.dumps(_batch()), {}, None),
}
# Answered by FastAPI's route, not the hot path.
HANDED_ON = {
    "not JSON content": ("/api/v1/ingest", lambda: orjson.dumps(_batch()), {"Content-Type": "text/plain"}, "token"),
    "another query parameter": ("/api/v1/log/conversation?x=1", lambda: orjson.dumps(_conversation()), {}, "token"),
}


HANDED_ON_STATUS = {
    "not JSON content": 422,
    "another query parameter": 201,  # FastAPI ignores it; the hot path leaves such requests to FastAPI
}


def _send(client: TestClient, project: Project, case: tuple) -> tuple[int, Any, Any]:
    path, body, extra_headers, token_attr = case
    headers = {"Content-Type": "application/json", **extra_headers}
    if token_attr:
        headers["Authorization"] = f"Bearer {getattr(project, token_attr, token_attr)}"
    response = client.post(path, content=body(), headers=headers)
    assert response.headers["x-request-id"]
    return response.status_code, _without_ids(response.json()), response.headers.get("www-authenticate")


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_hot_path_answers_as_fastapi_does(name: str, setup: tuple, paths: tuple) -> None:
    _, project = setup
    hot, plain, reached_fastapi = paths
    answer = _send(hot, project, CASES[name])
    assert reached_fastapi.calls == 0, "a well-formed request went past the hot path"
    assert answer == _send(plain, project, CASES[name])
    assert answer[0] in (201, 202, 401, 403, 422)


@pytest.mark.parametrize("name", sorted(HANDED_ON))
def test_what_the_hot_path_does_not_take_fastapi_answers(name: str, setup: tuple, paths: tuple) -> None:
    _, project = setup
    hot, plain, reached_fastapi = paths
    answer = _send(hot, project, HANDED_ON[name])
    assert reached_fastapi.calls == 1
    assert answer == _send(plain, project, HANDED_ON[name])
    assert answer[0] == HANDED_ON_STATUS[name]


def test_a_body_nested_past_the_parsers_depth_is_a_422_naming_where(setup: tuple, paths: tuple) -> None:
    """FastAPI's route answers it with a bare 400 (its body parser fails); the hot path names the place."""
    _, project = setup
    hot, plain, reached_fastapi = paths
    case = ("/api/v1/ingest", lambda: b'{"events": [{"extra": ' + b"[" * 3000 + b"]" * 3000 + b"}]}", {}, "token")
    status, body, _ = _send(hot, project, case)
    assert reached_fastapi.calls == 0
    assert (status, [e["field"] for e in body["errors"]]) == (422, ["events[0].extra[0][0][0][0][0]"])
    assert _send(plain, project, case)[0] == 400


def test_the_hot_path_stores_what_it_acknowledges(setup: tuple, paths: tuple) -> None:
    app, project = setup
    hot, _, _ = paths
    headers = {"Authorization": f"Bearer {project.token}", "Content-Type": "application/json"}
    created = hot.post(
        "/api/v1/log/conversation?tenant_id=acme", content=orjson.dumps(_conversation()), headers=headers
    )
    assert created.status_code == 201
    stored = hot.get(f"/api/v1/conversations/{created.json()['data']['id']}", headers=headers).json()
    assert [m["message"] for m in stored["messages"]] == ["How do I reset my password?", "Use the link."]
    assert stored["tenant_id"] == "acme"
    # The access log and metrics name the route template, as for any other route.
    labels = {"method": "POST", "route": "/api/v1/log/conversation", "status": "201"}
    assert app.state.metrics.registry.get_sample_value("convolens_http_requests_total", labels) >= 1


def test_the_first_of_repeated_headers_counts_on_both_paths(setup: tuple, paths: tuple) -> None:
    _, project = setup
    hot, plain, _ = paths
    headers = [
        ("Authorization", "Bearer cl_not-this-one"),
        ("Authorization", f"Bearer {project.token}"),
        ("Content-Type", "application/json"),
        ("Content-Type", "text/plain"),
    ]
    body = orjson.dumps(_conversation())
    answers = [c.post("/api/v1/log/conversation", content=body, headers=headers) for c in (hot, plain)]
    assert [a.status_code for a in answers] == [401, 401]
    assert answers[0].json() == answers[1].json()


# The fast path's contract is checked when the app is made, not discovered by a request.


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'c.sqlite3'}", home=tmp_path, limits=TEST_LIMITS, embedded_worker=False
    )


@pytest.mark.parametrize(
    ("declared", "complaint"),
    [
        # the body model the endpoint does not take
        (FastRoute("/api/v1/log/conversation", ThreadBody, "body", takes_tenant=True), "declared body ThreadBody"),
        # a body parameter the endpoint does not have
        (FastRoute("/api/v1/ingest", IngestBatch, "events"), "declared parameters"),
        # tenant_id forgotten: the endpoint takes it and would not be called with it
        (FastRoute("/api/v1/log/conversation/thread", ThreadBody, "body"), "declared parameters"),
        # a route that does not exist
        (FastRoute("/api/v1/log/nothing", ThreadBody, "body", takes_tenant=True), "no POST route"),
    ],
)
def test_a_fast_route_that_does_not_match_its_endpoint_fails_create_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, declared: FastRoute, complaint: str
) -> None:
    monkeypatch.setattr(context_log, "FAST_ROUTES", (*context_log.FAST_ROUTES, declared))
    with pytest.raises(FastPathMismatch, match=complaint) as raised:
        create_app(_settings(tmp_path), run_migrations=False)
    assert declared.path in str(raised.value)


def test_the_declared_fast_routes_are_the_ones_taken(setup: tuple[Any, Project]) -> None:
    app, _ = setup
    fast = app.front.app.app.app
    assert (
        set(fast.routes)
        == {r.path for r in (*ingest.FAST_ROUTES, *context_log.FAST_ROUTES)}
        == {
            "/api/v1/ingest",
            "/api/v1/log/conversation",
            "/api/v1/log/conversation/upsert",
            "/api/v1/log/conversation/thread",
        }
    )
