"""Durable ingest throughput: messages per second from the first request until every message is
readable through the read API.

    .venv/bin/python bench/ingest.py [--mode native|sdk|context] [--conversations 5000] [--clients 4]
                                     [--workers 1] [--runs 3] [--database-url URL]

Starts ``convolens serve`` (SQLite in a temporary home unless a URL is given; ``--workers`` API
processes; embedded worker off so that only ingestion is measured, unless ``--embedded-worker``) for each
of ``--runs`` runs, then sends generated conversations (4-12 messages of 20-200 words, a few metadata
keys, Zipf-distributed user ids) from ``--clients`` threads in this process, loopback only, bounded in count. Bodies are
encoded before the clock starts. Prints each run and a summary line of medians: durable messages and
conversations per second, request latency p50/p99, how long after the last response everything was
readable, the server's CPU per message and RSS (its whole process tree).
Modes: ``native`` posts batches of ``--batch`` conversations to ``/api/v1/ingest``; ``sdk`` logs each
conversation from ``--clients`` threads through one ``convolens.Client`` (its sender batches them);
``context`` posts one conversation per request to Context's ``/api/v1/log/conversation``.
``--generator wrk`` (native and context modes) sends the same bodies from wrk (``apt-get install wrk``)
with ``--clients`` connections on one thread instead of httpx threads: on 2 cores a Python generator
took more CPU than the server it measured, so its figures were the generator's as much as the server's.
To compare with an earlier commit, check it out (``git worktree add /tmp/base <commit>``) and pass
``--baseline /tmp/base/src``: its runs alternate with this tree's, and the ratios of each pair are
printed with their median. ``--fresh-database`` gives every PostgreSQL run a new database.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported by other benches
import serving

JSON = {"Content-Type": "application/json"}

WORDS = [
    "invoice",
    "payment",
    "refund",
    "order",
    "account",
    "password",
    "python",
    "error",
    "deploy",
    "server",
    "travel",
    "visa",
    "hotel",
    "recipe",
    "dinner",
    "weather",
    "flight",
    "ticket",
    "discount",
    "subscription",
    "plan",
    "upgrade",
    "cancel",
    "login",
    "crash",
    "slow",
    "update",
]


_TEXTS: list[str] = []


def _texts() -> list[str]:
    """2,000 messages of 20-200 words, made once: the generator must keep ahead of the server."""
    if not _TEXTS:
        rng = random.Random(99)
        _TEXTS.extend(" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 200))) for _ in range(2000))
    return _TEXTS


def conversation(rng: random.Random, users: int) -> list[dict]:
    cid = uuid.UUID(int=rng.getrandbits(128)).hex
    user = min(int(rng.paretovariate(1.2)), users)
    events: list[dict] = [
        {
            "type": "conversation",
            "id": cid,
            "user_id": f"user-{user}",
            "metadata": {"plan": rng.choice(["free", "pro"]), "model": "gpt-4o-mini"},
        }
    ]
    for i in range(rng.randint(4, 12)):
        text = rng.choice(_texts())
        events.append(
            {
                "type": "message",
                "conversation_id": cid,
                "id": f"{cid}-{i}",
                "role": "user" if i % 2 == 0 else "assistant",
                "content": text,
            }
        )
    return events


def context_body(events: list[dict]) -> bytes:
    """One generated conversation (its conversation event first) as Context's log body."""
    head, *messages = events
    return orjson.dumps({"conversation": {
        "messages": [{"role": m["role"], "message": m["content"]} for m in messages],
        "metadata": {**head["metadata"], "user_id": head["user_id"]},
    }})  # fmt: skip


def _split(batch: list[dict]) -> list[list[dict]]:
    """A batch's events, one list per conversation (its conversation event first)."""
    out: list[list[dict]] = []
    for event in batch:
        if event["type"] == "conversation":
            out.append([event])
        else:
            out[-1].append(event)
    return out


