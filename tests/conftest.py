"""Shared fixtures: a real PostgreSQL and SQLite for every store test, real servers over real HTTP.

PostgreSQL comes from, in order: ``CONVOLENS_TEST_POSTGRES_URL``; a server on 127.0.0.1:5432 (as on
the CI machine); or the ``pgserver`` wheel (a PostgreSQL inside a pip package), started in a temp dir.
With CI=true a missing PostgreSQL fails the run instead of skipping its tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from convolens.config import Limits, LlmSettings, Settings
from convolens.outbound import OutboundPolicy
from convolens.schemas.ingest import ConversationEvent, IngestBatch, MessageEvent
from convolens.server.app import create_app
from convolens.store import migrate, projects
from convolens.store.db import Database
from convolens.store.ingest import NewIdsBatch, new_id

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _admin_url() -> tuple[str, object | None]:
    """A psycopg URL of a PostgreSQL we may create databases on, and a handle keeping it alive."""
    url = os.environ.get("CONVOLENS_TEST_POSTGRES_URL")
    if url:
        return url, None
    if _port_open("127.0.0.1", 5432):
        return "postgresql://postgres@127.0.0.1:5432/test", None
    try:
        import tempfile

        import pgserver  # a PostgreSQL server shipped inside a wheel (dev extra)
    except ImportError:
        return "", None
    server = pgserver.get_server(tempfile.mkdtemp(prefix="convolens-pg-"), cleanup_mode="stop")
    return server.get_uri(), server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    import psycopg

    admin, handle = _admin_url()
    if not admin:
        message = "no PostgreSQL reachable (set CONVOLENS_TEST_POSTGRES_URL or install the dev extra)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    name = f"convolens_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL at {admin} unusable: {exc}")
        pytest.skip(f"PostgreSQL unusable: {exc}")
    base, _, query = admin.partition("?")
    root = base.rsplit("/", 1)[0]
    url = f"{root}/{name}" + (f"?{query}" if query else "")
    yield url.replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    del handle


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'convolens.sqlite3'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate.upgrade(database)
    yield database
    database.dispose()


@contextmanager
def separate_database(database_url: str, folder: Path, label: str) -> Iterator[Database]:
    """A migrated database of its own beside ``database_url``'s (a new SQLite file in ``folder``, or a new
    PostgreSQL database dropped afterwards), where no server's embedded worker changes what a test steps
    through."""
    import psycopg

    name = admin = None
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{folder / f'{label}.sqlite3'}"
    else:
        name = f"convolens_{label}_{uuid.uuid4().hex[:8]}"
        admin = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        base, _, query = database_url.partition("?")
        url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    database = Database(url)
    migrate.upgrade(database)
    try:
        yield database
    finally:
        database.dispose()
        if name is not None:  # each test's own database goes with it, or runs pile them up on the server
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def own_db(database_url: str) -> Iterator[Database]:
    """A ``Database`` of this test's own (same database, new engines), for tests that listen to its
    engines' events or count its connections."""
    database = Database(database_url)
    migrate.upgrade(database)
    yield database
    database.dispose()


def new_ids_batch(pk: int, user: str = "u", messages: int = 2) -> NewIdsBatch:
    """One new conversation of ``messages`` user messages, as Context's log endpoint hands it to the store."""
    cid = new_id()
    events = [
        ConversationEvent.model_construct(
            type="conversation",
            id=cid,
            user_id=user,
            tenant_id=None,
            metadata={"n": messages},
            feedback=None,
            timestamp=None,
        )
    ]
    events += [
        MessageEvent.model_construct(type="message", conversation_id=cid, id=new_id(), role="user",
                                     content=f"{user} {i}", kind="text", name=None, timestamp=None, metadata=None,
                                     rating=None, model=None, input_tokens=None, output_tokens=None, latency_ms=None,
                                     error=None, extra=None, user_id=None, tenant_id=None)
        for i in range(messages)
    ]  # fmt: skip
    return NewIdsBatch(pk, IngestBatch.model_construct(events=events, client=None))


@dataclass
class Project:
    name: str
    pk: int
    token: str  # ingest + read
    ingest_token: str
    read_token: str
    admin_token: str  # ingest + read + admin


