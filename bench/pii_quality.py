"""PII scrubbing quality on the labelled sets, and its speed.

    .venv/bin/python bench/pii_quality.py            # quality on every set, speed on pii.jsonl
    .venv/bin/python bench/pii_quality.py --typical  # µs to scrub a typical message (median of 7 runs)

Sets (tests/data): pii.jsonl and pii_multilingual_tune.jsonl, which the rules were tuned on, and
pii_multilingual_holdout.jsonl, written independently and never read row by row: only its aggregate
figures are printed. Recall: a planted value counts as found when it no longer appears in the scrubbed
text. Clean texts altered: texts without PII that the scrubber changed anyway. Targets: recall >= 0.99,
clean texts altered <= 0.02.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from convolens.enrich.pii import scrub

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
TUNED_ON = ("pii.jsonl", "pii_multilingual_tune.jsonl")
HELD_OUT = "pii_multilingual_holdout.jsonl"
# Typical chat messages: none with PII (most), one with numbers that are not PII, one with PII.
TYPICAL = (
    "Hi! I've been trying to export my dashboard to PDF for the last hour and it keeps failing with a "
    "generic error. I already cleared the cache, logged out and in again, and tried another browser. "
    "Is there a known issue, or is there something wrong with my account settings?",
    "My order 55812 from March 3 arrived with 2 of the 5 items missing; the invoice says $149.97 and "
    "I was charged twice. Can you refund one of the charges and send the rest?",
    "Please call me back at (415) 555-2671 or write to jane.roe@example.net, I'm free after 5pm.",
)


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


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def typical() -> None:
    """µs to scrub each typical message: median of 7 runs of 2,000 scrubs."""
    for text in TYPICAL:
        runs = []
        for _ in range(7):
            started = time.process_time()
            for _ in range(2000):
                scrub(text)
            runs.append((time.process_time() - started) / 2000 * 1e6)
        print(f"{statistics.median(runs):7.1f} µs  {text[:60]}…")


def main() -> None:
    if "--typical" in sys.argv:
        typical()
        return
    for name in TUNED_ON:
        result = evaluate(_rows(name))
        print(f"{name}: {result['with_pii']} texts with PII, {result['clean']} without")
        print(f"  recall {result['recall']:.3f}, clean texts altered {result['clean_altered']:.3f}")
        for kind, recall in result["recall_by_kind"].items():
            print(f"    {kind:<8} {recall:.3f}")
        for kind, text in result["missed"]:
            print(f"  missed {kind}: {text}")
        for line in result["altered"]:
            print(f"  altered: {line}")
    held_out = evaluate(_rows(HELD_OUT))  # aggregate figures only, never the rows
    print(f"{HELD_OUT}: {held_out['with_pii']} texts with PII, {held_out['clean']} without")
    print(f"  recall {held_out['recall']:.3f}, clean texts altered {held_out['clean_altered']:.3f}")
    texts = [r["text"] for r in _rows("pii.jsonl")]
    passes = []
    for _ in range(5):
        started = time.perf_counter()
        for text in texts:
            scrub(text)
        passes.append(len(texts) / (time.perf_counter() - started))
    print(f"speed: {statistics.median(passes):,.0f} messages/s on pii.jsonl (median of 5 passes, one core)")


if __name__ == "__main__":
    main()