def run(args: argparse.Namespace, source: str | None = None) -> dict[str, float]:
    """One run on a new server; ``source``: a ``src`` folder to run the server from instead of this tree's."""
    rng = random.Random(1)
    batches, total_messages, batch = [], 0, []
    for _ in range(args.conversations):
        events = conversation(rng, 1000)
        total_messages += len(events) - 1
        batch += events
        if len(batch) >= args.batch * 9:
            batches.append(batch)
            batch = []
    if batch:
        batches.append(batch)

    home = Path(tempfile.mkdtemp(prefix="convolens-ingest-"))
    env = {
        **os.environ,
        "CONVOLENS_HOME": str(home),
        "CONVOLENS_EMBEDDED_WORKER": "1" if args.embedded_worker else "0",
        "CONVOLENS_RATE_LIMIT_PER_SECOND": "0",
    }
    if args.database_url:
        env["CONVOLENS_DATABASE_URL"] = args.database_url
        if args.fresh_database:
            _recreate_database(args.database_url)
    if source is not None:
        env["PYTHONPATH"] = source
    token = serving.new_token(env, "bench")
    port = 18_500 + os.getpid() % 500
    workers = ["--workers", str(args.workers)] if args.workers > 1 else []  # (a baseline may lack the flag)
    server, base = serving.start(env, port, *workers)
    headers = {"Authorization": f"Bearer {token}"}

    warmed = _warm_up(base, headers) if args.embedded_worker else 0
    latencies: list[float] = []
    generator_cpu = 0.0
    # Encoded before the clock starts: the load generator's own JSON encoding is not the server's cost.
    conversations = [c for b in batches for c in _split(b)]
    if args.mode == "native":
        bodies = [orjson.dumps({"events": b}) for b in batches]
    elif args.mode == "context":
        bodies = [context_body(c) for c in conversations]
    queue = list(range(len(batches) if args.mode == "native" else len(conversations)))
    lock = threading.Lock()
    sdk = None
    if args.mode == "sdk":
        from convolens import Client

        sdk = Client(token, base_url=base)

    def next_index() -> int | None:
        with lock:
            return queue.pop() if queue else None

    def client() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
            while (index := next_index()) is not None:
                started = time.perf_counter()
                if args.mode == "native":
                    response = http.post("/api/v1/ingest", content=bodies[index], headers=JSON)
                    response.raise_for_status()
                elif args.mode == "context":
                    http.post("/api/v1/log/conversation", content=bodies[index], headers=JSON).raise_for_status()
                else:
                    head, *messages = conversations[index]
                    sdk.log_conversation(  # type: ignore[union-attr]
                        [{"role": m["role"], "content": m["content"], "id": m["id"]} for m in messages],
                        conversation_id=head["id"],
                        user_id=head["user_id"],
                        metadata=head["metadata"],
                    )
                latencies.append(time.perf_counter() - started)

    def server_processes() -> list[int]:
        """The server and its descendants (API processes of --workers, a worker process)."""
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
        tree, grew = {server.pid}, True
        while grew:
            new = {pid for pid, parent in parents.items() if parent in tree} - tree
            tree |= new
            grew = bool(new)
        return sorted(tree)

    def cpu_seconds() -> float:
        total = 0.0
        for pid in server_processes():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def rss_mb() -> float:
        total = 0
        for pid in server_processes():
            try:
                total += int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0])
            except (OSError, IndexError):
                continue
        return total / 1024

    try:
        cpu_before = cpu_seconds()
        if args.generator == "wrk":
            started, responded, generator_cpu = _run_wrk(args, base, token, bodies, latencies, home)
        else:
            started = time.perf_counter()
            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            responded = time.perf_counter()
        if sdk is not None:
            if not sdk.flush(timeout=600):
                sys.exit(f"the SDK did not deliver everything within 600 s: {sdk.stats}")
            responded = time.perf_counter()  # the SDK's last batch acknowledged
        # Durable means readable: wait until the read API counts every conversation.
        while True:
            listing = httpx.get(
                f"{base}/api/v1/conversations", headers=headers, params={"start_time": "2000-01-01", "per_page": 1}
            ).json()
            stored = listing["pagination"]["total_records"]
            if stored >= args.conversations + warmed:
                break
            if time.perf_counter() - responded > 120:
                sys.exit(f"only {stored} of {args.conversations} conversations readable 120 s after the last response")
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        server_cpu = cpu_seconds() - cpu_before
        ordered = sorted(latencies)
        return {
            "messages": total_messages,
            "messages_per_s": total_messages / elapsed,
            "conversations_per_s": args.conversations / elapsed,
            "readable_after_s": time.perf_counter() - responded,
            "cpu_us_per_message": server_cpu / total_messages * 1e6,
            "p50_ms": (latencies[0] if args.generator == "wrk" else statistics.median(ordered)) * 1000,
            "p99_ms": (latencies[1] if args.generator == "wrk" else ordered[int(0.99 * (len(ordered) - 1))]) * 1000,
            "rss_mb": rss_mb(),
            "calls": len(latencies),
            "generator_cpu_us_per_message": generator_cpu / total_messages * 1e6,
        }
    finally:
        if sdk is not None:
            sdk.shutdown(5)
        server.terminate()
        server.wait(30)


