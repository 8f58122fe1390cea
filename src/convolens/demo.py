"""``convolens demo``: serve, and seed a demo project through the public API on first start.

The demo token is kept in ``$CONVOLENS_HOME/demo-token`` (readable by the owner only) so that
re-running the demo prints the same token and does not seed twice.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import uvicorn

from convolens.config import Settings
from convolens.demo_data import generate
from convolens.server import garbage_collection
from convolens.server.app import create_app
from convolens.store import accounts, migrate, projects, topics
from convolens.store import conversation_reads as queries
from convolens.store.db import Database
from convolens.timeutil import utcnow

DEMO_PROJECT = "demo"
BATCH_CONVERSATIONS = 50


def demo_token(settings: Settings, db: Database) -> tuple[str, bool]:
    """The demo project's token, and whether the project still needs its data."""
    path = settings.home / "demo-token"
    with db.writer() as conn:
        project_pk, _ = projects.ensure_project(conn, DEMO_PROJECT)
        token = path.read_text().strip() if path.exists() else ""
        if not token or projects.authenticate(conn, token) is None:
            token, _ = projects.create_token(conn, project_pk, frozenset({"ingest", "read"}), "demo")
            _write_private(path, token)
        empty = queries.project_totals(conn, project_pk)["conversations"] == 0
    return token, empty


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")


DEMO_ADMIN = "admin@demo.convolens"


def demo_admin(settings: Settings, db: Database) -> tuple[str, str]:
    """The demo project's dashboard admin and its password, kept in ``$CONVOLENS_HOME/demo-admin``."""
    path = settings.home / "demo-admin"
    password = path.read_text().strip() if path.exists() else ""
    with db.writer() as conn:
        project_pk, _ = projects.ensure_project(conn, DEMO_PROJECT)
        account_pk = accounts.account_pk(conn, DEMO_ADMIN)
        if account_pk is None or not password or accounts.verify(conn, DEMO_ADMIN, password) is None:
            password = secrets.token_urlsafe(12)
            if account_pk is not None:
                accounts.set_password(conn, account_pk, password)
            else:
                account_pk = accounts.create_account(conn, DEMO_ADMIN, password, utcnow())
            _write_private(path, password)
        accounts.set_role(conn, account_pk, project_pk, "admin")
    return DEMO_ADMIN, password


# What the demo's Context-compatible clients ask: real questions, since a greeting with a counter
# ("Hello from a Context client #3") was suggested as a topic named "Context client". "Where can I
# download my data?" has no detectable language: the overview shows it as "not detected".
CONTEXT_QUESTIONS = [
    "How do I export all my conversations?",
    "Can I change the email address on my account?",
    "How do I turn on two-factor authentication?",
    "Where can I download my data?",
    "How do I delete my account?",
]


def seed(base_url: str, token: str, conversations: int) -> int:
    """Send the demo conversations through ``POST /api/v1/ingest``; returns the number of messages."""
    now = utcnow()
    sent = 0
    batch: list[dict] = []
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for conv in generate(conversations, now=now - timedelta(minutes=5), days=28):
            batch += conv.as_events()
            sent += len(conv.messages)
            if len(batch) >= BATCH_CONVERSATIONS * 8:
                client.post("/api/v1/ingest", json={"events": batch}).raise_for_status()
                batch = []
        if batch:
            client.post("/api/v1/ingest", json={"events": batch}).raise_for_status()
        # A few through the Context-compatible endpoint too, as a Context user's app would send them.
        for i, question in enumerate(CONTEXT_QUESTIONS):
            client.post(
                "/api/v1/log/conversation",
                json={
                    "conversation": {
                        "messages": [
                            {"role": "user", "message": question},
                            {"role": "assistant", "message": "Hi! How can I help?"},
                        ],
                        "metadata": {"user_id": f"context-user-{i}", "model": "gpt-4o-mini"},
                    }
                },
            ).raise_for_status()
            sent += 2
    return sent


DEMO_TOPICS = [
    ("Billing", "keyword", {"keywords": ["charged", "invoice", "refund", "plan", "결제", "요금제", "請求"]}),
    (
        "Coding help",
        "semantic",
        {
            "description": "programming questions: code, errors, libraries",
            "examples": ["How do I parse JSON in Python?"],
        },
    ),
]


def add_demo_topics(db: Database) -> None:
    """A keyword and a semantic topic, so the demo shows topics before anyone defines one."""
    with db.writer() as conn:
        project_pk, _ = projects.ensure_project(conn, DEMO_PROJECT)
        for name, kind, definition in DEMO_TOPICS:
            if not topics.name_taken(conn, project_pk, name):
                topics.create(conn, project_pk, name=name, kind=kind, definition=definition, now=utcnow())


def run_demo(host: str = "127.0.0.1", port: int = 8000, conversations: int = 300) -> int:
    settings = Settings.from_env()
    db = Database(settings.database_url)
    migrate.upgrade(db)
    token, needs_data = demo_token(settings, db)
    email, password = demo_admin(settings, db)
    if needs_data:
        add_demo_topics(db)
    db.dispose()

    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning"))
    garbage_collection.tune()
    base_url = f"http://{host}:{port}"

    def seed_when_up() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.05)
        if needs_data:
            try:
                count = seed(base_url, token, conversations)
            except httpx.HTTPError as exc:
                # Ctrl-C while seeding closes the server under the seeding client: that is a stop, not a
                # crash, so it gets one line rather than a thread's traceback.
                if server.should_exit:
                    print("the demo stopped before its data was all sent", flush=True)
                else:
                    print(f"seeding the demo project failed: {exc!r}", flush=True)
                return
            print(f"seeded the demo project with {conversations} conversations ({count} messages)", flush=True)
        print(
            f"\nconvolens demo is running on {base_url}\n"
            f"dashboard: {base_url}/ — sign in as {email} with password {password}\n"
            f"demo API token (project '{DEMO_PROJECT}'): {token}\n"
            f"try: curl -H 'Authorization: Bearer {token}' '{base_url}/api/v1/conversations?per_page=2'\n"
            "stop with Ctrl+C",
            flush=True,
        )

    threading.Thread(target=seed_when_up, name="convolens-demo-seed", daemon=True).start()
    server.run()
    # The demo's server only stops on a signal (Ctrl-C). uvicorn raises it again once it has shut down,
    # but from inside asyncio.run, whose own SIGINT handler lets run() return normally when the main task
    # is already done (seen when Ctrl-C came mid-seed): the shell's code for SIGINT either way.
    return 130 if server.should_exit else 0
