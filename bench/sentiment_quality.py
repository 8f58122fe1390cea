"""Sentiment accuracy (3 classes) on the labelled user messages of tests/data/sentiment.jsonl.

python bench/sentiment_quality.py            # prints accuracy, per-class recall and the misses
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from convolens.enrich import embedding, sentiment

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "sentiment.jsonl"


def evaluate(rows: list[dict]) -> dict:
    texts = [r["text"] for r in rows]
    results = sentiment.score(texts, embedding.embed(texts))
    wrong = [(r["label"], s.label, r["text"]) for r, s in zip(rows, results, strict=True) if s.label != r["label"]]
    totals = Counter(r["label"] for r in rows)
    misses = Counter(expected for expected, _, _ in wrong)
    return {
        "n": len(rows),
        "accuracy": round(1 - len(wrong) / len(rows), 4),
        "recall": {label: round(1 - misses[label] / totals[label], 4) for label in sorted(totals)},
        "wrong": wrong,
    }


if __name__ == "__main__":
    result = evaluate([json.loads(line) for line in DATA.read_text().splitlines()])
    print(f"n={result['n']} accuracy={result['accuracy']} recall={result['recall']}")
    for expected, got, text in result["wrong"]:
        print(f"  expected {expected:8} got {got:8} {text}", file=sys.stderr)
