"""The command line, as a user runs it: tokens, migrate, and `make run` serving the demo."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from conftest import CLI, REPO, ServeProcess, free_port
from convolens.store import outcome_judge, projects
from convolens.store.db import Database


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def run(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONVOLENS_HOME": str(home)}
    env.pop("CONVOLENS_DATABASE_URL", None)
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, check=check, timeout=60)


@pytest.fixture
def served(home: Path) -> Iterator[str]:
    server = ServeProcess(home, project="bootstrap")
    server.start()
    yield server.base_url
    server.stop()


def test_tokens_create_list_revoke(home: Path, served: str) -> None:
    created = run(home, "tokens", "create", "--project", "shop", "--scope", "read,ingest", "--label", "ci")
    token = created.stdout.strip()
    assert re.fullmatch(r"cl_[A-Za-z0-9_-]{43}", token)
    assert "created project 'shop'" in created.stderr and "shown once" in created.stderr

    listing = run(home, "tokens", "list").stdout
    assert token[:11] in listing and "shop" in listing and "ingest,read" in listing and "never" in listing
    assert token not in listing  # only the prefix is ever shown again

    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{served}/api/v1/conversations", headers=headers).status_code == 200
    listing = run(home, "tokens", "list", "--project", "shop").stdout
    assert "never" not in listing and "active" in listing

    assert "revoked 1 token" in run(home, "tokens", "revoke", token[:11]).stdout
    line = next(line for line in run(home, "tokens", "list").stdout.splitlines() if token[:11] in line)
    assert "revoked" in line
    assert httpx.get(f"{served}/api/v1/conversations", headers=headers).status_code == 401
    again = run(home, "tokens", "revoke", token[:11], check=False)
    assert again.returncode == 1 and "no active token" in again.stderr


def test_a_second_token_for_a_project_only_reaches_it(home: Path, served: str) -> None:
    a = run(home, "tokens", "create", "--project", "a").stdout.strip()
    b = run(home, "tokens", "create", "--project", "b", "--scope", "ingest").stdout.strip()
    event = {"events": [{"type": "message", "conversation_id": "c", "role": "user", "content": "hi"}]}
    assert (
        httpx.post(f"{served}/api/v1/ingest", json=event, headers={"Authorization": f"Bearer {b}"}).status_code == 202
    )
    assert httpx.get(f"{served}/api/v1/conversations/c", headers={"Authorization": f"Bearer {a}"}).status_code == 404


def test_bad_scope_is_refused(home: Path) -> None:
    result = run(home, "tokens", "create", "--project", "x", "--scope", "superuser", check=False)
    assert result.returncode == 2 and "scopes must be" in result.stderr


def test_make_run_serves_the_demo(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "CONVOLENS_HOME": str(tmp_path / "demo-home")}
    env.pop("CONVOLENS_DATABASE_URL", None)
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"PORT={port}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        token = None
        deadline = time.monotonic() + 240
        output = []
        while token is None:
            line = process.stdout.readline()
            assert line or process.poll() is None, "".join(output)
            output.append(line)
            match = re.search(r"demo API token \(project 'demo'\): (cl_\S+)", line)
            if match:
                token = match.group(1)
            assert time.monotonic() < deadline, "".join(output)
        assert any("seeded the demo project with 300 conversations" in line for line in output)
        listing = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/conversations",
            params={"start_time": "2000-01-01", "per_page": 5},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        assert listing["pagination"]["total_records"] == 305
        assert len(listing["conversations"]) == 5
        assert all(c["messages"] for c in listing["conversations"])
        headers = {"Authorization": f"Bearer {token}"}
        defined = httpx.get(f"http://127.0.0.1:{port}/api/v1/topics", headers=headers).json()["topics"]
        assert sorted(t["name"] for t in defined) == ["Billing", "Coding help"]
        a_year_ago = (datetime.now(UTC) - timedelta(days=365)).date().isoformat()
        while True:  # the embedded worker enriches the demo data and tags both topics
            by_topic = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/metrics",
                params={"start_time": a_year_ago, "group_by": "topic", "period": "month"},
                headers=headers,
            ).json()
            if {s["group"] for s in by_topic["series"]} == {"Billing", "Coding help"}:
                break
            assert time.monotonic() < deadline + 120, by_topic
            time.sleep(0.5)
        while True:  # and suggests topics of what no topic covers, unasked (measured: ~20 s from start)
            suggested = httpx.get(f"http://127.0.0.1:{port}/api/v1/suggested_topics", headers=headers).json()
            if suggested["count"] and all(t["name"] for t in suggested["topics"]):
                break
            assert time.monotonic() < deadline + 120, suggested
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_directory_is_private(tmp_path: Path) -> None:
    """The database holds API token hashes and LLM keys: a fresh data directory is 0700, its files 0600,
    the -wal and -shm files too, and a database an older version left 0644 is narrowed."""
    home = tmp_path / "fresh" / ".convolens"
    run(home, "migrate")
    assert _mode(home) == 0o700
    files = sorted(home.iterdir())
    assert files and all(_mode(f) == 0o600 for f in files), {f.name: oct(_mode(f)) for f in files}

    old = tmp_path / "old"
    old.mkdir()
    (old / "db.sqlite3").touch(mode=0o644)
    os.chmod(old / "db.sqlite3", 0o644)
    db = Database(f"sqlite:///{old / 'db.sqlite3'}")
    with db.writer() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    open_files = {f.name: _mode(f) for f in old.iterdir()}  # while the WAL is open
    assert {"db.sqlite3", "db.sqlite3-wal", "db.sqlite3-shm"} <= set(open_files)
    assert set(open_files.values()) == {0o600}, open_files
    db.dispose()


def test_a_second_database_object_keeps_the_first_ones_locks(tmp_path: Path) -> None:
    """Making the file private must not open and close an existing database file: closing any descriptor
    of a file drops every POSIX lock the process holds on it, SQLite's included, and another process
    could then write under a reader's feet (seen as "database disk image is malformed" after SIGKILLs)."""
    import sys

    path = tmp_path / "db.sqlite3"
    first = Database(f"sqlite:///{path}")
    probe = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(path)!r}, os.O_RDWR)\n"
        "try:\n"
        "    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 510, 0x40000002)\n"  # SQLite's SHARED byte range
        "    print('free')\n"
        "except OSError:\n"
        "    print('held')\n"
    )

    def shared_lock() -> str:
        return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()

    with first.reader() as conn:
        conn.execute(text("SELECT count(*) FROM sqlite_master")).all()  # a read transaction: SHARED lock held
        assert shared_lock() == "held"
        second = Database(f"sqlite:///{path}")
        assert shared_lock() == "held"
    second.dispose()
    first.dispose()


