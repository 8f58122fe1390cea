"""What the dashboard tests share: a server on SQLite seeded with the demo data through the public API,
accounts of each role, a signed-in HTTP client, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import func, select

from conftest import REPO, RunningServer
from convolens.store import accounts, projects
from convolens.store.db import Database
from convolens.store.tables import message
from convolens.timeutil import utcnow

CHROMIUM = Path("/usr/bin/chromium")
# As the machine's notes say: without these, Chromium tries Google's hosts, which this network refuses.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
PASSWORD = "correct horse battery"


@dataclass
class Account:
    email: str
    password: str = PASSWORD


def add_account(db: Database, email: str, project: str, role: str) -> Account:
    with db.writer() as conn:
        project_pk, _ = projects.ensure_project(conn, project)
        pk = accounts.create_account(conn, email, PASSWORD, utcnow())
        accounts.set_role(conn, pk, project_pk, role)
    return Account(email)


def wait_until_enriched(db: Database, timeout: float = 120, project_pk: int | None = None) -> None:
    """Until no message (of ``project_pk``, if given) waits for enrichment. On the session's shared server,
    give the project: the other tests' backlog is not this test's, and waiting for it cost minutes."""
    deadline = time.monotonic() + timeout
    pending_query = select(func.count()).select_from(message).where(message.c.enriched_version.is_(None))
    if project_pk is not None:
        pending_query = pending_query.where(message.c.project_pk == project_pk)
    while True:
        with db.reader() as conn:
            pending = conn.execute(pending_query).scalar_one()
        if not pending:
            return
        assert time.monotonic() < deadline, f"{pending} messages still pending"
        time.sleep(0.2)


@contextmanager
def signed_in(server: RunningServer, account: Account) -> Iterator[httpx.Client]:
    """An HTTP client with the account's session cookie, and its CSRF token as ``client.csrf``."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        response = client.post(
            "/login", data={"email": account.email, "password": account.password, "csrf_token": token, "next": "/"}
        )
        assert response.status_code == 303, response.text
        home = client.get("/", follow_redirects=True)
        match = re.search(r'name="csrf_token" value="([^"]+)"', home.text)
        client.csrf = match.group(1) if match else ""  # type: ignore[attr-defined]
        yield client


def launch_chromium(playwright):  # type: ignore[no-untyped-def]
    assert CHROMIUM.exists(), "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def screenshot(page, name: str, *, full_page: bool = False) -> None:  # type: ignore[no-untyped-def]
    """A 1280x800 picture of the page (or all of it) for a reviewer (test-artifacts/, not committed)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)
