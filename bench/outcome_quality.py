"""Outcome accuracy and per-signal precision/recall on the labelled conversations of tests/data:
outcomes_tune, train2, fresh, holdout and fresh3 (.jsonl). Since stop 32 the outcome model trains on all
five (bench/train_outcomes.py; each of the last three was evaluated once before), so their figures here
say little: the honest ones are ``train_outcomes.py --loso`` (each set held out in turn) and a new set's,
with --set.

python bench/outcome_quality.py            # every set's figures; --misses lists the training sets' misses
python bench/outcome_quality.py --set PATH # one labelled file's figures only (a blind set: no rows printed)

A file for ``--set``: JSON lines with keys id, lang, messages (role, content), outcome (resolved,
unresolved, abandoned or unknown), signals and hard. The headline is the accuracy over the rows labelled
resolved, unresolved or abandoned (a row read ``unknown`` counts as wrong; rows labelled ``unknown`` are
left out of it and counted in the all-four figure), then each signal's precision and recall.

Each conversation goes through what the worker does: its user turns are embedded (as the pipeline does),
the store's window applies (last 40 messages, 2,000 characters each), then ``outcomes.assess_many``.
Accuracy is given over all four outcomes and over the rows labelled resolved, unresolved or abandoned.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from convolens.enrich import embedding, outcomes
from convolens.store.enrichment import OUTCOME_CHARS, OUTCOME_WINDOW, Turn
from convolens.store.outcome_fields import SIGNALS

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
THREE = ("resolved", "unresolved", "abandoned")


def transcripts(rows: list[dict]) -> dict[int, list[Turn]]:
    user_texts = [m["content"] for r in rows for m in r["messages"] if m["role"] == "user"]
    vectors = iter(embedding.embed(user_texts))
    out = {}
    for key, r in enumerate(rows):
        turns = []
        for m in r["messages"]:
            vector = embedding.to_bytes(next(vectors)) if m["role"] == "user" else None
            turns.append(Turn(m["role"], m.get("kind", "message"), m.get("name"), m["content"][:OUTCOME_CHARS], vector))
        out[key] = turns[-OUTCOME_WINDOW:]
    return out


def evaluate(rows: list[dict]) -> dict:
    found = outcomes.assess_many(transcripts(rows))
    got = [found[i] for i in range(len(rows))]
    right = [r["outcome"] == g[0] for r, g in zip(rows, got, strict=True)]
    three = [ok for r, ok in zip(rows, right, strict=True) if r["outcome"] in THREE]
    signals = {}
    for s in SIGNALS:
        gold = [s in r["signals"] for r in rows]
        guess = [s in g[1] for g in got]
        if not any(gold) and not any(guess):
            continue
        hits = sum(a and b for a, b in zip(gold, guess, strict=True))
        signals[s] = {
            "precision": round(hits / sum(guess), 3) if any(guess) else None,
            "recall": round(hits / sum(gold), 3) if any(gold) else None,
            "n": sum(gold),
        }
    confusion = Counter((r["outcome"], g[0]) for r, g in zip(rows, got, strict=True))
    return {
        "n": len(rows),
        "accuracy": round(sum(right) / len(rows), 4),
        "accuracy_three": round(sum(three) / len(three), 4) if three else None,
        "signals": signals,
        "confusion": dict(sorted(confusion.items())),
        "got": got,
        "misses": [
            (r, g) for r, g, ok in zip(rows, got, right, strict=True) if not ok or set(r["signals"]) != set(g[1])
        ],
    }


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def report(name: str, result: dict) -> None:
    three = result["accuracy_three"]
    print(f"{name}: n={result['n']} accuracy={result['accuracy']} (resolved/unresolved/abandoned rows: {three})")
    for s, v in result["signals"].items():
        print(f"  {s:16} precision={v['precision']} recall={v['recall']} (n={v['n']})")
    print("  confusion (gold, got): " + ", ".join(f"{a}->{b}: {n}" for (a, b), n in result["confusion"].items()))


# name: whether its rows may be read (a set trained or tuned on: all of them since stop 32). A new blind set
# is measured with --set, figures only.
SETS = {
    "outcomes_tune.jsonl": True,
    "outcomes_train2.jsonl": True,
    "outcomes_holdout.jsonl": True,
    "outcomes_fresh.jsonl": True,
    "outcomes_fresh3.jsonl": True,
    "outcomes_fresh4.jsonl": True,
    "outcomes_fresh5.jsonl": True,  # blind once (0.727, issue 24), trained on since
    "outcomes_fresh6.jsonl": True,  # blind once in stop 34 (0.720 over three classes), in no fit yet
}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--misses", action="store_true", help="list the training sets' misses (never the others')")
    parser.add_argument("--set", type=Path, help="a labelled file of conversations: its figures only (no rows)")
    args = parser.parse_args()
    if args.set:
        rows = [json.loads(line) for line in args.set.read_text().splitlines() if line.strip()]
        report(args.set.name, evaluate(rows))
        sys.exit(0)
    for name, readable in SETS.items():
        if not (DATA / name).exists():
            continue
        result = evaluate(load(name))
        report(name.removesuffix(".jsonl"), result)
        if args.misses and readable:
            for r, (outcome, signals) in result["misses"]:
                print(f"{r['id']} gold {r['outcome']} {sorted(r['signals'])} got {outcome} {signals}", file=sys.stderr)
                for m in r["messages"]:
                    print(f"    {m['role'][0]} {m['content'][:100]}", file=sys.stderr)
