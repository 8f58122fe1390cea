"""How ingest and the read API cost grow with the data: throughput and read latency at several sizes.

    .venv/bin/python bench/growth.py [--sizes 100000,1000000,5000000] [--database-url URL] [--workers 2]

Starts ``convolens serve`` (embedded worker off: ingest and reads only, as in bench/ingest.py), fills
the store with generated conversations (4-12 messages of 20-200 words, Zipf users) up to each size,
then at each size measures: ingest of a further ``--chunk`` messages through the native batch API
(4 client threads, batches of 100 conversations; a 202 is a committed batch), and medians of 7 of the
read API: a page of the conversation list, one whole conversation, 30 days of metrics by day. The texts
come from a pool made once, so that the generator keeps ahead of the server. Loopback only, bounded
by the sizes given.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).parent))
import serving
from ingest import WORDS

JSON = {"Content-Type": "application/json"}
# The server's bound on a batch's events (config.Limits.max_batch_events): 100 conversations of 4-12
# messages passed it about once in 5,000 batches, and the run stopped on the 422 at 4.2M messages.
MAX_EVENTS = 1000


class Generator:
    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.texts = [" ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(20, 200))) for _ in range(2000)]
        self.counter = itertools.count()
        self.lock = threading.Lock()

    def batch(self, conversations: int = 100) -> tuple[bytes, int, str]:
        with self.lock:
            start = next(self.counter)
            for _ in range(conversations - 1):
                next(self.counter)
            seed = self.rng.getrandbits(64)
        rng = random.Random(seed)
        events: list[dict] = []
        messages = 0
        last = ""
        for n in range(start, start + conversations):
            if len(events) + 13 > MAX_EVENTS:  # a conversation has at most 13 events
                break
            cid = f"g{n:09d}"
            last = cid
            events.append(
                {
                    "type": "conversation",
                    "id": cid,
                    "user_id": f"user-{min(int(rng.paretovariate(1.2)), 20000)}",
                    "metadata": {"plan": rng.choice(["free", "pro"])},
                }
            )
            for i in range(rng.randint(4, 12)):
                events.append(
                    {
                        "type": "message",
                        "conversation_id": cid,
                        "id": f"{cid}-{i}",
                        "role": "user" if i % 2 == 0 else "assistant",
                        "content": rng.choice(self.texts),
                    }
                )
                messages += 1
        return orjson.dumps({"events": events}), messages, last


def ingest(base: str, headers: dict, gen: Generator, messages: int, clients: int = 4) -> tuple[int, float, str]:
    """Send batches until at least ``messages`` are stored; (messages sent, seconds, a conversation id)."""
    sent = [0]
    last = [""]
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=300) as http:
            while True:
                with lock:
                    if sent[0] >= messages:
                        return
                body, count, cid = gen.batch()
                response = http.post("/api/v1/ingest", content=body, headers=JSON)
                if response.status_code != 202:
                    raise RuntimeError(f"ingest answered {response.status_code}: {response.text[:500]}")
                with lock:
                    sent[0] += count
                    last[0] = cid

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sent[0], time.perf_counter() - started, last[0]


def median_ms(http: httpx.Client, path: str, params: dict | None = None, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        http.get(path, params=params).raise_for_status()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000,5000000", help="stored messages at each step")
    parser.add_argument("--chunk", type=int, default=50_000, help="messages ingested and timed at each size")
    parser.add_argument("--database-url")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    home = Path(tempfile.mkdtemp(prefix="convolens-growth-"))
    env = {
        **os.environ,
        "CONVOLENS_HOME": str(home),
        "CONVOLENS_EMBEDDED_WORKER": "0",
        "CONVOLENS_RATE_LIMIT_PER_SECOND": "0",
    }
    if args.database_url:
        env["CONVOLENS_DATABASE_URL"] = args.database_url
    token = serving.new_token(env, "growth")
    port = 19_000 + os.getpid() % 500
    server, base = serving.start(env, port, "--workers", str(args.workers))
    headers = {"Authorization": f"Bearer {token}"}
    gen = Generator()
    stored = 0
    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"| stored messages | ingest msgs/s ({backend}, {args.workers} API processes) | list page "
        "| one conversation | 30 days of metrics |"
    )
    print("|---|---|---|---|---|")
    try:
        for size in sizes:
            if size - args.chunk > stored:
                filled, seconds, _ = ingest(base, headers, gen, size - args.chunk - stored)
                stored += filled
                print(f"  (filled {filled:,} messages at {filled / seconds:,.0f}/s)", file=sys.stderr, flush=True)
            measured, seconds, last = ingest(base, headers, gen, args.chunk)
            stored += measured
            with httpx.Client(base_url=base, headers=headers, timeout=300) as http:
                page = median_ms(http, "/api/v1/conversations", {"per_page": 20})
                one = median_ms(http, f"/api/v1/conversations/{last}")
                metrics = median_ms(http, "/api/v1/metrics", {"period": "day"})
            print(
                f"| {stored:,} | {measured / seconds:,.0f} | {page:.1f} ms | {one:.1f} ms | {metrics:.1f} ms |",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(60)


if __name__ == "__main__":
    main()
