"""Quality of the optional name and place redaction (``enrich/names.py``) on ``tests/data/names.jsonl``:
40 English messages naming people or places (the strings that must go are listed) and 40 without.

    python bench/names_quality.py

Recall is the share of listed names no longer in the redacted text; "clean altered" the share of the
texts without names that came back changed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from convolens.enrich import names

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "names.jsonl"


def evaluate(rows: list[dict]) -> dict:
    redacted = names.redact([r["text"] for r in rows])
    planted = [(r, name, out) for r, out in zip(rows, redacted, strict=True) for name in r["names"]]
    missed = [(name, out) for _, name, out in planted if name in out]
    clean = [(r["text"], out) for r, out in zip(rows, redacted, strict=True) if not r["names"]]
    altered = [(text, out) for text, out in clean if text != out]
    return {
        "recall": 1 - len(missed) / len(planted),
        "clean_altered": len(altered) / len(clean),
        "missed": missed,
        "altered": altered,
    }


def main() -> None:
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    names.redact(["warm up"])
    started = time.perf_counter()
    result = evaluate(rows * 10)
    rate = 10 * len(rows) / (time.perf_counter() - started)
    print(f"recall {result['recall']:.3f}, clean texts altered {result['clean_altered']:.3f}, {rate:.0f} texts/s")
    for name, out in dict.fromkeys(result["missed"]):
        print(f"  missed {name!r}: {out}")
    for text, out in dict.fromkeys(result["altered"]):
        print(f"  altered: {text!r} -> {out!r}")


if __name__ == "__main__":
    main()
