"""Language detection accuracy and speed on tests/data/languages.jsonl.

.venv/bin/python bench/language_quality.py
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path

from convolens.enrich.language import detect

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "languages.jsonl"


def evaluate(rows: list[dict]) -> dict:
    wrong = [(r["lang"], detect(r["text"]), r["text"]) for r in rows if detect(r["text"]) != r["lang"]]
    return {"accuracy": 1 - len(wrong) / len(rows), "wrong": wrong, "languages": len({r["lang"] for r in rows})}


def main() -> None:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    result = evaluate(rows)
    print(f"{len(rows)} messages in {result['languages']} languages: {dict(Counter(r['lang'] for r in rows))}")
    print(f"accuracy {result['accuracy']:.3f}  (target >= 0.95)")
    for expected, got, text in result["wrong"]:
        print(f"  expected {expected}, got {got}: {text}")
    texts = [r["text"] for r in rows]
    rates = []
    for _ in range(5):
        started = time.perf_counter()
        for text in texts:
            detect(text)
        rates.append(len(texts) / (time.perf_counter() - started))
    print(f"speed: {statistics.median(rates):,.0f} messages/s (median of 5 passes)")


if __name__ == "__main__":
    main()
