"""Throughput of the whole per-message pipeline on this machine, and the worker's memory.

    python bench/enrich_throughput.py [--messages 4096] [--runs 3]

Each run scrubs PII (as the ingest path does), then runs ``pipeline.enrich`` — language, embedding,
sentiment, keyword and semantic topic matching — and then the outcome of each conversation of the batch
(``outcomes.assess_many`` over its transcript, as the worker's save does; ``--no-outcomes`` leaves it out)
on batches of 256 (the worker's batch), over a chat-like
mix: half user messages (5-40 words), half assistant replies (20-120 words), and 6 keyword plus 6
semantic topics. It reports messages/s (median of the runs) overall and for user messages alone,
with the embedding alone as the baseline measured in the same run, the chat mix per CPU-second and the
outcome step's CPU (what a shared machine's load does not distort), and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import time
from datetime import datetime
from pathlib import Path

from convolens.enrich import embedding, outcomes, pii, pipeline
from convolens.enrich.topics import ProjectTopics, compile_topic
from convolens.store.enrichment import PREVIOUS_CHARS, PendingMessage, Turn

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "topics.jsonl"


def messages(n: int, seed: int = 0) -> list[PendingMessage]:
    rng = random.Random(seed)
    questions = [json.loads(line)["text"] for line in DATA.read_text().splitlines()]
    words = " ".join(questions).split()
    out: list[PendingMessage] = []
    for i in range(n):
        previous = None
        if i % 2 == 0:
            text = rng.choice(questions) + " " + " ".join(rng.choices(words, k=rng.randint(0, 30)))
            role = "user"
            if i % 8:  # the reply before it in its conversation, as the claim brings it
                previous = out[-1].content[-PREVIOUS_CHARS:]
        else:
            text = " ".join(rng.choices(words, k=rng.randint(20, 120)))
            role = "assistant"
        out.append(PendingMessage(i, 1, i // 8, role, "message", text, datetime(2026, 12, 1), previous))
    return out


def topics() -> ProjectTopics:
    keyword = [
        compile_topic(i, f"k{i}", "keyword", {"keywords": kws})
        for i, kws in enumerate(
            [["refund", "invoice"], ["password"], ["python", "pandas"], ["visa"], ["recipe"], ["csv"]]
        )
    ]
    semantic = [
        compile_topic(100 + i, f"s{i}", "semantic", {"description": d, "examples": [d]})
        for i, d in enumerate(["billing problems", "login trouble", "travel plans", "cooking", "fitness", "health"])
    ]
    return ProjectTopics.of(keyword + semantic)


# CPU seconds spent in the outcome step (all runs): on a shared machine, what the step costs is read in
# CPU time, which other jobs' load does not inflate the way it does wall-clock time.
OUTCOME_CPU: list[float] = []


def run(batch: list[PendingMessage], matchers: ProjectTopics, with_outcomes: bool = True) -> float:
    started = time.perf_counter()
    for start in range(0, len(batch), 256):
        chunk = batch[start : start + 256]
        for m in chunk:
            pii.scrub(m.content)
        results = pipeline.enrich(chunk, {1: matchers})
        if with_outcomes:
            transcripts: dict[int, list[Turn]] = {}
            for m, r in zip(chunk, results, strict=True):
                transcripts.setdefault(m.conversation_pk, []).append(
                    Turn(m.role, m.kind, None, m.content[:2000], r.vector)
                )
            cpu = time.process_time()
            outcomes.assess_many(transcripts)
            OUTCOME_CPU.append(time.process_time() - cpu)
    return len(batch) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-outcomes", action="store_true", help="leave the conversation outcomes out")
    args = parser.parse_args()
    on = not args.no_outcomes
    batch = messages(args.messages)
    user_only = [m for m in batch if m.role == "user"]
    matchers = topics()
    run(batch[:256], matchers, on)  # load the models once, outside the timings
    mixed, users, embed_only, mixed_cpu = [], [], [], []
    OUTCOME_CPU.clear()
    for _ in range(args.runs):
        cpu = time.process_time()
        mixed.append(run(batch, matchers, on))
        mixed_cpu.append(len(batch) / (time.process_time() - cpu))
        users.append(run(user_only, matchers, on))
        started = time.perf_counter()
        embedding.embed([m.content for m in user_only])
        embed_only.append(len(user_only) / (time.perf_counter() - started))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"threads={embedding.threads()} messages={len(batch)} runs={args.runs} outcomes={'on' if on else 'off'}")
    print(f"pipeline, mixed user/assistant: {statistics.median(mixed):.0f} msgs/s (runs {[round(x) for x in mixed]})")
    print(f"pipeline, user messages only:   {statistics.median(users):.0f} msgs/s")
    print(f"baseline, embedding alone:      {statistics.median(embed_only):.0f} msgs/s (user messages)")
    print(f"pipeline / embedding (user):    {statistics.median(users) / statistics.median(embed_only):.2f}")
    rate = statistics.median(mixed_cpu)
    print(f"pipeline, mixed, per CPU-second: {rate:.0f} msgs (runs {[round(x) for x in mixed_cpu]})")
    if on:  # the step's CPU in both mixes of a run, against the mixed run's whole CPU
        step = sum(OUTCOME_CPU) / args.runs
        print(f"outcome step: {1000 * step:.0f} ms CPU a run, vs {1000 * len(batch) / rate:.0f} ms for the mix")
    print(f"peak RSS: {rss:.0f} MB")


if __name__ == "__main__":
    main()
