"""``convolens serve`` for a benchmark: a token made with the CLI, the server started on a loopback port and
waited for until it answers ``/readyz``. Every run gets its own home (and so its own SQLite file)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import httpx

CLI = [sys.executable, "-m", "convolens"]


def new_token(env: dict[str, str], project_prefix: str, scope: str | None = None) -> str:
    """A token of a new project (``scope``: the CLI's ``--scope``, default ingest and read)."""
    scopes = ["--scope", scope] if scope else []
    return subprocess.run(
        [*CLI, "tokens", "create", "--project", f"{project_prefix}-{uuid.uuid4().hex[:6]}", *scopes],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def start(env: dict[str, str], port: int, *args: str) -> tuple[subprocess.Popen, str]:
    """``convolens serve --port port *args``, ready to answer; returns the process and its base URL."""
    server = subprocess.Popen([*CLI, "serve", "--port", str(port), "--log-level", "warning", *args], env=env)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return server, base
