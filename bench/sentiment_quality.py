"""Sentiment accuracy (3 classes) on the labelled user messages of tests/data.

    python bench/sentiment_quality.py            # every set: accuracy, per-class recall; training sets' misses
    python bench/sentiment_quality.py --set PATH # one labelled file's figures only (a blind set: no rows printed)

A file for ``--set``: JSON lines with keys text, previous_assistant (the reply before it, or absent),
label (negative, neutral or positive), lang and hard. It prints the 3-class accuracy, each class's recall
(negative recall is the complaint target's second figure) and the same per language and for hard rows.

- sentiment.jsonl: 240 messages, one label each, no context (the set the classifier was tuned on);
- complaints_tune.jsonl, complaints_train2.jsonl, complaints_fresh.jsonl, complaints_holdout.jsonl,
  complaints_fresh3.jsonl: complaints without a negative word and their look-alikes, most with the
  assistant reply before them (``previous_assistant``), written by other hands than the examples. The
  classifier trains on all five (``bench/export_complaint_training.py``; holdout and fresh3 were
  evaluation sets until their evaluations, see bench/README.md), so their figures here say little: the
  honest ones are ``bench/sentiment_cv.py``'s (each set held out in turn) and a new set's, with --set;
- followups.jsonl: 20 neutral requests that follow an assistant statement ("now do chapter three"),
  which the turn context must not turn into complaints (written with the code, so a tune set).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from convolens.enrich import embedding, sentiment

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_complaint_training import TRAIN_SETS

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
# name: whether its rows may be read (a set trained or tuned on: every set in tests/data now, see
# bench/README.md; a new blind set is measured with --set, figures only).
SETS = {
    "sentiment": True,
    **{name.removesuffix(".jsonl"): True for name in TRAIN_SETS},
    "followups": True,
    # Blind once, then trained on (TRAIN_SETS): fresh9 0.879 / 0.906 (stop 36), fresh10 0.842 / 0.854 (stop 36),
    # fresh11 0.896 / 0.911 and fresh12 0.854 / 0.975 (stop 37), fresh13 0.829 / 0.900, fresh14 0.913 / 0.889,
    # fresh15 0.842 / 0.825, fresh16 0.854 / 0.850, fresh17 0.921 / 0.938 (stop 38), fresh18 0.896 / 0.863,
    # fresh19 0.892 / 0.963, fresh20 0.908 / 0.938, fresh21 0.896 / 0.875, fresh22 0.888 / 0.963, fresh23 0.908 /
    # 0.950 (stop 39, the nineteen-set classifier).
    "complaints_fresh24": True,  # blind once in stop 39 (0.925 / 0.975; main 0.896 / 0.925), in no fit
    "complaints_fresh25": True,  # blind once in stop 39 (0.954 / 0.951; main 0.942 / 0.938), in no fit
    "complaints_fresh26": True,  # blind once in stop 39 (0.950 / 0.963; main 0.925 / 0.925), in no fit
}


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


def load_path(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def figures(name: str, rows: list[dict]) -> dict:
    """A set's figures, overall and per language and for its hard rows (never its rows)."""
    result = evaluate(rows)
    print(f"{name}: n={result['n']} accuracy={result['accuracy']} recall={result['recall']}")
    print(f"  negative recall={result['recall'].get('negative')}")
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(f"lang={r.get('lang')}", []).append(r)
        groups.setdefault(f"hard={bool(r.get('hard'))}", []).append(r)
    for group, members in sorted(groups.items()):
        part = evaluate(members)
        print(f"  {group}: n={part['n']} accuracy={part['accuracy']} negative recall={part['recall'].get('negative')}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", type=Path, help="a labelled file of complaints: its figures only (no rows)")
    args = parser.parse_args()
    if args.set:
        figures(args.set.name, load_path(args.set))
        sys.exit(0)
    for name, readable in SETS.items():
        if not (DATA / f"{name}.jsonl").exists():
            continue
        result = evaluate(load(name))
        print(f"{name}: n={result['n']} accuracy={result['accuracy']} recall={result['recall']}")
        if readable:
            for expected, got, text in result["wrong"]:
                print(f"  expected {expected:8} got {got:8} {text}", file=sys.stderr)
