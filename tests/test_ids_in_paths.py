"""Every id that travels in a URL path round-trips, whatever characters it holds: base64 hashes (``/``,
``+``, ``=``), which the README recommends for user ids, and ``%``, ``?``, ``#``, spaces, non-ASCII.
Through real HTTP: the API's id routes, and the dashboard's pages reached by following its own links."""

from __future__ import annotations

import html
import re
import uuid
from urllib.parse import quote, unquote

import httpx
import pytest

from conftest import RunningServer, make_project
from web_support import add_account, signed_in

IDS = (
    "ab/cd+ef==",  # base64
    "/leading",
    "trailing/",
    "a/../b",
    "a%2Fb",  # a literal percent sign followed by 2F: must not be decoded twice
    "100%",
    "what?x=1",
    "frag#ment",
    "with space",
    "naïve ユーザー",
    "+=-@",
)


def _path(value: str) -> str:
    return quote(value, safe="")


def _ingest(client: httpx.Client, value: str) -> None:
    events = [
        {"type": "conversation", "id": value, "user_id": value},
        {"type": "message", "conversation_id": value, "id": f"m-{IDS.index(value)}", "role": "user",
         "content": f"hello from {value}"},
    ]  # fmt: skip
    client.post("/api/v1/ingest", json={"events": events}).raise_for_status()


@pytest.fixture
def seeded(sqlite_server: RunningServer):  # type: ignore[no-untyped-def]
    project = make_project(sqlite_server.db, "ids")
    with sqlite_server.client(project.admin_token) as client:
        for value in IDS:
            _ingest(client, value)
    return project


def test_api_id_routes_take_any_id(sqlite_server: RunningServer, seeded) -> None:  # type: ignore[no-untyped-def]
    with sqlite_server.client(seeded.admin_token) as client:
        for value in IDS:
            got = client.get(f"/api/v1/conversations/{_path(value)}")
            assert got.status_code == 200, (value, got.text)
            assert got.json()["id"] == value
            rated = client.patch(f"/api/v1/log/conversation/thread/{_path(value)}", json=[{"rating": 1}])
            assert rated.status_code == 200, (value, rated.text)
            assert client.get(f"/api/v1/conversations/{_path(value)}").json()["messages"][0]["rating"] == 1
        for value in IDS:
            erased = client.delete(f"/api/v1/users/{_path(value)}")
            assert erased.status_code == 200, (value, erased.text)
            assert erased.json()["user_id"] == value and erased.json()["erased"]["conversations"] == 1
            assert client.get(f"/api/v1/conversations/{_path(value)}").status_code == 404
            assert client.delete(f"/api/v1/users/{_path(value)}").status_code == 404


def _links(page: str, kind: str) -> list[str]:
    """The hrefs of the page that lead to one conversation or one user."""
    return [html.unescape(h) for h in re.findall(rf'href="(/p/[^"/]+/{kind}/[^"]+)"', page)]


def _id_of(link: str, kind: str) -> str:
    return unquote(link.split(f"/{kind}/", 1)[1])


def test_the_dashboards_own_links_lead_to_each_conversation_and_user(
    sqlite_server: RunningServer,
    seeded,  # type: ignore[no-untyped-def]
) -> None:
    account = add_account(sqlite_server.db, f"{uuid.uuid4().hex[:8]}@example.com", seeded.name, "viewer")
    with signed_in(sqlite_server, account) as client:
        listing = client.get(f"/p/{seeded.name}/conversations")
        assert listing.status_code == 200
        conversation_links = _links(listing.text, "conversations")
        assert sorted(_id_of(link, "conversations") for link in conversation_links) == sorted(IDS)
        user_links = _links(client.get(f"/p/{seeded.name}/users").text, "users")
        assert sorted(_id_of(link, "users") for link in user_links) == sorted(IDS)
        for link in conversation_links:
            value = _id_of(link, "conversations")
            transcript = client.get(link)
            assert transcript.status_code == 200, (value, transcript.text[:300])
            assert f"hello from {value}" in html.unescape(transcript.text)
            (user_link,) = _links(transcript.text, "users")  # the transcript's link to its user
            user_page = client.get(user_link)
            assert user_page.status_code == 200, (value, user_page.text[:300])
            assert f"User {value}" in html.unescape(user_page.text)
            (back,) = _links(user_page.text, "conversations")  # and the user page's link back
            assert _id_of(back, "conversations") == value and client.get(back).status_code == 200


def test_signing_in_returns_to_the_very_id(sqlite_server: RunningServer, seeded) -> None:  # type: ignore[no-untyped-def]
    for value in ("ab/cd+ef==", "what?x=1", "100%"):
        link = f"/p/{seeded.name}/users/{_path(value)}"
        to_login = httpx.get(sqlite_server.base_url + link)
        assert to_login.status_code == 303
        assert unquote(to_login.headers["location"].split("next=", 1)[1]) == link
