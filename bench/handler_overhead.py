"""Per-call cost of the LangChain handler, against no callbacks and a no-op handler, in one run.

    .venv/bin/python bench/handler_overhead.py [--calls 2000] [--rounds 5]

Workloads: a FakeListChatModel (~40-word reply) invoked with [system, human (~20 words)], and
``ChatPromptTemplate | model | StrOutputParser()``. Configurations: (a) no callbacks, (b) a no-op
``BaseCallbackHandler`` with ``run_inline = True``, (c) ``ContextCallbackHandler`` sending to a real
``convolens serve`` on localhost. The configurations take turns within each round (a, b, c, a, b, c…), so
machine noise hits them alike; figures are medians over rounds of each round's p50 and p99.
Target (issue 3): overhead(c) <= 1.5 x overhead(b) at p50, and p99 overhead of (c) under 300 µs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from convolens.langchain import ContextCallbackHandler

REPLY = (
    "Sure. To read a CSV file with pandas and skip the first two rows, call read_csv with skiprows set to two; "
    "the header is then taken from the third line, and you can pass names to set the columns yourself if needed."
)
QUESTION = "How do I read a CSV file with pandas and skip the first two rows when the file has a header line?"


class NoOp(BaseCallbackHandler):
    run_inline = True


def start_server(home: Path) -> tuple[subprocess.Popen, str, str]:
    env = {**os.environ, "CONVOLENS_HOME": str(home)}
    env.pop("CONVOLENS_DATABASE_URL", None)
    cli = [sys.executable, "-m", "convolens"]
    token = subprocess.run(
        [*cli, "tokens", "create", "--project", "bench"], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    port = 18_000 + os.getpid() % 1000
    process = subprocess.Popen([*cli, "serve", "--port", str(port), "--log-level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return process, url, token


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(call, calls: int) -> tuple[float, float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return percentile(samples, 0.5), percentile(samples, 0.99)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="convolens-bench-"))
    server, url, token = start_server(home)
    handler = ContextCallbackHandler(token, base_url=url, spool_dir=home / "spool")
    configs = {"a: none": [], "b: no-op": [NoOp()], "c: convolens": [handler]}
    model = FakeListChatModel(responses=[REPLY])
    chain = (
        ChatPromptTemplate.from_messages([("system", "You answer briefly."), ("human", "{q}")])
        | model
        | (StrOutputParser())
    )
    prompt = [SystemMessage("You answer programming questions briefly and precisely."), HumanMessage(QUESTION)]
    workloads = {
        "chat model": lambda cbs: lambda: model.invoke(prompt, config={"callbacks": cbs}),
        "prompt | model | parser": lambda cbs: lambda: chain.invoke({"q": QUESTION}, config={"callbacks": cbs}),
    }
    try:
        for workload, make in workloads.items():
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
            for cbs in configs.values():  # warm-up
                measure(make(cbs), 200)
            handler.flush(60)
            for _ in range(args.rounds):
                for name, cbs in configs.items():
                    results[name].append(measure(make(cbs), args.calls))
                    # Let the sender finish this block's sending before the next configuration runs, so
                    # that its background work is charged to (c) and not spilled into (a) or (b).
                    handler.flush(60)
            p50 = {n: statistics.median(r[0] for r in rs) for n, rs in results.items()}
            p99 = {n: statistics.median(r[1] for r in rs) for n, rs in results.items()}
            base50, base99 = p50["a: none"], p99["a: none"]
            print(f"\n{workload}: {args.calls} calls x {args.rounds} rounds (medians of per-round p50/p99, µs)")
            print(f"{'config':<16}{'p50':>9}{'p99':>9}{'+p50':>9}{'+p99':>9}")
            for name in configs:
                print(
                    f"{name:<16}{p50[name]:>9.1f}{p99[name]:>9.1f}{p50[name] - base50:>9.1f}{p99[name] - base99:>9.1f}"
                )
            noop = p50["b: no-op"] - base50
            ours = p50["c: convolens"] - base50
            print(f"overhead ratio (c over a) / (b over a) at p50: {ours / noop:.2f}  (target <= 1.5)")
            print(f"p99 overhead of c: {p99['c: convolens'] - base99:.1f} µs  (target < 300)")
        assert handler.flush(60)
        stats = handler.client.stats
        print(f"\nhandler stats: sent={stats['sent']} dropped={stats['dropped']} spooled={stats['spooled']}")
    finally:
        handler.shutdown(5)
        server.terminate()
        server.wait(20)


if __name__ == "__main__":
    main()
