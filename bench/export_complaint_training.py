"""Writes ``src/convolens/enrich/complaint_training.py``: the labelled user messages of the complaint
training sets of tests/data, as training examples of the sentiment classifier (``enrich/sentiment.py``
trains on them beside ``sentiment_examples`` and ``complaint_examples`` when first used).

    python bench/export_complaint_training.py

Only the sets in ``TRAIN_SETS`` (written by another hand than the code, and labelled for training): since
stop 39 twenty-five of them, each but tune and train2 evaluated once before it joined (fresh5 0.821, fresh6
0.767, fresh7 0.775, fresh8 0.817, fresh9 0.879, fresh10 0.842, fresh11 0.896, fresh12 0.854, fresh13 0.829,
fresh14 0.913, fresh15 0.842, fresh16 0.854, fresh17 0.921, fresh18 0.896, fresh19 0.892, fresh20 0.908,
fresh21 0.896, fresh22 0.888, fresh23 0.908; bench/README.md); complaints_fresh24 ... fresh26 measure the
classifier trained on them.
A message is exported once (the first label wins), in the order of the sets, so the same sets give the same
module.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
OUT = ROOT / "src" / "convolens" / "enrich" / "complaint_training.py"
TRAIN_SETS = (
    "complaints_tune.jsonl",
    "complaints_train2.jsonl",
    "complaints_fresh.jsonl",
    "complaints_holdout.jsonl",
    "complaints_fresh3.jsonl",
    "complaints_fresh4.jsonl",
    "complaints_fresh5.jsonl",
    "complaints_fresh6.jsonl",
    "complaints_fresh7.jsonl",
    "complaints_fresh8.jsonl",
    "complaints_fresh9.jsonl",
    "complaints_fresh10.jsonl",
    "complaints_fresh11.jsonl",
    "complaints_fresh12.jsonl",
    "complaints_fresh13.jsonl",
    "complaints_fresh14.jsonl",
    "complaints_fresh15.jsonl",
    "complaints_fresh16.jsonl",
    "complaints_fresh17.jsonl",
    "complaints_fresh18.jsonl",
    "complaints_fresh19.jsonl",
    "complaints_fresh20.jsonl",
    "complaints_fresh21.jsonl",
    "complaints_fresh22.jsonl",
    "complaints_fresh23.jsonl",
)
LABELS = ("negative", "neutral", "positive")


def main() -> None:
    used = [name for name in TRAIN_SETS if (DATA / name).exists()]
    seen: set[str] = set()
    rows: dict[str, list[str]] = {label: [] for label in LABELS}
    for name in used:
        for line in (DATA / name).read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            text = " ".join(row["text"].split())
            if row["label"] in rows and text and text not in seen:
                seen.add(text)
                rows[row["label"]].append(text)
    lines = [
        '"""Labelled user messages of the complaint training sets, for the sentiment classifier: written by',
        f"``bench/export_complaint_training.py`` from {', '.join(used)} (tests/data). Do not edit: re-export.",
        "",
        "They were written by another hand than the code, in several languages; their labels read each",
        "message in its turn (most answer an assistant reply), the classifier learns from the text alone.",
        '"""',
        "",
        "# ruff: noqa: RUF001",
        "# fmt: off",
    ]
    for label in LABELS:
        lines.append(f"{label.upper()} = [")
        lines += [f"    {json.dumps(text, ensure_ascii=False)}," for text in rows[label]]
        lines.append("]")
    if any(len(line) > 120 for line in lines):  # the messages are as written, however long
        lines[lines.index("# ruff: noqa: RUF001")] = "# ruff: noqa: RUF001, E501"
    lines += ["# fmt: on", ""]
    OUT.write_text("\n".join(lines))
    print(f"wrote {OUT}: " + ", ".join(f"{label} {len(rows[label])}" for label in LABELS))


if __name__ == "__main__":
    main()
