"""Soak under hostile load: does a normal app keep logging while strangers attack the server?

    .venv/bin/python bench/abuse.py [--seconds 60] [--hostile-clients 4] [--pairs 1] [--warmup 10] [--database-url URL]

Starts ``convolens serve`` (SQLite in a temporary home unless a URL is given, embedded worker on, so
hostile texts reach enrichment too), sends ``--warmup`` seconds of normal traffic that it does not
measure (the worker loads its models then), and runs, ``--pairs`` times, alternately:

- *quiet*: one normal client logs one conversation per request through Context's
  ``/api/v1/log/conversation`` for ``--seconds`` seconds, from a process of its own (as an app would:
  as a thread beside the attackers, its latency included waiting for their interpreter lock here);
- *hostile*: the same normal client, while ``--hostile-clients`` threads send a mix of the request
  classes of issue 22's audit: invalid tokens with gzip bombs (140 KB inflating to ~50 MB), texts built
  to make regexes backtrack (long runs of what the e-mail, JWT, card, IBAN and phone patterns consume,
  with and without a final match), over-count batches, ``extra`` nested 5,000 deep, ``latency_ms: 1e400``,
  NUL bytes, timestamps in year 1 and 9999, ids with ``/``, ids above 2^63 and out-of-range query times.

Every hostile request has a 60 s timeout and its loop ends at the deadline, loopback only. Prints the
normal client's p50/p99 latency in each phase and their ratio, the normal conversations that are not
readable afterwards (must be 0), and the hostile responses by class and status (a 5xx other than 503
is a defect; 503 with Retry-After is load shedding doing its job).
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).parent))
import serving

JSON = {"Content-Type": "application/json"}


def _bomb() -> bytes:
    """~50 MB of valid-looking events gzipped to a ~140 KB body."""
    event = b'{"type":"message","conversation_id":"c","id":"m","role":"user","content":"' + b"a" * 4000 + b'"},'
    raw = b'{"events":[' + event * 12_000 + b'{"type":"message","conversation_id":"c","id":"z","content":"x"}]}'
    return gzip.compress(raw, 9)


def _adversarial_texts(size: int = 90_000) -> list[str]:
    """Inputs that made the scrubber's patterns quadratic: long runs of the characters a pattern
    consumes, with and without what would complete a match."""
    return [
        "a" * size,
        "a." * (size // 2),
        "a@" * (size // 2),
        "a" * size + "@",
        "eyJ" + "a" * size,
        "eyJ" + "a" * (size // 2) + "." + "a" * (size // 2),
        "1 " * (size // 2),
        "1-" * (size // 2),
        "+1 " * (size // 3),
        "DE89" + " 1234" * (size // 5),
        ":" * size,
        "a:" * (size // 2),
        "sk-" + "a" * size,
        "Bearer " + "a" * size,
        "password=" + "x" * size,
        "call " + "1" * size,
    ]


def _hostile_requests(base_token: str) -> list[tuple[str, Callable[[httpx.Client], httpx.Response]]]:
    bomb = _bomb()
    texts = _adversarial_texts()
    auth = {"Authorization": f"Bearer {base_token}"}

    def bomb_bad_token(http: httpx.Client) -> httpx.Response:
        headers = {**JSON, "Content-Encoding": "gzip", "Authorization": f"Bearer cl_{uuid.uuid4().hex}"}
        return http.post("/api/v1/ingest", content=bomb, headers=headers)

    def adversarial_native(http: httpx.Client) -> httpx.Response:
        cid = uuid.uuid4().hex
        events = [
            {"type": "message", "conversation_id": cid, "id": f"{cid}-{i}", "role": "user", "content": text}
            for i, text in enumerate(texts[:8])
        ]
        return http.post("/api/v1/ingest", content=orjson.dumps({"events": events}), headers={**JSON, **auth})

    def adversarial_context(http: httpx.Client) -> httpx.Response:
        messages = [{"role": "user", "message": text} for text in texts[8:]]
        body = orjson.dumps({"conversation": {"messages": messages}})
        return http.post("/api/v1/log/conversation", content=body, headers={**JSON, **auth})

    over_count_body = orjson.dumps(
        {"events": [{"type": "message", "conversation_id": "c", "id": f"m{i}", "content": "x"} for i in range(50_000)]}
    )

    def over_count(http: httpx.Client) -> httpx.Response:
        return http.post("/api/v1/ingest", content=over_count_body, headers={**JSON, **auth})

    def deep_extra(http: httpx.Client) -> httpx.Response:
        extra = "[" * 5000 + "]" * 5000
        body = (
            '{"events":[{"type":"message","conversation_id":"c","id":"deep","content":"x","extra":{"a":'
            + extra
            + "}}]}"
        )
        return http.post("/api/v1/ingest", content=body.encode(), headers={**JSON, **auth})

    def odd_values(http: httpx.Client) -> httpx.Response:
        body = (
            b'{"events":[{"type":"message","conversation_id":"c","id":"odd","content":"x\\u0000y",'
            b'"latency_ms":1e400,"timestamp":"0001-01-01T00:00:00+01:00"}]}'
        )
        return http.post("/api/v1/ingest", content=body, headers={**JSON, **auth})

    def odd_times(http: httpx.Client) -> httpx.Response:
        params = {"start_time": "9999-12-31T23:59:59-05:00", "end_time": "0001-01-01"}
        return http.get("/api/v1/conversations", params=params, headers=auth)

    def slash_ids(http: httpx.Client) -> httpx.Response:
        return http.get("/api/v1/conversations/a%2Fb%2B%3D", headers=auth)

    def huge_ids(http: httpx.Client) -> httpx.Response:
        return http.delete(f"/api/v1/users/{2**64}", headers=auth)

    return [
        ("bomb_bad_token", bomb_bad_token),
        ("adversarial_native", adversarial_native),
        ("adversarial_context", adversarial_context),
        ("over_count", over_count),
        ("deep_extra", deep_extra),
        ("odd_values", odd_values),
        ("odd_times", odd_times),
        ("slash_ids", slash_ids),
        ("huge_ids", huge_ids),
    ]


def _normal_body(i: int) -> bytes:
    return orjson.dumps(
        {
            "conversation": {
                "messages": [
                    {"role": "user", "message": f"How do I change the billing address on invoice {i}?"},
                    {"role": "assistant", "message": "Open Settings, then Billing, and edit the address."},
                ],
                "metadata": {"user_id": f"user-{i % 50}", "plan": "pro"},
            }
        }
    )


def _normal_client(base: str, token: str, conn: Connection) -> None:
    """The normal app, in a process of its own: an app does not share an interpreter with its attackers,
    and threads here would make its latency include waiting for the attackers' GIL in this client."""
    latencies: list[float] = []
    ids: list[str] = []
    failures: Counter[str] = Counter()
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}", **JSON}, timeout=60) as http:
        conn.send("ready")
        deadline = conn.recv()
        i = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                response = http.post("/api/v1/log/conversation", content=_normal_body(i))
            except httpx.HTTPError as exc:
                failures[type(exc).__name__] += 1
                continue
            latencies.append(time.perf_counter() - started)
            if response.status_code == 201:
                ids.append(response.json()["data"]["id"])
            else:
                failures[str(response.status_code)] += 1
            i += 1
            time.sleep(0.02)  # an app logging ~40 conversations/s, not a load generator
    conn.send((latencies, ids, dict(failures)))


