"""Durable OTLP ingest throughput: LLM spans per second from the first request until every turn is
readable through the read API.

    .venv/bin/python bench/otlp_ingest.py [--spans 20480] [--per-request 512] [--runs 3]
                                          [--database-url URL] [--native] [--history TURNS]

Starts ``convolens serve`` (SQLite in a temporary home unless a URL is given, embedded worker off so
that only ingestion is measured) for each run, then sends pre-serialized OTLP/HTTP protobuf requests
(``ExportTraceServiceRequest``) of ``--per-request`` LLM spans over one keep-alive connection, as an
OpenTelemetry SDK's BatchSpanProcessor does (512 spans an export). Each span is its own trace and
conversation: GenAI semantic-convention attributes (``gen_ai.system_instructions``,
``gen_ai.input.messages`` with one user message, ``gen_ai.output.messages``, model, token usage),
chat-sized texts (20-200 words). ``--native`` posts the same turns as native batches to
``/api/v1/ingest`` instead, for a ratio against the door's own cost (alternated run by run).
``--history TURNS``: conversations of that many turns instead, each span carrying the system
instructions and the conversation so far as its input (as instrumented chat apps and agents send them),
a conversation's turns in successive requests (turn 1 of 512 conversations, then turn 2 of them, …).
Prints each run and the medians: durable spans per second, request latency p50/p99, the server's CPU
per span: the API process's, then its children's (the heavy lane's scrubbing process).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving
from ingest import WORDS

PROTOBUF = {"Content-Type": "application/x-protobuf"}
SYSTEM = "You are a helpful assistant for an online shop. Answer briefly and politely."


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 200)))


def _parts(role: str, text: str) -> dict:
    return {"role": role, "parts": [{"type": "text", "content": text}]}


def turns(count: int) -> list[tuple[bytes, str, str, str]]:
    """(trace id, span id hex, question, answer) for ``count`` spans."""
    rng = random.Random(7)
    return [(rng.randbytes(16), rng.randbytes(8).hex(), _text(rng), _text(rng)) for _ in range(count)]


# A span's conversation, and the turns before it: (conversation id, [(question, answer), ...]).
History = tuple[str, list[tuple[str, str]]]


def in_conversations(
    spans: list[tuple[bytes, str, str, str]], turns_each: int
) -> tuple[list[tuple[bytes, str, str, str]], list[History]]:
    """``spans`` as conversations of ``turns_each`` turns, turn 1 of every conversation first: the spans in
    that order, and each one's conversation and history."""
    count = len(spans) // turns_each
    ordered, histories = [], []
    for turn in range(turns_each):
        for c in range(count):
            first = c * turns_each
            ordered.append(spans[first + turn])
            histories.append((f"conversation-{c}", [(q, a) for _, _, q, a in spans[first : first + turn]]))
    return ordered, histories


