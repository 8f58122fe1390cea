"""What a metadata-filtered alert rule costs per window, against the same rule read from the rollups.

    python bench/alert_metadata.py [--conversations 50000] [--days 7] [--database-url URL] [--runs 5]

The rollups keep no metadata, so a rule filtered by ``metadata_key = metadata_value`` is measured from the
base tables over its window (alerts/measure.py): the window's messages through the (project, created)
index, joined to their conversations. This writes ``--conversations`` conversations (5 messages each, a
``plan`` of free or pro; bench/rollup_reads.py's generator) over ``--days`` days, builds the rollups, and
times ``measure`` for one day's window (the median of ``--runs``): unfiltered and by language (from the
rollups) against metadata-filtered (from the base tables). A daily rule measures 1 window per day (a
``change`` condition 2, an ``anomaly`` 1 + its periods).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from rollup_reads import END, generate  # bench/ is the script's folder
from sqlalchemy import case, update

from convolens.alerts.evaluate import replay
from convolens.alerts.measure import measure
from convolens.store import migrate, projects
from convolens.store.db import Database
from convolens.store.tables import message
from convolens.worker.runner import Worker

RULES = {
    "messages, no filter (rollups)": {"metric": "messages", "filter": {}},
    "messages, language ko (rollups)": {"metric": "messages", "filter": {"language": "ko"}},
    "messages, plan=pro (base tables)": {"metric": "messages",
                                         "filter": {"metadata_key": "plan", "metadata_value": "pro"}},
    "conversations, plan=pro (base)": {"metric": "conversations",
                                       "filter": {"metadata_key": "plan", "metadata_value": "pro"}},
    "negative share, no filter (messages)": {"metric": "negative_share", "filter": {}},
    "negative share, plan=pro (messages)": {"metric": "negative_share",
                                            "filter": {"metadata_key": "plan", "metadata_value": "pro"}},
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--database-url")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reuse", type=int, help="time project REUSE of --database-url again (no writing)")
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.sqlite3'}"
    db = Database(url)
    if args.reuse:
        time_rules(db, args.reuse, args.runs)
        return
    migrate.upgrade(db)
    with db.writer() as conn:
        project_pk, _ = projects.ensure_project(conn, f"bench-{time.time_ns()}")
    print(f"project {project_pk}")
    started = time.perf_counter()
    generate(db, project_pk, args.conversations, args.days)
    with db.writer() as conn:  # the labels enrichment would give (the generator sets the scores only)
        conn.execute(
            update(message)
            .where(message.c.project_pk == project_pk, message.c.role == "user")
            .values(sentiment_label=case((message.c.sentiment < -0.3, "negative"), else_="neutral"))
        )
    print(f"{db.dialect}: {args.conversations:,} conversations, {5 * args.conversations:,} messages over "
          f"{args.days} days written in {time.perf_counter() - started:.0f} s")  # fmt: skip
    worker = Worker(db, rollup_settle=timedelta(0), rollup_rest=0.0)  # the unfiltered rules read the rollups
    while worker.rollup_once():
        pass
    time_rules(db, project_pk, args.runs)


def time_rules(db: Database, project_pk: int, runs: int) -> None:
    start = END.replace(hour=0) - timedelta(days=2)  # a whole day inside the data
    end = start + timedelta(days=1)
    # Wall time on a shared machine says little; this process's CPU time is the whole cost on SQLite (it runs
    # in the process), the client's part only on PostgreSQL.
    print(f"{'one day window':40} {'wall ms':>8} {'cpu ms':>8} {'value':>10} {'volume':>8}")
    for name, rule in RULES.items():
        definition = rule | {"window": "day", "condition": {"kind": "threshold", "op": "above", "threshold": 0}}
        walls, cpus, seen = [], [], None
        for _ in range(runs):
            began, began_cpu = time.perf_counter(), time.process_time()
            with db.reader() as conn:
                seen = measure(conn, project_pk, definition, start, end)
            walls.append((time.perf_counter() - began) * 1000)
            cpus.append((time.process_time() - began_cpu) * 1000)
        assert seen is not None
        value = "-" if seen.value is None else f"{seen.value:.4g}"
        print(f"{name:40} {statistics.median(walls):8.1f} {statistics.median(cpus):8.1f} {value:>10} {seen.volume:8,}")
    # The preview of an anomaly rule on the metadata slice: 30 days, each against the 14 before (read once each).
    anomaly = RULES["messages, plan=pro (base tables)"] | {
        "window": "day",
        "condition": {"kind": "anomaly", "op": "above", "threshold": 3, "periods": 14},
    }
    began, began_cpu = time.perf_counter(), time.process_time()
    with db.snapshot() as conn:
        replay(conn, project_pk, anomaly, start - timedelta(days=29), 30)
    print(f"preview of a metadata anomaly rule (30 days x 15 windows): {time.perf_counter() - began:.1f} s wall, "
          f"{time.process_time() - began_cpu:.1f} s cpu")  # fmt: skip


if __name__ == "__main__":
    main()
