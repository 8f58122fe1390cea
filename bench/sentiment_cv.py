"""Chooses the sentiment classifier and its turn rules by leave-one-set-out cross-validation over the
complaint training sets, not by reading one set's misses.

    python bench/sentiment_cv.py            # the current settings: each set held out in turn
    python bench/sentiment_cv.py --grid     # the candidates compared, best first

Each labelled set (``CV_SETS``: the training sets of ``export_complaint_training.TRAIN_SETS``, tune, train2,
fresh, holdout, fresh3 … fresh8, each written by another hand, in several languages) is held out in turn;
the classifier is trained as ``sentiment._classifier`` trains it (``sentiment.train_classifier``: the
hand-written examples, plus the other sets' rows), and ``sentiment.score`` labels the held-out rows in their
turn (the assistant reply before each). Holding out a whole set measures what a set written by another
person scores, which 5-fold splits of one pool overstate (one writer's phrasings land on both sides). Since
stop 32 every complaint set in tests/data is a training set (holdout and fresh3 were each evaluated once
before); a new set never trained on is measured with ``sentiment_quality.py --set PATH``."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or through runpy (the tests)
from export_complaint_training import DATA, TRAIN_SETS

from convolens.enrich import embedding, sentiment, sentiment_wording

# Candidates: the classifier (linear: the logistic regression on the embedding of before; kernel: over
# the RBF kernel's features, KERNEL_COMPONENTS), its C, and the turn priors (after a statement, a
# question after a statement, after a question).
CLASSIFIERS = {"linear C=3": ("linear", 3.0), "kernel C=3": ("kernel", 3.0), "kernel C=10": ("kernel", 10.0),
               "kernel C=30": ("kernel", 30.0)}  # fmt: skip
PRIORS = ((0.4, 0.5, 3.0), (0.2, 0.3, 3.0), (0.6, 0.7, 3.0))
Embed = Callable[[list[str]], np.ndarray]
CURRENT = ("kernel", sentiment.CLASSIFIER_C)
CURRENT_PRIORS = (
    sentiment.NEUTRAL_AFTER_STATEMENT,
    sentiment.NEUTRAL_QUESTION_AFTER_STATEMENT,
    sentiment.NEUTRAL_AFTER_QUESTION,
)


def cached_embed() -> Embed:
    """``embedding.embed`` with a memo: the sarcasm check embeds the same clauses in every fold."""
    real = embedding.embed
    memo: dict[str, np.ndarray] = {}

    def embed(texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in memo]
        if missing:
            memo.update(zip(missing, real(missing), strict=True))
        return np.array([memo[t] for t in texts], dtype=np.float32).reshape(len(texts), embedding.DIMENSIONS)

    return embed


def _train(
    kind: str, c: float, hand: np.ndarray, hand_texts: list[str], hand_labels: list[str], rows: list[dict], embed: Embed
):  # type: ignore[no-untyped-def]
    """The embedding classifier of ``kind`` and the wording classifier (enrich/sentiment_wording.py),
    trained on the hand-written examples and ``rows``."""
    vectors = np.vstack([hand, embed([r["text"] for r in rows])])
    labels = hand_labels + [r["label"] for r in rows]
    wording = sentiment_wording.train(hand_texts + [r["text"] for r in rows], labels)
    if kind == "kernel":
        with mock.patch.object(sentiment, "CLASSIFIER_C", c):
            return sentiment.train_classifier(vectors, labels), wording
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit(vectors, labels), wording


def _without(train: list[dict], held: list[dict]) -> list[dict]:
    """``train`` less the rows whose text is also in the held-out set (a message in two sets)."""
    texts = {" ".join(r["text"].split()) for r in held}
    return [r for r in train if " ".join(r["text"].split()) not in texts]


def _labels(models, prior: tuple[float, float, float], rows: list[dict], embed: Embed) -> list[str]:  # type: ignore[no-untyped-def]
    """``sentiment.score``'s labels of ``rows`` in their turn, with ``models`` (``_train``'s) as the classifiers."""
    texts = [r["text"] for r in rows]
    previous = [r.get("previous_assistant") for r in rows]
    model, wording = models
    with (
        mock.patch.object(sentiment, "_classifier", lambda: model),
        mock.patch.object(sentiment_wording, "classifier", lambda: wording),
        mock.patch.multiple(
            sentiment,
            NEUTRAL_AFTER_STATEMENT=prior[0],
            NEUTRAL_QUESTION_AFTER_STATEMENT=prior[1],
            NEUTRAL_AFTER_QUESTION=prior[2],
        ),
    ):
        return [s.label for s in sentiment.score(texts, embed(texts), previous=previous)]


def _load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def leave_one_set_out(
    kind: str,
    c: float,
    prior: tuple[float, float, float],
    sets: dict[str, list[dict]],
    embed: Embed,
    held_out: tuple[str, ...] | None = None,
) -> tuple[float, float, dict[str, tuple[float, float]]]:
    """Accuracy and negative recall over every row of ``sets`` (of the ``held_out`` ones only, if given),
    each set labelled by a classifier trained on all the others; and each set's own pair."""
    hand_texts, hand_labels = sentiment.training_examples(labelled=False)
    hand = embed(hand_texts)
    gold: list[str] = []
    got: list[str] = []
    per_set = {}
    with mock.patch.object(embedding, "embed", embed):
        for held, rows in sets.items():
            if held_out is not None and held not in held_out:
                continue
            train = [r for other in sets if other != held for r in sets[other]]
            models = _train(kind, c, hand, hand_texts, hand_labels, _without(train, rows), embed)
            labels = _labels(models, prior, rows, embed)
            per_set[held] = _rates([r["label"] for r in rows], labels)
            gold += [r["label"] for r in rows]
            got += labels
    accuracy, negative = _rates(gold, got)
    return accuracy, negative, per_set


# Every training set, each held out in turn: since stop 38 the shipped classifier trains on all seventeen.
CV_SETS = TRAIN_SETS


def training_sets() -> dict[str, list[dict]]:
    return {name: _load(name) for name in CV_SETS if (DATA / name).exists()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grid", action="store_true", help="compare the candidates, not only the current settings")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    embed = cached_embed()
    sets = training_sets()
    classifiers = CLASSIFIERS if args.grid else {"current": CURRENT}
    priors = PRIORS if args.grid else (CURRENT_PRIORS,)
    results = []
    for (name, (kind, c)), prior in itertools.product(classifiers.items(), priors):
        accuracy, negative, per_set = leave_one_set_out(kind, c, prior, sets, embed)
        results.append((accuracy, negative, name, prior))
        figures = f"accuracy {accuracy:.3f}, negative recall {negative:.3f}"
        held = ", ".join(
            f"{n.removeprefix('complaints_').removesuffix('.jsonl')} {a:.3f}/{r:.3f}" for n, (a, r) in per_set.items()
        )
        print(f"{name:12} priors {prior}: {figures} | {held}", flush=True)
    if args.grid:
        print("best first:")
        for accuracy, negative, name, prior in sorted(results, key=lambda r: (-r[0], -r[1])):
            print(f"  {name:12} priors {prior}: {accuracy:.3f} / {negative:.3f}")


def _rates(gold: list[str], got: list[str]) -> tuple[float, float]:
    g, p = np.array(gold), np.array(got)
    return float(np.mean(g == p)), float(np.mean(p[g == "negative"] == "negative"))


if __name__ == "__main__":
    main()