def phase(base: str, token: str, seconds: float, hostile_clients: int, classes: set[str] | None = None) -> dict:
    hostile: Counter[str] = Counter()
    lock = threading.Lock()
    requests = [r for r in _hostile_requests(token) if classes is None or r[0] in classes]
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    normal = multiprocessing.get_context("spawn").Process(target=_normal_client, args=(base, token, theirs))
    normal.start()
    assert ours.recv() == "ready"
    # CLOCK_MONOTONIC is one clock for every process of the machine: the same deadline for both.
    deadline = time.monotonic() + seconds
    ours.send(deadline)

    def attacker(offset: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            k = offset
            while time.monotonic() < deadline:
                name, send = requests[k % len(requests)]
                k += 1
                try:
                    status = str(send(http).status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with lock:
                    hostile[f"{name} {status}"] += 1

    threads = [threading.Thread(target=attacker, args=(i * 2,)) for i in range(hostile_clients)]
    for t in threads:
        t.start()
    latencies, ids, failures = ours.recv()
    normal.join()
    for t in threads:
        t.join()
    ordered = sorted(latencies)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1000,
        "logged": len(ids),
        "ids": ids,
        "failures": failures,
        "hostile": dict(sorted(hostile.items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--hostile-clients", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=10, help="seconds of normal traffic before measuring")
    parser.add_argument("--database-url")
    parser.add_argument("--classes", help="comma-separated hostile classes to send (default: all)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="convolens-abuse-"))
    env = {**os.environ, "CONVOLENS_HOME": str(home)}
    if args.database_url:
        env["CONVOLENS_DATABASE_URL"] = args.database_url
    token = serving.new_token(env, "abuse", scope="ingest,read,admin")
    server, base = serving.start(env, 19_000 + os.getpid() % 500)
    try:
        # Not measured: the server's first requests and its worker's start (loading its models) would
        # otherwise fall in the first quiet phase.
        phase(base, token, args.warmup, 0)
        quiet, loud = [], []
        for pair in range(args.pairs):
            quiet.append(phase(base, token, args.seconds, 0))
            classes = set(args.classes.split(",")) if args.classes else None
            loud.append(phase(base, token, args.seconds, args.hostile_clients, classes))
            for name, result in (("quiet", quiet[-1]), ("hostile", loud[-1])):
                print(
                    f"pair {pair + 1} {name:8s} normal p50 {result['p50_ms']:.1f} ms  p99 {result['p99_ms']:.1f} ms  "
                    f"logged {result['logged']}  failures {result['failures']}"
                )
            print("  hostile responses:", loud[-1]["hostile"])
        # Durable means readable: every normal conversation answered 201 must be there.
        lost = 0
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
            for result in quiet + loud:
                for cid in result["ids"]:
                    response = http.get(f"/api/v1/conversations/{cid}")
                    while response.status_code in (429, 503):  # an operator's rate limit or load shedding
                        time.sleep(float(response.headers.get("Retry-After", "1")))
                        response = http.get(f"/api/v1/conversations/{cid}")
                    if response.status_code != 200:
                        lost += 1
        p50 = statistics.median(r["p50_ms"] for r in loud) / statistics.median(r["p50_ms"] for r in quiet)
        p99 = statistics.median(r["p99_ms"] for r in loud) / statistics.median(r["p99_ms"] for r in quiet)
        server_errors = sum(
            n for r in loud for key, n in r["hostile"].items() if key.split()[-1].startswith("5") and "503" not in key
        )
        # The attackers wait for each answer: a server that answers them more slowly gets fewer of them.
        answered = statistics.median(sum(r["hostile"].values()) for r in loud)
        print(
            f"summary: normal p50 x{p50:.2f}, p99 x{p99:.2f} under hostile load (target p99 <= x3); "
            f"lost normal conversations {lost}; hostile 5xx other than 503: {server_errors}; "
            f"hostile requests answered {answered:.0f}"
        )
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