def otlp_body(chunk: list[tuple[bytes, str, str, str]], start_ns: int, histories: list[History] | None = None) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "shop-assistant"
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "opentelemetry.instrumentation.openai_v2"
    system = orjson.dumps([{"type": "text", "content": SYSTEM}]).decode()
    for n, (trace_id, span_id, question, answer) in enumerate(chunk):
        conversation, before = histories[n] if histories else (None, [])
        asked = [part for q, a in before for part in (_parts("user", q), _parts("assistant", a))]
        span = scope.spans.add()
        span.trace_id, span.span_id = trace_id, bytes.fromhex(span_id)
        span.name, span.kind = "chat gpt-4o-mini", 3
        span.start_time_unix_nano = start_ns + n * 1_000_000
        span.end_time_unix_nano = span.start_time_unix_nano + 800_000_000
        for key, value in (
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.provider.name", "openai"),
            ("gen_ai.request.model", "gpt-4o-mini"),
            ("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
            ("gen_ai.system_instructions", system),
            ("gen_ai.input.messages", orjson.dumps([*asked, _parts("user", question)]).decode()),
            (
                "gen_ai.output.messages",
                orjson.dumps([{**_parts("assistant", answer), "finish_reason": "stop"}]).decode(),
            ),
            ("user.id", f"user-{n % 97}"),
        ):
            span.attributes.add(key=key).value.string_value = value
        if conversation is not None:
            span.attributes.add(key="gen_ai.conversation.id").value.string_value = conversation
        span.attributes.add(key="gen_ai.usage.input_tokens").value.int_value = 40 + len(question) // 4
        span.attributes.add(key="gen_ai.usage.output_tokens").value.int_value = len(answer) // 4
    return request.SerializeToString()


def native_body(chunk: list[tuple[bytes, str, str, str]]) -> bytes:
    events: list[dict] = []
    for n, (trace_id, _span_id, question, answer) in enumerate(chunk):
        cid = trace_id.hex()
        events.append({"type": "conversation", "id": cid, "user_id": f"user-{n % 97}"})
        for k, (role, text) in enumerate((("system", SYSTEM), ("user", question), ("assistant", answer))):
            event = {"type": "message", "conversation_id": cid, "id": f"{cid}-{k}", "role": role, "content": text}
            if role == "assistant":
                event |= {
                    "model": "gpt-4o-mini-2024-07-18",
                    "input_tokens": 40,
                    "output_tokens": 50,
                    "latency_ms": 800.0,
                }
            events.append(event)
    return orjson.dumps({"events": events})


def run(args: argparse.Namespace, native: bool) -> dict[str, float]:
    spans = turns(args.spans)
    histories = None
    if args.history:
        spans, histories = in_conversations(spans, args.history)
    conversations = args.spans // args.history if args.history else args.spans
    chunks = [spans[i : i + args.per_request] for i in range(0, len(spans), args.per_request)]
    now = time.time_ns()
    if native and histories:
        sys.exit("--native posts each turn as its own conversation: not with --history")
    if histories:
        per = args.per_request
        bodies = [otlp_body(c, now + i * 10**9, histories[i * per : (i + 1) * per]) for i, c in enumerate(chunks)]
        path, headers = "/v1/traces", PROTOBUF
    elif native:  # the native bound on events a batch: 4 events a turn
        chunks = [c[i : i + 250] for c in chunks for i in range(0, len(c), 250)]
        bodies, path, headers = [native_body(c) for c in chunks], "/api/v1/ingest", {"Content-Type": "application/json"}
    else:
        bodies, path, headers = [otlp_body(c, now) for c in chunks], "/v1/traces", PROTOBUF

    home = Path(tempfile.mkdtemp(prefix="convolens-otlp-"))
    env = {**os.environ, "CONVOLENS_HOME": str(home), "CONVOLENS_EMBEDDED_WORKER": "0"}
    if args.database_url:
        env["CONVOLENS_DATABASE_URL"] = args.database_url
    token = serving.new_token(env, "otlp")
    port = 18_000 + os.getpid() % 500
    server, base = serving.start(env, port)

    def cpu_seconds() -> tuple[float, float]:
        """CPU seconds of the API process, and of its live children (the heavy lane's scrubbing process)."""
        own = _proc_cpu(server.pid)
        children = sum(_proc_cpu(child) for child in _children(server.pid))
        return own, children

    try:
        latencies = []
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=auth, timeout=120) as http:  # one keep-alive connection
            cpu_before = cpu_seconds()
            started = time.perf_counter()
            for body in bodies:
                sent = time.perf_counter()
                response = http.post(path, content=body, headers=headers)
                response.raise_for_status()
                latencies.append(time.perf_counter() - sent)
            responded = time.perf_counter()
            while True:  # durable means readable
                listing = http.get("/api/v1/conversations", params={"start_time": "2000-01-01", "per_page": 1}).json()
                if listing["pagination"]["total_records"] >= conversations:
                    break
                if time.perf_counter() - responded > 120:
                    sys.exit(
                        f"only {listing['pagination']['total_records']} of {args.spans} turns readable after 120 s"
                    )
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
            cpu_after = cpu_seconds()
            cpu, child_cpu = cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1]
        ordered = sorted(latencies)
        return {
            "spans_per_s": args.spans / elapsed,
            "p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1000,
            "cpu_us_per_span": cpu / args.spans * 1e6,
            "child_cpu_us_per_span": child_cpu / args.spans * 1e6,
            "cpu_s": cpu,
            "child_cpu_s": child_cpu,
            "body_kb": sum(map(len, bodies)) / len(bodies) / 1024,
        }
    finally:
        server.terminate()
        server.wait(30)


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0  # ended meanwhile
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """The process's child pids (each of its threads lists the children it started)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=20_480)
    parser.add_argument("--per-request", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url")
    parser.add_argument("--native", action="store_true", help="alternate with the same turns as native batches")
    parser.add_argument("--history", type=int, metavar="TURNS", help="conversations of TURNS turns, history resent")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"otlp": [], "native": []}
    for i in range(args.runs):
        for mode in ("otlp", "native") if args.native else ("otlp",):
            r = run(args, native=mode == "native")
            results[mode].append(r)
            print(
                f"run {i + 1} {mode:6}: {r['spans_per_s']:8.0f} spans/s durable, p50 {r['p50_ms']:.0f} ms,"
                f" p99 {r['p99_ms']:.0f} ms, server CPU {r['cpu_us_per_span']:.0f} µs/span"
                f" + its children {r['child_cpu_us_per_span']:.0f} µs/span"
                f" ({r['cpu_s']:.2f} + {r['child_cpu_s']:.2f} s),"
                f" {r['body_kb']:.0f} KB/request",
                flush=True,
            )
    for mode, runs in results.items():
        if runs:
            median = statistics.median(r["spans_per_s"] for r in runs)
            cpu = statistics.median(r["cpu_us_per_span"] for r in runs)
            child = statistics.median(r["child_cpu_us_per_span"] for r in runs)
            print(f"median {mode}: {median:.0f} spans/s durable, {cpu:.0f} + {child:.0f} µs server CPU/span")
    if results["native"]:
        ratios = [o["spans_per_s"] / n["spans_per_s"] for o, n in zip(results["otlp"], results["native"], strict=True)]
        print(f"OTLP / native (same turns), pairwise median: x{statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
