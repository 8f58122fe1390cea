"""The access-control matrix: every API route by every kind of caller, with the expected status asserted.

Dashboard pages join this matrix when they exist (dashboard issue).
"""

from __future__ import annotations

import pytest

from conftest import Project, RunningServer, make_project
from convolens.store import projects

THREAD = "matrix-thread"
USER = "matrix-user"

# (method, path, json body, the scope it needs, whether it names a resource of the project)
ROUTES = [
    (
        "POST",
        "/api/v1/ingest",
        {"events": [{"type": "message", "conversation_id": "m", "role": "user", "content": "hi"}]},
        "ingest",
        False,
    ),
    (
        "POST",
        "/api/v1/log/conversation",
        {"conversation": {"messages": [{"role": "user", "message": "hi"}]}},
        "ingest",
        False,
    ),
    (
        "POST",
        "/api/v1/log/conversation/upsert",
        {"conversation": {"messages": [{"role": "user", "message": "a"}, {"role": "assistant", "message": "b"}]}},
        "ingest",
        False,
    ),
    (
        "POST",
        "/api/v1/log/conversation/thread",
        {"conversation": {"messages": [{"role": "user", "message": "x"}]}},
        "ingest",
        False,
    ),
    ("PATCH", f"/api/v1/log/conversation/thread/{THREAD}", [{"rating": 1}], "ingest", True),
    ("GET", "/api/v1/conversations", None, "read", False),
    ("GET", f"/api/v1/conversations/{THREAD}", None, "read", True),
    ("GET", "/api/v1/conversations/series", None, "read", False),
    ("GET", "/api/v1/conversations/series/volume", None, "read", False),
    ("GET", "/api/v1/conversations/series/rating", None, "read", False),
    ("GET", "/api/v1/conversations/series/sentiment", None, "read", False),
    ("GET", "/api/v1/suggested_topics", None, "read", False),
    ("DELETE", f"/api/v1/users/{USER}", None, "admin", True),
]
PUBLIC = [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")]


@pytest.fixture
def callers(server: RunningServer) -> dict[str, str | None]:
    db = server.db
    own = make_project(db, "own")
    other = make_project(db, "other")
    with db.writer() as conn:
        admin, _ = projects.create_token(conn, own.pk, frozenset({"admin"}))
        everything, _ = projects.create_token(conn, own.pk, frozenset({"ingest", "read", "admin"}))
        other_everything, _ = projects.create_token(conn, other.pk, frozenset({"ingest", "read", "admin"}))
        revoked, revoked_pk = projects.create_token(conn, own.pk, frozenset({"ingest", "read", "admin"}))
        projects.revoke_token(conn, str(revoked_pk))
    return {
        "_own_token": own.token,
        "no token": None,
        "malformed": "Bearer not-a-token",
        "wrong scheme": f"Basic {own.token}",
        "revoked": f"Bearer {revoked}",
        "ingest only": f"Bearer {own.ingest_token}",
        "read only": f"Bearer {own.read_token}",
        "admin only": f"Bearer {admin}",
        "other project": f"Bearer {other_everything}",
        "owner": f"Bearer {everything}",
    }


def ensure_resources(server: RunningServer, token: str) -> None:
    """The thread and end user the routes name exist in the own project (a DELETE may have erased them)."""
    with server.client(token) as client:
        client.post(
            "/api/v1/log/conversation/thread",
            json={
                "conversation": {
                    "id": THREAD,
                    "messages": [{"role": "user", "message": "q"}],
                    "metadata": {"user_id": USER},
                }
            },
        )
        client.post("/api/v1/ingest", json={"events": [{"type": "conversation", "id": THREAD, "user_id": USER}]})


def expected(caller: str, scope: str, names_resource: bool, method: str) -> set[int]:
    if caller in ("no token", "malformed", "wrong scheme", "revoked"):
        return {401}
    held = {"ingest only": {"ingest"}, "read only": {"read"}, "admin only": {"admin"}}.get(
        caller, {"ingest", "read", "admin"}
    )
    if scope not in held:
        return {403}
    if caller == "other project" and names_resource:
        return {404}  # nothing of another project is visible, not even its existence
    return {200, 201, 202}


@pytest.mark.parametrize("method,path,body,scope,names_resource", ROUTES, ids=[f"{r[0]} {r[1]}" for r in ROUTES])
def test_matrix(
    server: RunningServer, callers: dict, method: str, path: str, body: object, scope: str, names_resource: bool
) -> None:
    own_token = callers["_own_token"]
    with server.client() as client:
        for caller, header in callers.items():
            if caller.startswith("_"):
                continue
            ensure_resources(server, own_token)
            response = client.request(method, path, json=body, headers={"Authorization": header} if header else {})
            assert response.status_code in expected(caller, scope, names_resource, method), (
                caller,
                response.status_code,
                response.text[:200],
            )
            if response.status_code == 401:
                assert response.headers["www-authenticate"].startswith("Bearer")
            if caller == "other project" and method == "GET" and response.status_code == 200:
                assert THREAD not in response.text  # lists and series hold nothing of the other project


@pytest.mark.parametrize("method,path", PUBLIC)
def test_public_routes_need_no_token(server: RunningServer, method: str, path: str) -> None:
    with server.client() as client:
        assert client.request(method, path).status_code == 200


def test_other_projects_series_do_not_count_our_data(server: RunningServer, project: Project) -> None:
    other = make_project(server.db, "other")
    with server.client(project.token) as mine:
        mine.post("/api/v1/log/conversation", json={"conversation": {"messages": [{"role": "user", "message": "x"}]}})
    with server.client(other.token) as theirs:
        series = {s["name"]: s["data"] for s in theirs.get("/api/v1/conversations/series/volume").json()["series"]}
    assert sum(series["conversations"].values()) == 0
