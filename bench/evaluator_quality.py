"""Quality of the offline evaluators that judge meaning, on labelled sets kept in two parts.

``semantic_match``: pairs (a, b, paraphrase?) in tests/data/paraphrase_pairs_{tune,holdout}.jsonl.
The threshold is chosen on the tuning part only (the one with the best F1; shipped rounded in
evaluations/semantic.py ``THRESHOLD``), then precision/recall are reported on both parts at the
shipped threshold. ``attempts_answer``: responses labelled answer / refusal-or-deflection; the
classifier is trained on its examples (evaluations/attempts_examples.py, the tuning part) and
reported there (5-fold cross-validated) and on tests/data/attempts_answer_holdout.jsonl.

"fresh (never tuned)": tests/data/semantic_pairs_fresh.jsonl and attempts_answer_fresh.jsonl, written
blind by another session and read once, after the evaluators were final (see bench/README.md): nothing
(threshold, examples, model) may be changed because of what they show.

    PYTHONPATH=src .venv/bin/python bench/evaluator_quality.py
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def prf(predicted: list[bool], actual: list[bool]) -> tuple[float, float, float]:
    tp = sum(p and a for p, a in zip(predicted, actual, strict=True))
    fp = sum(p and not a for p, a in zip(predicted, actual, strict=True))
    fn = sum(a and not p for p, a in zip(predicted, actual, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def similarities(pairs: list[dict]) -> np.ndarray:
    from convolens.enrich import embedding

    a = embedding.embed([p["a"] for p in pairs])
    b = embedding.embed([p["b"] for p in pairs])
    return np.sum(a * b, axis=1)


def semantic_match() -> None:
    from convolens.evaluations.semantic import THRESHOLD

    tune, holdout = load("paraphrase_pairs_tune.jsonl"), load("paraphrase_pairs_holdout.jsonl")
    fresh = load("semantic_pairs_fresh.jsonl")
    scores = {"tune": similarities(tune), "holdout": similarities(holdout), "fresh": similarities(fresh)}
    labels = {"tune": [p["paraphrase"] for p in tune], "holdout": [p["paraphrase"] for p in holdout],
              "fresh": [p["paraphrase"] for p in fresh]}  # fmt: skip
    best = max((prf(list(scores["tune"] >= t), labels["tune"])[2], t) for t in np.arange(0.30, 0.96, 0.01))
    print(f"semantic_match: best F1 on the tuning part at threshold {best[1]:.2f} (F1 {best[0]:.3f});"
          f" shipped THRESHOLD = {THRESHOLD:.2f}")  # fmt: skip
    for part, pairs in (("tune", tune), ("holdout", holdout), ("fresh", fresh)):
        predicted = list(scores[part] >= THRESHOLD)
        p, r, f = prf(predicted, labels[part])
        print(f"  {part:8s} {len(pairs):3d} pairs  precision {p:.3f}  recall {r:.3f}  F1 {f:.3f}")
        by_kind: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
        for pair, guess in zip(pairs, predicted, strict=True):
            by_kind["cross-lingual" if "-" in pair["lang"] else "same language"].append((guess, pair["paraphrase"]))
        for kind, found in sorted(by_kind.items()):
            p, r, f = prf([g for g, _ in found], [a for _, a in found])
            print(f"    {kind:14s} {len(found):3d} pairs  precision {p:.3f}  recall {r:.3f}")
        if part == "fresh":  # blind: its rows are not listed, so nothing is tuned on them
            continue
        misses = [(float(s), q) for s, q, g in zip(scores[part], pairs, predicted, strict=True) if g != q["paraphrase"]]
        for score, pair in misses:
            print(f"    wrong at {score:.3f} ({'paraphrase' if pair['paraphrase'] else 'different'}):"
                  f" {pair['a'][:60]!r} / {pair['b'][:60]!r}")  # fmt: skip


def attempts_answer() -> None:
    try:
        from convolens.evaluations import attempts
    except ImportError:
        return
    if not hasattr(attempts, "classifier"):
        return
    from sklearn.model_selection import cross_val_predict

    from convolens.enrich import embedding
    from convolens.evaluations.attempts_examples import EXAMPLES

    texts = [t for t, _ in EXAMPLES]
    labels = [label == "answer" for _, label in EXAMPLES]
    model = attempts.fresh_model()
    guessed = cross_val_predict(model, embedding.embed(texts), labels, cv=5)
    p, r, f = prf([bool(g) for g in guessed], labels)
    print("attempts_answer (positive class: the response attempts an answer)")
    print(
        f"  tune     {len(texts):3d} responses (5-fold cross-validated)  precision {p:.3f}  recall {r:.3f}  F1 {f:.3f}"
    )
    holdout = load("attempts_answer_holdout.jsonl")
    predicted = [attempts.attempts(row["response"])[0] for row in holdout]
    actual = [row["label"] == "answer" for row in holdout]
    p, r, f = prf(predicted, actual)
    print(f"  holdout  {len(holdout):3d} responses  precision {p:.3f}  recall {r:.3f}  F1 {f:.3f}")
    refusals = [not x for x in actual]
    p, r, f = prf([not x for x in predicted], refusals)
    print(f"           (refusal/deflection as the positive class: precision {p:.3f}  recall {r:.3f})")
    for row, guess in zip(holdout, predicted, strict=True):
        if guess != (row["label"] == "answer"):
            print(f"    wrong ({row['label']}, {row.get('lang', '?')}): {row['response'][:90]!r}")
    fresh = load("attempts_answer_fresh.jsonl")  # blind: figures only, no rows listed
    predicted = [attempts.attempts(row["response"])[0] for row in fresh]
    actual = [row["label"] == "answer" for row in fresh]
    p, r, f = prf(predicted, actual)
    print(f"  fresh    {len(fresh):3d} responses (never tuned)  precision {p:.3f}  recall {r:.3f}  F1 {f:.3f}")
    p, r, f = prf([not x for x in predicted], [not x for x in actual])
    print(f"           (refusal/deflection as the positive class: precision {p:.3f}  recall {r:.3f}  F1 {f:.3f})")
    english = [(g, a) for g, a, row in zip(predicted, actual, fresh, strict=True) if row["lang"] == "en"]
    others = [(g, a) for g, a, row in zip(predicted, actual, fresh, strict=True) if row["lang"] != "en"]
    for kind, found in (("English", english), ("other languages", others)):
        p, r, f = prf([g for g, _ in found], [a for _, a in found])
        print(f"    {kind:15s} {len(found):3d} responses  precision {p:.3f}  recall {r:.3f}  F1 {f:.3f}")


if __name__ == "__main__":
    semantic_match()
    attempts_answer()