def make_project(db: Database, prefix: str = "p") -> Project:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    with db.writer() as conn:
        pk, _ = projects.ensure_project(conn, name)
        both, _ = projects.create_token(conn, pk, frozenset({"ingest", "read"}))
        ingest, _ = projects.create_token(conn, pk, frozenset({"ingest"}))
        read, _ = projects.create_token(conn, pk, frozenset({"read"}))
        admin, _ = projects.create_token(conn, pk, frozenset({"ingest", "read", "admin"}))
    return Project(name, pk, both, ingest, read, admin)


@pytest.fixture
def project(db: Database) -> Project:
    """A fresh project per test: tests never see each other's data, on either backend."""
    return make_project(db)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    base_url: str
    db: Database
    settings: Settings
    app: Any = None  # the app object served, for a test that watches its state

    def client(self, token: str | None = None, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)


# Small bounds so the tests can cross each one cheaply.
TEST_LIMITS = Limits(
    max_body_bytes=256 * 1024,
    max_decompressed_bytes=1024 * 1024,
    max_batch_events=200,
    max_messages_per_conversation=50,
    max_content_chars=5000,
    max_metadata_keys=10,
    max_metadata_key_chars=40,
    max_metadata_value_chars=200,
    max_per_page=50,
)


@contextmanager
def running_server(
    db: Database,
    home: Path,
    limits: Limits = TEST_LIMITS,
    llm: LlmSettings | None = None,
    outbound: OutboundPolicy | None = None,
    embedded_worker: bool = True,
) -> Iterator[RunningServer]:
    """The real app under uvicorn on a free loopback port, in a thread of the test process. ``outbound``:
    what the operator lets project admins' URLs reach (tests of a project's LLM provider on the loopback
    stub allow 127.0.0.1). Without ``embedded_worker`` a test steps the workers' duties itself."""
    settings = Settings(
        database_url=db.url, home=home, limits=limits, llm=llm or LlmSettings(), outbound=outbound or OutboundPolicy(),
        embedded_worker=embedded_worker,
    )  # fmt: skip
    app = create_app(settings)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", app.state.db, settings, app)
    finally:
        uv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def server(db: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server per backend."""
    with running_server(db, tmp_path_factory.mktemp("home")) as running:
        yield running


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server on SQLite only, for client-side tests where the backend does not matter."""
    home = tmp_path_factory.mktemp("sqlite-home")
    database = Database(f"sqlite:///{home / 'convolens.sqlite3'}")
    migrate.upgrade(database)
    with running_server(database, home, Limits()) as running:
        yield running
    database.dispose()


@pytest.fixture
def api(server: RunningServer, project: Project) -> Iterator[httpx.Client]:
    with server.client(project.token) as client:
        yield client


REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "convolens"]


class ServeProcess:
    """``convolens serve`` as a separate process (SQLite in ``home`` unless a URL is given), which a test
    may kill and start again."""

    def __init__(
        self,
        home: Path,
        database_url: str | None = None,
        project: str = "sdk",
        extra_env: dict[str, str] | None = None,
        log_level: str = "warning",
        log_path: Path | None = None,
        serve_args: list[str] | None = None,
    ) -> None:
        self.serve_args = serve_args or []
        self.log_level = log_level
        self.log_path = log_path
        self.home = home
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "CONVOLENS_HOME": str(home)}
        self.env.pop("CONVOLENS_DATABASE_URL", None)
        if database_url:
            self.env["CONVOLENS_DATABASE_URL"] = database_url
        self.env.update(extra_env or {})
        self.database_url = database_url or f"sqlite:///{home / 'convolens.sqlite3'}"
        self.process: subprocess.Popen | None = None
        self.token = subprocess.run(
            [*CLI, "tokens", "create", "--project", project],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    def start(self) -> None:
        log = self.log_path.open("a") if self.log_path else None
        self.process = subprocess.Popen(
            [*CLI, "serve", "--port", str(self.port), "--log-level", self.log_level, *self.serve_args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
        )
        if log:
            log.close()  # the child has its own handle
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and self.process.poll() is None, "server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)

    def db(self) -> Database:
        return Database(self.database_url)
