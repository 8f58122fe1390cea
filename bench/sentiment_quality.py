"""Sentiment accuracy (3 classes) on the labelled user messages of tests/data.

    python bench/sentiment_quality.py            # every set: accuracy, per-class recall; tune sets' misses

- sentiment.jsonl: 240 messages, one label each, no context (the set the classifier was tuned on);
- complaints_tune.jsonl / complaints_holdout.jsonl: complaints without a negative word and their
  look-alikes, most with the assistant reply before them (``previous_assistant``), written by another
  hand than the examples. Tuning looks at the tune set only; the holdout is reported as figures,
  never row by row;
- followups.jsonl: 20 neutral requests that follow an assistant statement ("now do chapter three"),
  which the turn context must not turn into complaints (written with the code, so a tune set).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from convolens.enrich import embedding, sentiment

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
SETS = {"sentiment": False, "complaints_tune": False, "complaints_holdout": True, "followups": False}  # name: holdout


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def evaluate(rows: list[dict]) -> dict:
    texts = [r["text"] for r in rows]
    previous = [r.get("previous_assistant") for r in rows]
    results = sentiment.score(texts, embedding.embed(texts), previous=previous)
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
    for name, holdout in SETS.items():
        result = evaluate(load(name))
        print(f"{name}: n={result['n']} accuracy={result['accuracy']} recall={result['recall']}")
        if not holdout:
            for expected, got, text in result["wrong"]:
                print(f"  expected {expected:8} got {got:8} {text}", file=sys.stderr)
