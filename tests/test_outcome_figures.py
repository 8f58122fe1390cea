"""Each topic's and each user's unresolved share: through ``GET /api/v1/topics?figures=true`` (a defined
topic from the rollups, a suggested one from its links), the Topics page and the users page, on both
backends."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
from sqlalchemy import insert, select

from conftest import Project, RunningServer
from convolens.store import topics
from convolens.store.tables import conversation, message, message_topic
from convolens.timeutil import utcnow
from test_outcome_rollups import send
from test_outcomes import GAVE_UP, THANKED, read_when_enriched
from test_rollups import refresh
from web_support import add_account, signed_in

DAY = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)
WINDOW = {"start_time": "2026-11-09T00:00:00Z", "end_time": "2026-11-15T23:59:59Z"}
# Both threads ask about the account's email address; one is answered and thanked, the other given up on.
ANSWERED = [
    ("user", "How do I change the email address on my account?"),
    ("assistant", "Go to Settings > Account, click Edit next to your email and confirm the new address."),
    ("user", "Found it, thanks a lot!"),
]


def topic_figures(client: httpx.Client, status: str = "active") -> dict[str, dict]:
    response = client.get("/api/v1/topics", params={**WINDOW, "figures": "true", "status": status})
    assert response.status_code == 200, response.text
    return {t["name"]: t["figures"] for t in response.json()["topics"]}


def test_topics_and_users_carry_their_unresolved_share(server: RunningServer, project: Project) -> None:
    with server.client(project.admin_token) as admin:
        for name, words in (("Email address", ["email address"]), ("Invoices", ["invoices"])):
            body = {"name": name, "kind": "keyword", "keywords": words}
            assert admin.post("/api/v1/topics", json=body).status_code == 201
    with server.client(project.token) as client:
        send(client, "gave-up", "dana", GAVE_UP, DAY)
        send(client, "answered", "dana", ANSWERED, DAY + timedelta(hours=1))
        send(client, "answered-too", "erik", ANSWERED, DAY + timedelta(hours=2))
        send(client, "invoices", "erik", THANKED, DAY + timedelta(hours=3))
        for cid, n in (("gave-up", 7), ("answered", 3), ("answered-too", 3), ("invoices", 3)):
            read_when_enriched(client, cid, n)
        found = topic_figures(client)
    assert found["Email address"]["outcomes"] == {"resolved": 2, "unresolved": 1, "abandoned": 0, "unknown": 0}
    assert found["Email address"]["unresolved_share"] == round(1 / 3, 4)
    assert found["Invoices"]["outcomes"]["resolved"] == 1 and found["Invoices"]["unresolved_share"] == 0.0

    # A suggestion, which is not rolled up: counted from its links, the same way.
    with server.db.writer() as conn:
        pk = topics.create(
            conn, project.pk, name="Suggested: email", kind="semantic", definition={"examples": ["email"]},
            now=utcnow(), status="suggested",
        )  # fmt: skip
        linked = conn.execute(
            select(message.c.pk, message.c.conversation_pk, message.c.created_at)
            .join(conversation, conversation.c.pk == message.c.conversation_pk)
            .where(
                message.c.project_pk == project.pk,
                message.c.role == "user",
                conversation.c.id.in_(["gave-up", "answered"]),
            )
        ).all()
        conn.execute(
            insert(message_topic),
            [
                {"message_pk": m, "topic_pk": pk, "project_pk": project.pk, "conversation_pk": c, "created_at": at,
                 "score": 0.9}
                for m, c, at in linked
            ],
        )  # fmt: skip
    with server.client(project.token) as client:
        suggested = topic_figures(client, "suggested")["Suggested: email"]
    assert suggested["outcomes"]["unresolved"] == 1 and suggested["outcomes"]["resolved"] == 1
    assert suggested["unresolved_share"] == 0.5

    account = add_account(server.db, f"{uuid.uuid4().hex[:8]}@example.com", project.name, "viewer")
    base = f"/p/{quote(project.name)}"
    with signed_in(server, account) as web:
        page = web.get(f"{base}/topics", params={"start": "2026-11-09", "end": "2026-11-15"}).text
        row = re.search(r'<tr data-topic="\d+"><td class="topic-name"><a [^>]*>Email address</a>.*?</tr>', page, re.S)
        cell = re.search(r'<td class="num unresolved"><a href="([^"]+)"[^>]*>33%</a>', row.group(0))
        assert cell, row.group(0)
        listed = web.get(cell.group(1).replace("&amp;", "&")).text
        assert "/conversations/gave-up" in listed and "/conversations/answered" not in listed
        refresh(server.db)  # the users' outcome counts are running figures, kept with the rollups
        users = web.get(f"{base}/users", params={"sort": "user_id", "order": "asc"}).text
        shares = dict(
            re.findall(r'/users/(\w+)">\1</a>.*?<td class="num unresolved">(?:<a [^>]*>)?([^<]+)<', users, re.S)
        )
        assert shares == {"dana": "50%", "erik": "0%"}
