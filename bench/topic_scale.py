"""Keyword topic matching at the topic limits: CPU seconds to match 200 messages against one topic and
against 100 topics of 50 keywords, with the Aho-Corasick index and with the per-topic regex loop it
replaced (kept as the reference in tests/test_keyword_index.py). Medians of --runs.

    python bench/topic_scale.py [--runs 7] [--topics 100] [--keywords 50]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from convolens.enrich import topics  # noqa: E402
from test_keyword_index import TEXTS, compiled, reference_match, reference_pattern  # noqa: E402


def cpu(work: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.process_time()
        work()
        times.append(time.process_time() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--keywords", type=int, default=50)
    args = parser.parse_args()
    rng = random.Random(3)
    vocabulary = sorted({w.strip("?.,!¿¡").lower() for text in TEXTS for w in text.split()} - {""})
    filler = [f"{w}{i}" for i in range(200) for w in ("zorb", "quell", "mav", "tesk", "plom", "vrin", "dask", "hult")]
    many = [[*rng.sample(filler, args.keywords - 1), rng.choice(vocabulary)] for _ in range(args.topics)]
    texts = [rng.choice(TEXTS) + " " + " ".join(rng.choices(vocabulary, k=40)) for _ in range(200)]
    one, all_ = compiled(many[:1]), compiled(many)
    old_one = [(0, reference_pattern(many[0]))]
    old_all = [(pk, reference_pattern(k)) for pk, k in enumerate(many)]
    print(f"200 messages, {args.topics} topics x {args.keywords} keywords, median of {args.runs} runs (CPU s)")
    print(f"index, 1 topic:        {cpu(lambda: [topics.match(t, None, one) for t in texts], args.runs):.4f}")
    print(f"index, all topics:     {cpu(lambda: [topics.match(t, None, all_) for t in texts], args.runs):.4f}")
    print(f"regex loop, 1 topic:   {cpu(lambda: [reference_match(t, old_one) for t in texts], args.runs):.4f}")
    print(f"regex loop, all:       {cpu(lambda: [reference_match(t, old_all) for t in texts], args.runs):.4f}")
    print(f"building the index:    {cpu(lambda: compiled(many), 3):.4f}")


if __name__ == "__main__":
    main()
