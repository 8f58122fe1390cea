"""Server time of the dashboard's overview and conversation list on a large project.

    python bench/dashboard.py [--conversations 1000000] [--database-url URL] [--runs 7]

A deterministic generator writes ``--conversations`` conversations of 5 messages (so 1,000,000 gives
5,000,000 messages) over 365 days straight into the tables, as enriched messages with languages,
sentiment, ratings, models and three topics' links (this measures reading, not ingesting: the ingest
benchmark is ``bench/ingest.py``). One worker builds the rollups (timed); on PostgreSQL the database is
then vacuumed and analysed, as autovacuum would after such a load. Then a real server answers
``GET /p/bench/overview`` (the last 30 days by day) and ``GET /p/bench/conversations`` (page 1, then a
filtered page) for a signed-in admin, ``--runs`` times each; the figures are the medians of the server's
own time (the ``X-Response-Time-Ms``-free way: wall time of the request on loopback, keep-alive).
Without ``--database-url`` it uses a fresh SQLite file in a temporary directory.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import insert, select

from convolens.config import LlmSettings, Settings
from convolens.server.app import create_app
from convolens.store import accounts, migrate, projects, rollups
from convolens.store.db import Database
from convolens.store.tables import conversation, end_user, message, message_topic, project, topic
from convolens.timeutil import utcnow
from convolens.worker.runner import Worker

QUESTIONS = [
    ("billing", "Why was I charged twice this month?"),
    ("billing", "Can I get an invoice with my VAT number?"),
    ("coding", "How do I read a CSV file with pandas?"),
    ("coding", "My script says ModuleNotFoundError"),
    ("travel", "Do I need a visa to visit Japan?"),
    ("other", "Give me a quick vegetarian dinner"),
    ("billing", "환불은 어떻게 받나요? 결제가 두 번 되었어요"),
]
# A rarer word in each first message (about 1 conversation in 500 has a given one), so that a search
# for a word is not always one of a handful of texts that each match an eighth of the data.
VOCABULARY = [
    a + b + c
    for a in ("ka", "ro", "mi", "tu", "se", "ne", "lo", "vi")
    for b in ("ran", "bel", "dos", "kim", "pur", "tal", "gen", "sov")
    for c in ("ix", "a", "um", "et", "on", "ys", "ar", "e")
]
FOLLOW_UPS = ["Thanks, that worked!", "It still doesn't work.", "Can you explain more?"]
PASSWORD = "benchmark-password"


def generate(db: Database, project_pk: int, conversations: int, days: int = 365, chunk: int = 20_000) -> dict[str, int]:
    """Writes the project's data; returns its topics' keys by name."""
    rng = random.Random(7)
    now = utcnow().replace(microsecond=0)
    with db.writer() as conn:
        topic_pks = {
            name: conn.execute(
                insert(topic)
                .values(project_pk=project_pk, name=name.title(), kind="keyword", status="active",
                        definition={"keywords": [name]}, created_at=now, updated_at=now, backfill_cursor=0,
                        backfill_until=0)
                .returning(topic.c.pk)
            ).scalar_one()
            for name in ("billing", "coding", "travel")
        }  # fmt: skip
    users = 50_000
    first_seen = [now - timedelta(days=days * rng.random() ** 0.5) for _ in range(users)]
    with db.writer() as conn:
        for start in range(0, users, chunk):
            conn.execute(insert(end_user), [
                {"project_pk": project_pk, "external_id": f"user-{i:06d}", "first_seen": first_seen[i],
                 "last_seen": now} for i in range(start, min(users, start + chunk))
            ])  # fmt: skip
        user_pks = {
            external: pk
            for external, pk in conn.execute(
                select(end_user.c.external_id, end_user.c.pk).where(end_user.c.project_pk == project_pk)
            )
        }
    conv_rows, message_rows, link_rows = [], [], []
    next_conv = _next_pk(db, conversation)
    next_message = _next_pk(db, message)

    def flush() -> None:
        with db.writer() as conn:
            if conv_rows:
                conn.execute(insert(conversation), conv_rows)
            if message_rows:
                conn.execute(insert(message), message_rows)
            if link_rows:
                conn.execute(insert(message_topic), link_rows)
        conv_rows.clear()
        message_rows.clear()
        link_rows.clear()

    for c in range(conversations):
        user = min(int(rng.paretovariate(1.1)) - 1, users - 1)
        at = max(first_seen[user], now - timedelta(days=days * rng.random()))
        at = at.replace(microsecond=0)
        kind, question = rng.choice(QUESTIONS)
        conv_pk = next_conv + c
        conv_rows.append({
            "pk": conv_pk, "project_pk": project_pk, "id": f"c{c:07d}",
            "tenant_id": rng.choice(["acme", "globex", None]),
            "end_user_pk": user_pks[f"user-{user:06d}"], "metadata": {"plan": rng.choice(["free", "pro"])},
            "started_at": at, "last_message_at": at + timedelta(seconds=120), "message_count": 5, "created_at": at,
            "sentiment_trend": rng.choice(["up", "flat", "down"]),
        })  # fmt: skip
        for i in range(5):
            user_turn = i % 2 == 0
            text = (
                f"{question} ({rng.choice(VOCABULARY)})"
                if i == 0
                else rng.choice(FOLLOW_UPS)
                if user_turn
                else "Here is how to do that."
            )
            sentiment = rng.uniform(-1, 1) if user_turn else None
            pk = next_message + 5 * c + i
            created = at + timedelta(seconds=30 * i)
            message_rows.append({
                "pk": pk, "project_pk": project_pk, "conversation_pk": conv_pk, "id": f"m{c:07d}-{i}", "position": i,
                "role": "user" if user_turn else "assistant", "kind": "message", "content": text,
                "created_at": created, "ingested_at": created, "rating": rng.choice([1, -1, None, None, None])
                if not user_turn else None, "model": None if user_turn else rng.choice(["gpt-4o-mini", "gpt-4o"]),
                "input_tokens": None if user_turn else 200, "output_tokens": None if user_turn else 350,
                "language": rng.choice(["en", "en", "en", "ko", "ja", "de"]), "sentiment": sentiment,
                "sentiment_label": None if sentiment is None else
                "negative" if sentiment < -0.2 else "positive" if sentiment > 0.2 else "neutral",
                "enriched_version": 2,
            })  # fmt: skip
            if i == 0 and kind in topic_pks:
                link_rows.append({"message_pk": pk, "topic_pk": topic_pks[kind], "project_pk": project_pk,
                                  "conversation_pk": conv_pk, "created_at": created, "score": 1.0})  # fmt: skip
        if len(message_rows) >= chunk:
            flush()
    flush()
    with db.writer() as conn:
        label_days = rollups.days_between(now - timedelta(days=days + 1), now)
        rollups.mark(conn, project_pk, label_days, now - timedelta(minutes=1))
    return topic_pks


def _next_pk(db: Database, table) -> int:  # type: ignore[no-untyped-def]
    with db.reader() as conn:
        return (conn.execute(select(table.c.pk).order_by(table.c.pk.desc()).limit(1)).scalar() or 0) + 1


def timed(client: httpx.Client, path: str, runs: int) -> float | None:
    """Median request time, or None where the server does not have the page (a baseline without it)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code == 422:
            return None
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
    return statistics.median(times)