ROUTES = {"native": "/api/v1/ingest", "context": "/api/v1/log/conversation"}


def _run_wrk(
    args: argparse.Namespace, base: str, token: str, bodies: list[bytes], latencies: list[float], home: Path
) -> tuple[float, float, float]:
    """Send every body once from wrk; returns (started, responded, the generator's CPU seconds) and
    fills ``latencies`` with wrk's p50 and p99 (it reports percentiles, not every request)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("--generator wrk needs wrk on the PATH (Debian: apt-get install wrk)")
    bodies_file = home / "bodies.jsonl"
    bodies_file.write_bytes(b"\n".join(bodies) + b"\n")
    script = Path(__file__).with_name("wrk_bodies.lua")
    threads = 1
    command = [
        wrk, f"-t{threads}", f"-c{max(args.clients, threads)}", "-d600s", "--timeout", "120s", "-s", str(script),
        base, "--", str(bodies_file), ROUTES[args.mode], token, str(threads),
    ]  # fmt: skip
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    finished, problems = 0, []
    for line in process.stderr:  # each wrk thread says when all its bodies are answered
        if line.strip() == "wrk-thread-done":
            finished += 1
            if finished == threads:
                break
        else:
            problems.append(line)
    responded = time.perf_counter()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    found = re.search(r"wrk-result stored=(\d+) failed=(\d+) p50_us=(\d+) p99_us=(\d+) errors=(\d+)", stdout)
    if found is None:
        sys.exit(f"wrk failed ({process.returncode}):\n{stdout}\n{''.join(problems)}{stderr}")
    stored, failed, p50, p99, errors = map(int, found.groups())
    if failed or errors or stored != len(bodies):
        problem = f"{stored} of {len(bodies)} bodies stored, {failed} refused, {errors} socket errors"
        sys.exit(f"wrk: {problem}\n{''.join(problems)}{stderr}")
    latencies.extend([p50 / 1e6, p99 / 1e6])  # the two percentiles, not samples
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    return started, responded, cpu


def _recreate_database(url: str) -> None:
    """Drop and create the run's PostgreSQL database, so that no run starts on an earlier run's rows."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{parsed.database}"')


def _report(i: int, mode: str, r: dict[str, float], who: str = "") -> None:
    print(
        f"run {i + 1}{who}: {r['messages_per_s']:,.0f} messages/s durable, {r['conversations_per_s']:,.0f} "
        f"conversations/s; readable {r['readable_after_s'] * 1000:.0f} ms after the last response; "
        f"{'call' if mode == 'sdk' else 'request'} p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms; "
        f"server CPU {r['cpu_us_per_message']:.0f} µs a message "
        f"(generator {r['generator_cpu_us_per_message']:.0f}); "
        f"RSS {r['rss_mb']:.0f} MB",
        flush=True,
    )


