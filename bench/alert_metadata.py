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
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.sqlite3'}"
    db = Database(url)
    migrate.upgrade(db)
    with db.writer() as conn:
        project_pk, _ = projects.ensure_project(conn, f"bench-{time.time_ns()}")
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
    worker = Worker(db, rollup_settle=timedelta(0), rollup_rest=0.0)
    while worker.rollup_once():
        pass
    start = END.replace(hour=0) - timedelta(days=2)  # a whole day inside the data
    end = start + timedelta(days=1)
    print(f"{'one day window':40} {'ms':>8} {'value':>10} {'volume':>8}")
    for name, rule in RULES.items():
        definition = rule | {"window": "day", "condition": {"kind": "threshold", "op": "above", "threshold": 0}}
        times, seen = [], None
        for _ in range(args.runs):
            began = time.perf_counter()
            with db.reader() as conn:
                seen = measure(conn, project_pk, definition, start, end)
            times.append((time.perf_counter() - began) * 1000)
        assert seen is not None
        value = "-" if seen.value is None else f"{seen.value:.4g}"
        print(f"{name:40} {statistics.median(times):8.1f} {value:>10} {seen.volume:8,}")


if __name__ == "__main__":
    main()
