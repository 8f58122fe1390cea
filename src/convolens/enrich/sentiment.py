"""Sentiment of a user's message: a score in [-1, 1] and a label (negative, neutral, positive).

Two signals, because each fails where the other is good:
- a logistic regression on multilingual sentence embeddings (``enrich.embedding``), trained when first
  used on the example messages of ``sentiment_examples``: it catches implicit complaints with no
  sentiment word ("it still crashes", "I asked for Python") in any of the encoder's languages;
- VADER (the ``vaderSentiment`` package, lexicon inside the wheel), an English lexicon with rules for
  negation, intensifiers and emoji: where its compound score is strong it is rarely wrong, so it
  decides the label there and is averaged into the score.
``bench/sentiment_quality.py`` measures the blend on ``tests/data/sentiment.jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from convolens.enrich import complaint_examples, embedding, sentiment_examples
from convolens.enrich.compute import compute_lock

LABELS = ("negative", "neutral", "positive")
# Measured on the labelled set: 0.6 adds two points of accuracy over the classifier alone; 0.4 loses one.
VADER_DECIDES_AT = 0.6


@dataclass(frozen=True)
class Sentiment:
    score: float
    label: str


@cache
def _vader():  # type: ignore[no-untyped-def]
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@cache
def _classifier():  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    texts: list[str] = []
    labels: list[str] = []
    for label, examples in zip(
        LABELS,
        (sentiment_examples.NEGATIVE, sentiment_examples.NEUTRAL, sentiment_examples.POSITIVE),
        strict=True,
    ):
        examples = examples + getattr(complaint_examples, label.upper())
        texts += examples
        labels += [label] * len(examples)
    model = LogisticRegression(C=3.0, max_iter=2000, class_weight="balanced")
    model.fit(embedding.embed(texts), labels)
    assert tuple(model.classes_) == LABELS  # sorted alphabetically, which is also negative < neutral < positive
    return model


def lexicon_scores(texts: list[str]) -> list[float]:
    """VADER's compound score of each text (pure Python: it can run while the encoder works)."""
    vader = _vader()
    return [vader.polarity_scores(t[:2000])["compound"] for t in texts]


def score(texts: list[str], vectors: np.ndarray, compounds: list[float] | None = None) -> list[Sentiment]:
    """Sentiment of each text, given its embedding (row ``i`` of ``vectors``) and, if already computed,
    its ``lexicon_scores``."""
    if not texts:
        return []
    with compute_lock:
        probabilities = _classifier().predict_proba(vectors)
    if compounds is None:
        compounds = lexicon_scores(texts)
    out = []
    for (negative, neutral, positive), compound in zip(probabilities, compounds, strict=True):
        value = float(positive - negative)
        label = LABELS[int(np.argmax((negative, neutral, positive)))]
        if abs(compound) >= VADER_DECIDES_AT:
            label = "positive" if compound > 0 else "negative"
            value = (value + compound) / 2
            # The label is VADER's: keep the score on its side of zero so that they never disagree.
            value = max(value, 0.05) if label == "positive" else min(value, -0.05)
        out.append(Sentiment(round(max(-1.0, min(1.0, value)), 4), label))
    return out