def test_projects_set_switches_the_outcome_judge(home: Path) -> None:
    """The CLI writes the setting the Settings page writes; a flag left out keeps its value."""
    assert run(home, "tokens", "create", "--project", "p").returncode == 0
    on = run(home, "projects", "set", "--project", "p", "--outcome-judge", "on", "--judge-daily-cap", "40")
    assert "LLM outcome judge on, at most 40 conversations a day" in on.stdout
    db = Database(f"sqlite:///{home / 'convolens.sqlite3'}")

    def judge() -> outcome_judge.JudgeSettings:
        with db.reader() as conn:
            return outcome_judge.settings_from(projects.settings_of(conn, projects.get_project_pk(conn, "p") or 0))

    assert judge() == outcome_judge.JudgeSettings(enabled=True, daily_cap=40)
    assert "judge off, at most 40" in run(home, "projects", "set", "--project", "p", "--outcome-judge", "off").stdout
    assert judge() == outcome_judge.JudgeSettings(enabled=False, daily_cap=40)
    for bad in ("12x", "-1", "1000001"):
        refused = run(home, "projects", "set", "--project", "p", "--judge-daily-cap", bad, check=False)
        assert refused.returncode == 2 and "--judge-daily-cap" in refused.stderr
    missing = run(home, "projects", "set", "--project", "nope", "--outcome-judge", "on", check=False)
    assert missing.returncode == 1 and "no project 'nope'" in missing.stderr
    assert judge() == outcome_judge.JudgeSettings(enabled=False, daily_cap=40)
    db.dispose()
