"""PII scrubbing quality and speed on the labelled set in tests/data/pii.jsonl.

    .venv/bin/python bench/pii_quality.py

Recall: a planted value counts as found when it no longer appears in the scrubbed text. Clean texts
altered: texts without PII that the scrubber changed anyway. Speed: messages per second over the set,
median of 5 passes.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path

from convolens.enrich.pii import scrub

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "pii.jsonl"


def evaluate(rows: list[dict]) -> dict:
    planted: Counter[str] = Counter()
    found: Counter[str] = Counter()
    missed: list[tuple[str, str]] = []
    altered: list[str] = []
    clean = 0
    for row in rows:
        out = scrub(row["text"]).text
        if not row["pii"]:
            clean += 1
            if out != row["text"]:
                altered.append(f"{row['text']!r} -> {out!r}")
        for item in row["pii"]:
            planted[item["kind"]] += 1
            if item["value"] not in out:
                found[item["kind"]] += 1
            else:
                missed.append((item["kind"], row["text"]))
    return {
        "recall": sum(found.values()) / sum(planted.values()),
        "recall_by_kind": {k: found[k] / planted[k] for k in sorted(planted)},
        "clean_altered": len(altered) / clean,
        "missed": missed,
        "altered": altered,
        "with_pii": sum(1 for r in rows if r["pii"]),
        "clean": clean,
    }


def main() -> None:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    result = evaluate(rows)
    print(f"{result['with_pii']} texts with PII, {result['clean']} without")
    print(f"recall {result['recall']:.3f}  (target >= 0.98)")
    for kind, recall in result["recall_by_kind"].items():
        print(f"  {kind:<8} {recall:.3f}")
    print(f"clean texts altered {result['clean_altered']:.3f}  (target <= 0.03)")
    for kind, text in result["missed"]:
        print(f"  missed {kind}: {text}")
    for line in result["altered"]:
        print(f"  altered: {line}")
    texts = [r["text"] for r in rows]
    passes = []
    for _ in range(5):
        started = time.perf_counter()
        for text in texts:
            scrub(text)
        passes.append(len(texts) / (time.perf_counter() - started))
    print(f"speed: {statistics.median(passes):,.0f} messages/s (median of 5 passes, one core)")


if __name__ == "__main__":
    main()