def _summary(args: argparse.Namespace, label: str, results: list[dict[str, float]]) -> str:
    def median(key: str) -> float:
        return statistics.median(r[key] for r in results)

    backend = "PostgreSQL" if args.database_url else "SQLite"
    return (
        f"| {label} | {backend} | {args.workers} | {median('messages_per_s'):,.0f} | "
        f"{median('conversations_per_s'):,.0f} | {median('p50_ms'):.1f} / {median('p99_ms'):.1f} ms | "
        f"{median('readable_after_s') * 1000:.0f} ms | {median('cpu_us_per_message'):.0f} µs | "
        f"{median('rss_mb'):.0f} MB |  ({len(results)} runs, {results[0]['messages']:,} messages, "
        f"{args.clients} clients, {args.generator})"
    )


def _warm_up(base: str, headers: dict[str, str]) -> int:
    """With the embedded worker: one conversation logged and enriched before the clock starts, so that the
    worker's start (loading its models, seconds of CPU) is not measured as the burst's cost, as on a server
    that has been running. Returns how many conversations it stored."""
    body = orjson.dumps(
        {"conversation": {"messages": [{"role": "user", "message": "Warming up: how do I export my invoices?"}]}}
    )
    response = httpx.post(f"{base}/api/v1/log/conversation", content=body, headers={**headers, **JSON}, timeout=60)
    response.raise_for_status()
    cid = response.json()["data"]["id"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        got = httpx.get(f"{base}/api/v1/conversations/{cid}", headers=headers, timeout=60).json()
        if all(m.get("sentiment_label") for m in got.get("messages", [])) and got.get("messages"):
            return 1
        time.sleep(0.1)
    sys.exit("the embedded worker did not enrich the warm-up conversation within 180 s")


def _compare(args: argparse.Namespace) -> None:
    """Baseline and this tree in alternating runs: this shared machine's speed drifts by 20% and more
    within minutes, so only runs made side by side compare. Prints each pair's ratio and their median."""
    baseline: list[dict[str, float]] = []
    current: list[dict[str, float]] = []
    for i in range(args.runs):
        baseline.append(run(args, args.baseline))
        _report(i, args.mode, baseline[-1], " (baseline)")
        current.append(run(args, None))
        _report(i, args.mode, current[-1], " (this tree)")
    print(_summary(args, f"{args.label or args.mode}, baseline", baseline))
    print(_summary(args, f"{args.label or args.mode}, this tree", current))
    for key, name in (("conversations_per_s", "conversations/s"), ("cpu_us_per_message", "server CPU a message")):
        ratios = [c[key] / b[key] for b, c in zip(baseline, current, strict=True)]
        print(
            f"{name}: this tree / baseline, pair by pair {', '.join(f'{x:.2f}' for x in ratios)}; "
            f"median {statistics.median(ratios):.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100, help="conversations per request")
    parser.add_argument("--database-url")
    parser.add_argument("--mode", choices=("native", "sdk", "context"), default="native")
    parser.add_argument("--workers", type=int, default=1, help="API processes (convolens serve --workers)")
    parser.add_argument("--runs", type=int, default=3, help="each on a new server and project; medians reported")
    parser.add_argument("--label", default="", help="a name for this configuration in the summary line")
    parser.add_argument(
        "--generator", choices=("httpx", "wrk"), default="httpx", help="wrk: a C load generator (native, context)"
    )
    parser.add_argument(
        "--baseline", metavar="SRC", help="another tree's src folder: alternate its runs with this tree's, print ratios"
    )
    parser.add_argument(
        "--embedded-worker",
        action="store_true",
        help="as `convolens serve` runs by default: the worker enriches while the burst is stored (issue 25)",
    )
    parser.add_argument(
        "--fresh-database", action="store_true", help="PostgreSQL: drop and create --database-url's database each run"
    )
    args = parser.parse_args()
    if args.generator == "wrk" and args.mode == "sdk":
        parser.error("--generator wrk sends ready bodies: native or context mode")
    if args.fresh_database and not args.database_url:
        parser.error("--fresh-database needs --database-url")
    if args.baseline:
        _compare(args)
        return
    results = []
    for i in range(args.runs):
        results.append(run(args))
        _report(i, args.mode, results[-1])
    print(_summary(args, args.label or args.mode, results))


if __name__ == "__main__":
    main()
