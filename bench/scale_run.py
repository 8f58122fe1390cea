"""A large run across processes: sent = stored = enriched.

    .venv/bin/python bench/scale_run.py --database-url postgresql+psycopg://… [--messages 1000000]
                                        [--servers 2] [--workers 2]

Starts ``--servers`` separate ``convolens serve`` processes (embedded worker off) and ``--workers``
``convolens worker`` processes on one PostgreSQL database (give it an empty one), sends generated
conversations (bench/growth.py's generator: 4-12 messages of 20-200 words, Zipf users) from 4 client
threads that take the servers in turn, batches of 100 conversations, until ``--messages`` are sent;
then waits until every message is enriched. Prints the ingest rate while the workers run beside it,
the enrichment rate, and the counts: messages sent (acknowledged 202), stored (rows, distinct ids) and
enriched. Loopback only, bounded by ``--messages``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).parent))
from growth import JSON, Generator

from convolens.store.db import Database
from convolens.store.tables import message, project


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="convolens-scale-"))
    env = {
        **os.environ,
        "CONVOLENS_HOME": str(home),
        "CONVOLENS_DATABASE_URL": args.database_url,
        "CONVOLENS_EMBEDDED_WORKER": "0",
        "CONVOLENS_RATE_LIMIT_PER_SECOND": "0",
        "CONVOLENS_MODEL_THREADS": "1",
    }
    cli = [sys.executable, "-m", "convolens"]
    name = f"scale-{uuid.uuid4().hex[:6]}"
    token = subprocess.run(
        [*cli, "tokens", "create", "--project", name], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    ports = [19_600 + os.getpid() % 300 + i for i in range(args.servers)]
    processes = [
        subprocess.Popen([*cli, "serve", "--port", str(port), "--log-level", "warning"], env=env) for port in ports
    ]
    for port in ports:
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
    processes += [subprocess.Popen([*cli, "worker", "--log-level", "warning"], env=env) for _ in range(args.workers)]
    headers = {"Authorization": f"Bearer {token}"}
    gen = Generator(seed=11)
    sent = [0]
    lock = threading.Lock()
    turns = itertools.cycle(ports)

    def client() -> None:
        clients = {p: httpx.Client(base_url=f"http://127.0.0.1:{p}", headers=headers, timeout=300) for p in ports}
        try:
            while True:
                with lock:
                    if sent[0] >= args.messages:
                        return
                    port = next(turns)
                body, count, _ = gen.batch()
                for attempt in range(5):
                    response = clients[port].post("/api/v1/ingest", content=body, headers=JSON)
                    if response.status_code == 202:
                        break
                    time.sleep(0.5 * (attempt + 1))  # a 503 (database busy) is retried, as the SDK would
                response.raise_for_status()
                with lock:
                    sent[0] += count
        finally:
            for c in clients.values():
                c.close()

    db = Database(args.database_url)
    try:
        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ingested = time.perf_counter() - started
        print(
            f"ingest: {sent[0]:,} messages acknowledged in {ingested:.0f} s = {sent[0] / ingested:,.0f} messages/s "
            f"through {args.servers} API processes, {args.workers} workers enriching meanwhile",
            flush=True,
        )
        with db.reader() as conn:
            project_pk = conn.execute(select(project.c.pk).where(project.c.name == name)).scalar_one()
        mine = message.c.project_pk == project_pk
        while True:
            with db.reader() as conn:
                pending = conn.execute(
                    select(func.count()).select_from(message).where(mine, message.c.enriched_version.is_(None))
                ).scalar()
            if pending == 0:
                break
            print(f"  {pending:,} messages waiting for enrichment", file=sys.stderr, flush=True)
            time.sleep(15)
        enriched_in = time.perf_counter() - started
        with db.reader() as conn:
            stored, distinct, enriched = conn.execute(
                select(
                    func.count(),
                    func.count(func.distinct(message.c.id)),
                    func.count(message.c.enriched_version),
                ).where(mine)
            ).one()
        print(
            f"enrichment: all {enriched:,} enriched {enriched_in:.0f} s after the first request "
            f"= {enriched / enriched_in:,.0f} messages/s with {args.workers} workers"
        )
        print(f"counts: sent {sent[0]:,}, stored {stored:,} ({distinct:,} distinct ids), enriched {enriched:,}")
        print("OK: sent = stored = enriched" if sent[0] == stored == distinct == enriched else "MISMATCH")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)
        db.dispose()


if __name__ == "__main__":
    main()
