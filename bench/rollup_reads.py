"""Read latency of the metrics with rollups against the same reads from the base tables, and what it
costs the worker to build them.

    python bench/rollup_reads.py [--conversations 100000] [--days 365] [--database-url URL] [--runs 5]

It writes a project of ``--conversations`` conversations (5 messages each, 3 tenants, 20,000 users, two
models, ratings) spread over ``--days`` days through the store's ingest path, gives the messages a
language and a sentiment (and each conversation an outcome) as the worker would, lets one worker build
every day's rollups (timed), then times each query ``--runs`` times both ways in the same run and
prints medians and their ratio. Without ``--database-url`` it uses a fresh SQLite file in a temporary directory.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import case, update

from convolens.enrich.prices import DEFAULT_PRICES
from convolens.schemas.ingest import IngestBatch
from convolens.store import metrics, migrate, projects
from convolens.store.db import Database
from convolens.store.ingest import apply_batch
from convolens.store.tables import conversation, message
from convolens.worker.runner import Worker

END = datetime(2026, 12, 1)


def generate(db: Database, project_pk: int, conversations: int, days: int) -> None:
    rng = random.Random(1)
    events: list[dict] = []

    def flush() -> None:
        with db.writer() as conn:
            apply_batch(conn, project_pk, IngestBatch.model_validate({"events": events}), END)
        events.clear()

    for c in range(conversations):
        at = END - timedelta(days=rng.random() * days)
        cid = f"c{c}"
        events.append(
            {
                "type": "conversation",
                "id": cid,
                "user_id": f"u{int(rng.paretovariate(1.2)) % 20000}",
                "tenant_id": rng.choice(["acme", "globex", "initech"]),
                "metadata": {"plan": rng.choice(["free", "pro"])},
            }
        )
        for i in range(5):
            user = i % 2 == 0
            events.append(
                {
                    "type": "message",
                    "conversation_id": cid,
                    "id": f"{cid}-{i}",
                    "role": "user" if user else "assistant",
                    "content": "how do I get a refund for my order?" if user else "Here is how to get a refund.",
                    "timestamp": (at + timedelta(seconds=30 * i)).isoformat(),
                    **({} if user else {"model": rng.choice(["gpt-4o-mini", "gpt-4o"]), "input_tokens": 200,
                                        "output_tokens": 400, "rating": rng.choice([1, -1, None, None])}),
                }
            )  # fmt: skip
        if len(events) >= 900:
            flush()
    if events:
        flush()
    with db.writer() as conn:  # what enrichment would have written
        conn.execute(
            update(message)
            .where(message.c.project_pk == project_pk)
            .values(
                language=case((message.c.pk % 7 == 0, "ko"), (message.c.pk % 5 == 0, "de"), else_="en"),
                sentiment=case((message.c.role == "user", ((message.c.pk * 7) % 21 - 10) / 10.0)),
                enriched_version=1,
            )
        )
        outcomes = ("resolved", "unresolved", "abandoned", "unknown")
        conn.execute(  # and the outcome rules, a quarter of conversations each
            update(conversation)
            .where(conversation.c.project_pk == project_pk)
            .values(outcome=case(*((conversation.c.pk % 4 == i, o) for i, o in enumerate(outcomes))))
        )


def timed(db: Database, project_pk: int, use_rollups: bool, **query) -> float:
    started = time.perf_counter()
    with db.reader() as conn:
        metrics.metrics(conn, project_pk, prices=DEFAULT_PRICES, use_rollups=use_rollups, **query)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--database-url")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.sqlite3'}"
    db = Database(url)
    migrate.upgrade(db)
    with db.writer() as conn:
        project_pk, _ = projects.ensure_project(conn, f"bench-{time.time_ns()}")
    started = time.perf_counter()
    generate(db, project_pk, args.conversations, args.days)
    print(f"{db.dialect}: {args.conversations:,} conversations, {5 * args.conversations:,} messages over "
          f"{args.days} days written in {time.perf_counter() - started:.0f} s")  # fmt: skip
    worker = Worker(db, rollup_settle=timedelta(0), rollup_rest=0.0)
    started = time.perf_counter()
    days = 0
    while step := worker.rollup_once():
        days += step
    built = time.perf_counter() - started
    print(f"rollups of {days} days built in {built:.1f} s ({1000 * built / max(days, 1):.0f} ms a day)")
    queries = {
        "30 days by day, all": {"period": "day", "grouping": "none", "days": 30},
        "90 days by week, by language": {"period": "week", "grouping": "language", "days": 90},
        "365 days by month, by tenant": {"period": "month", "grouping": "tenant", "days": 365},
        "30 days by day, one tenant": {"period": "day", "grouping": "model", "days": 30, "tenant_id": "acme"},
    }
    print(f"{'query':34} {'rollups ms':>11} {'base tables ms':>15} {'ratio':>7}")
    for name, q in queries.items():
        query = {
            "start": END - timedelta(days=q["days"]),
            "end": END,
            "period": q["period"],
            "grouping": metrics.Grouping.parse(q["grouping"]),
            "tenant_id": q.get("tenant_id"),
        }
        fast = statistics.median(timed(db, project_pk, True, **query) for _ in range(args.runs))
        slow = statistics.median(timed(db, project_pk, False, **query) for _ in range(args.runs))
        print(f"{name:34} {fast:11.1f} {slow:15.1f} {slow / fast:7.1f}x")


if __name__ == "__main__":
    main()