def fill(db: Database, conversations: int) -> tuple[str, dict[str, int]]:
    """A new project with its admin, its data and rollups; returns its name and topics' keys."""
    name = f"bench{time.time_ns() % 10**8}"
    with db.writer() as conn:
        project_pk, _ = projects.ensure_project(conn, name)
        admin = accounts.create_account(conn, f"{name}@example.com", PASSWORD, utcnow())
        accounts.set_role(conn, admin, project_pk, "admin")
    started = time.perf_counter()
    topic_pks = generate(db, project_pk, conversations)
    print(f"{db.dialect}: {conversations:,} conversations, {5 * conversations:,} messages written in "
          f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    try:
        from convolens.store import search  # not in trees before issue 28 (baseline runs)
    except ImportError:
        search = None
    if search is not None:
        started = time.perf_counter()
        with db.writer() as conn:
            search.index_loaded(conn, project_pk)  # the rows were written enriched, past the worker
        print(f"search index of the loaded rows built in {time.perf_counter() - started:.0f} s", flush=True)
    if db.dialect == "postgresql":
        # Statistics before the rollups: without them the planner chose badly for a day's topic query and two
        # days took 2-3 minutes each (stop 32); an import tool runs ANALYZE after loading for the same reason.
        with db.write_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    worker = Worker(db, rollup_settle=timedelta(0), rollup_rest=0.0)
    started = time.perf_counter()
    built = 0
    while step := worker.rollup_once():
        built += step
    print(f"rollups of {built} days built in {time.perf_counter() - started:.0f} s", flush=True)
    if db.dialect == "postgresql":
        # What autovacuum does after a bulk load, now rather than whenever it gets to it: statistics, and a
        # visibility map that lets the window count be answered from the index alone.
        with db.write_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    return name, topic_pks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--database-url")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--pages-only",
        action="store_true",
        help="time the pages of the newest project an earlier run wrote to --database-url (no generation)",
    )
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp())
    url = args.database_url or f"sqlite:///{home / 'bench.sqlite3'}"
    db = Database(url)
    migrate.upgrade(db)
    if args.pages_only:
        with db.reader() as conn:
            project_pk, name = conn.execute(
                select(project.c.pk, project.c.name).where(project.c.name.like("bench%")).order_by(project.c.pk.desc())
            ).first()
            topic_pks = {
                name.lower(): pk
                for pk, name in conn.execute(select(topic.c.pk, topic.c.name).where(topic.c.project_pk == project_pk))
            }
    else:
        name, topic_pks = fill(db, args.conversations)
    settings = Settings(database_url=url, home=home, embedded_worker=False, llm=LlmSettings())
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    year_ago = (datetime.utcnow() - timedelta(days=364)).date()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
        client.post("/login", data={"email": f"{name}@example.com", "password": PASSWORD, "csrf_token": token})
        pages = {
            "overview, last 30 days by day": f"/p/{name}/overview",
            "overview, last 365 days by week": f"/p/{name}/overview?period=week&start="
            f"{(datetime.utcnow() - timedelta(days=364)).date()}",
            "conversations, page 1": f"/p/{name}/conversations",
            "conversations, page 20": f"/p/{name}/conversations?page=20",
            "conversations, topic + language": f"/p/{name}/conversations?topic={topic_pks['coding']}&language=ko",
            "users, page 1 (last seen)": f"/p/{name}/users",
            "users, sorted by average sentiment": f"/p/{name}/users?sort=avg_sentiment&order=desc",
            "users, searched by id": f"/p/{name}/users?q=user-0042",
            # The last 30 days (the page's default window); a year: the whole data set.
            "search, a rare word": f"/p/{name}/conversations?q={VOCABULARY[77]}",
            "search, a phrase": f'/p/{name}/conversations?q="charged twice"',
            "search, a Korean substring": f"/p/{name}/conversations?q=환불은",
            "search, a rare word, 365 days": f"/p/{name}/conversations?q={VOCABULARY[77]}&start={year_ago}",
            "search, a phrase, 365 days": f'/p/{name}/conversations?q="charged twice"&start={year_ago}',
            "search, Korean, 365 days": f"/p/{name}/conversations?q=환불은&start={year_ago}",
        }
        for label, path in pages.items():
            timed(client, path, 1)  # warm the caches once
            median = timed(client, path, args.runs)
            shown = "   n/a" if median is None else f"{median:7.1f} ms"
            print(f"{label:36} median {shown}", flush=True)
    server.should_exit = True


if __name__ == "__main__":
    main()
