"""CPU per write request inside the app, without sockets or a load generator: the number to watch when
shaving the request path, because throughput runs on this shared 2-core machine drift by 20% or more.

    .venv/bin/python bench/request_cpu.py [--requests 2000] [--rounds 5] [--concurrency 8]
    PYTHONPATH=/tmp/baseline/src .venv/bin/python bench/request_cpu.py …   # an earlier commit, same run

Calls the ASGI app directly (as uvicorn would, minus its protocol) with Context's one-conversation
``POST /api/v1/log/conversation`` (8 messages of 20-200 words) and a 100-conversation native batch, on
SQLite in a temporary home (or ``--database-url``), ``--concurrency`` requests in flight so that group
commit works as it does under load. Prints the process's CPU time per request (all threads), median of ``--rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from ingest import context_body, conversation


async def _call(app, path: str, body: bytes, token: str) -> int:  # type: ignore[no-untyped-def]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {token}".encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent = False
    status = 0

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _measure(app, path: str, bodies: list[bytes], token: str, concurrency: int) -> float:  # type: ignore[no-untyped-def]
    queue = list(bodies)

    async def client() -> None:
        while queue:
            status = await _call(app, path, queue.pop(), token)
            assert status in (201, 202), status

    started = time.process_time()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return (time.process_time() - started) / len(bodies)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--database-url", help="PostgreSQL instead of SQLite in a temporary home")
    args = parser.parse_args()
    if args.database_url:
        os.environ["CONVOLENS_DATABASE_URL"] = args.database_url
    home = tempfile.mkdtemp(prefix="convolens-cpu-")
    os.environ.update(CONVOLENS_HOME=home, CONVOLENS_EMBEDDED_WORKER="0", CONVOLENS_RATE_LIMIT_PER_SECOND="0")
    from convolens.server.app import create_app
    from convolens.store import migrate, projects

    app = create_app()
    migrate.upgrade(app.state.db)
    with app.state.db.writer() as conn:
        project_pk, _ = projects.ensure_project(conn, f"bench-{os.getpid()}-{time.time_ns()}")
        token, _ = projects.create_token(conn, project_pk, frozenset({"ingest", "read"}))
    rng = random.Random(1)
    conversations = [conversation(rng, 1000) for _ in range(args.requests * args.rounds)]
    context = [context_body(c) for c in conversations]
    # Eight batches of 100 conversations a round, of their own (not cut from the Context set, which may be short).
    batched = [conversation(rng, 1000) for _ in range(800 * args.rounds)]
    native = [
        orjson.dumps({"events": [e for c in batched[i : i + 100] for e in c]}) for i in range(0, len(batched), 100)
    ]

    async def run() -> None:
        per_context, per_native = [], []
        for r in range(args.rounds):
            chunk = context[r * args.requests : (r + 1) * args.requests]
            per_context.append(await _measure(app, "/api/v1/log/conversation", chunk, token, args.concurrency))
            per_native.append(await _measure(app, "/api/v1/ingest", native[r * 8 : (r + 1) * 8], token, 4))
        print(
            f"Context request: {statistics.median(per_context) * 1e6:,.0f} µs CPU (median of {args.rounds}: "
            f"{', '.join(f'{x * 1e6:,.0f}' for x in per_context)}); native 100-conversation batch: "
            f"{statistics.median(per_native) * 1e3:,.1f} ms CPU"
        )

    asyncio.run(run())
    app.state.db.dispose()


if __name__ == "__main__":
    main()
