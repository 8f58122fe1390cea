"""Chooses the turn priors of ``enrich/sentiment.py`` (how much a reply that stated or asked something moves
a user message's neutral chance) by cross-validation on the complaint training sets, not by reading one
set's misses.

    python bench/tune_sentiment_turn.py

The labelled rows of ``export_complaint_training.TRAIN_SETS`` are cut into 5 folds. For each fold the
classifier is trained as ``sentiment._classifier`` trains it (the examples, plus the other folds' rows),
and ``sentiment.score`` labels the fold's rows, in their turn, under each candidate of the grid. It prints
the out-of-fold accuracy and negative recall of every candidate, best first. The holdout and fresh sets
are never read here.
"""

from __future__ import annotations

import itertools
import json
from unittest import mock

import numpy as np
from export_complaint_training import DATA, TRAIN_SETS
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from convolens.enrich import complaint_examples, embedding, sentiment, sentiment_examples

GRID = {
    "NEUTRAL_AFTER_STATEMENT": (0.3, 0.4, 0.5, 0.7, 1.0),
    "NEUTRAL_QUESTION_AFTER_STATEMENT": (0.5, 0.7, 1.0),
    "NEUTRAL_AFTER_QUESTION": (1.0, 2.0, 3.0),
}


def main() -> None:
    rows = [json.loads(line) for name in TRAIN_SETS for line in (DATA / name).read_text().splitlines() if line.strip()]
    base_texts, base_labels = [], []
    for label in sentiment.LABELS:
        examples = getattr(sentiment_examples, label.upper()) + getattr(complaint_examples, label.upper())
        base_texts += examples
        base_labels += [label] * len(examples)
    base = embedding.embed(base_texts)
    texts = [r["text"] for r in rows]
    vectors = embedding.embed(texts)
    labels = np.array([r["label"] for r in rows])
    previous = [r.get("previous_assistant") for r in rows]
    folds = []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(vectors, labels):
        model = LogisticRegression(C=3.0, max_iter=2000, class_weight="balanced")
        model.fit(np.vstack([base, vectors[train]]), base_labels + labels[train].tolist())
        folds.append((model, test))
    results = []
    for values in itertools.product(*GRID.values()):
        got = np.empty(len(rows), dtype=object)
        for model, test in folds:
            with (
                mock.patch.object(sentiment, "_classifier", lambda model=model: model),
                mock.patch.multiple(sentiment, **dict(zip(GRID, values, strict=True))),
            ):
                scored = sentiment.score([texts[i] for i in test], vectors[test], previous=[previous[i] for i in test])
            got[test] = [s.label for s in scored]
        accuracy = float(np.mean(got == labels))
        negative = float(np.mean(got[labels == "negative"] == "negative"))
        results.append((accuracy, negative, values))
    print(f"{len(rows)} rows of {', '.join(TRAIN_SETS)}, 5-fold out-of-fold figures; {', '.join(GRID)}:")
    for accuracy, negative, values in sorted(results, reverse=True)[:12]:
        print(f"  {values}: accuracy {accuracy:.4f}, negative recall {negative:.4f}")


if __name__ == "__main__":
    main()
