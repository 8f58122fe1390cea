"""Does enrichment keep moving while a steady stream is being ingested? The other side of "ingestion first".

    .venv/bin/python bench/enrich_under_ingest.py [--rate 20] [--seconds 30] [--runs 3] [--baseline SRC]

Starts ``convolens serve`` as a user runs it (SQLite in a temporary home, embedded worker on), warms the
worker up with one conversation, then one client logs ``--rate`` generated conversations a second (4-12
messages of 20-200 words, bench/ingest.py's generator) through Context's ``/api/v1/log/conversation`` for
``--seconds`` seconds, paced, loopback only. Prints per run: the messages stored, the share of them
enriched when the stream ends (read from the database file), and how long after the stream's end every
message was enriched (at most 300 s). The embedded worker yields its writes to the API's
(store/db.py, ``FileWriteLock``): this shows what that costs enrichment when the API is never idle for
long. ``--baseline SRC`` alternates each run with another tree's (its ``src`` folder).
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import serving
from ingest import JSON, _warm_up, context_body, conversation


def _counts(database: Path) -> tuple[int, int]:
    """(messages, enriched messages) in the database file, read on a connection of its own."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as conn:
        total, enriched = conn.execute("SELECT count(*), count(enriched_version) FROM message").fetchone()
    return total, enriched


def run(args: argparse.Namespace, source: str | None = None) -> dict[str, float]:
    rng = random.Random(7)
    bodies = [context_body(conversation(rng, 1000)) for _ in range(int(args.rate * args.seconds))]
    home = Path(tempfile.mkdtemp(prefix="convolens-trickle-"))
    env = {**os.environ, "CONVOLENS_HOME": str(home), "CONVOLENS_EMBEDDED_WORKER": "1"}
    env["CONVOLENS_RATE_LIMIT_PER_SECOND"] = "0"
    if source is not None:
        env["PYTHONPATH"] = source
    token = serving.new_token(env, "trickle")
    server, base = serving.start(env, 19_000 + os.getpid() % 500)
    headers = {"Authorization": f"Bearer {token}"}
    database = home / "convolens.sqlite3"
    try:
        _warm_up(base, headers)
        started = time.monotonic()
        with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
            for i, body in enumerate(bodies):
                pause = started + i / args.rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                http.post("/api/v1/log/conversation", content=body, headers=JSON).raise_for_status()
        ended = time.monotonic()
        total, enriched = _counts(database)
        share = enriched / total if total else 0.0
        while enriched < total and time.monotonic() - ended < 300:
            time.sleep(0.25)
            total, enriched = _counts(database)
        return {"messages": total, "share_at_end": share, "catch_up_s": time.monotonic() - ended}
    finally:
        server.terminate()
        server.wait(30)


def _report(label: str, r: dict[str, float]) -> None:
    print(
        f"{label}: {r['messages']:,.0f} messages, {r['share_at_end']:.0%} enriched when the stream ended, "
        f"all {r['catch_up_s']:.1f} s later",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=20.0, help="conversations a second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", metavar="SRC", help="another tree's src folder, run alternately")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"baseline": [], "this tree": []}
    for i in range(args.runs):
        if args.baseline:
            results["baseline"].append(run(args, args.baseline))
            _report(f"run {i + 1} (baseline)", results["baseline"][-1])
        results["this tree"].append(run(args))
        _report(f"run {i + 1} (this tree)", results["this tree"][-1])
    for label, runs in results.items():
        if runs:
            print(
                f"{label}: {args.rate:g} conversations/s for {args.seconds:g} s, medians of {len(runs)}: "
                f"{statistics.median(r['share_at_end'] for r in runs):.0%} enriched at the end, "
                f"all {statistics.median(r['catch_up_s'] for r in runs):.1f} s later"
            )


if __name__ == "__main__":
    main()
