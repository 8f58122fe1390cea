"""The wording half of the sentiment classifier: a logistic regression over character n-grams of the
message (TF-IDF of 2- to 5-character pieces within words), trained at first use on the same messages
as the embedding classifier (``sentiment.training_examples``).

The sentence encoder reads what a message is about; it blurs how it is said. "wait, I can do it from
the phone?!", "Rode home without a single skip." and "I requested June 21." sit near complaints in its
space, while their pieces ("?!", "not a single", "requested") carry the verdict, in every script (Korean
and Japanese pieces are characters). Blended with the encoder's chances (``sentiment.WORDING_WEIGHT``),
leave-one-set-out over the ten complaint sets went 0.865 / negative recall 0.893 → 0.883 / 0.914
(bench/README.md, stop 37). Training takes under a second of CPU, so it is not cached on disk.
"""

from __future__ import annotations

from functools import cache

import numpy as np

# Characters of a message read: the n-grams of a longer text add nothing but CPU.
MAX_CHARS = 2000
NGRAMS = (2, 5)
# Pieces seen in fewer training messages are left out (typos, names).
MIN_MESSAGES = 2
C = 3.0


class WordingClassifier:
    """``predict_proba(texts)``: (negative, neutral, positive) chances of each text from its wording."""

    def __init__(self, vectorizer, regression) -> None:  # type: ignore[no-untyped-def]
        self.vectorizer = vectorizer
        self.regression = regression
        self.classes_ = regression.classes_

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.classes_)))
        return self.regression.predict_proba(self.vectorizer.transform([t[:MAX_CHARS] for t in texts]))


def train(texts: list[str], labels: list[str]) -> WordingClassifier:
    """Deterministic: the same messages give the same model (bench/sentiment_cv.py trains one a fold)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(
        analyzer="char_wb", ngram_range=NGRAMS, min_df=MIN_MESSAGES, sublinear_tf=True, dtype=np.float32
    )
    features = vectorizer.fit_transform([t[:MAX_CHARS] for t in texts])
    regression = LogisticRegression(C=C, max_iter=3000, class_weight="balanced").fit(features, labels)
    return WordingClassifier(vectorizer, regression)


@cache
def classifier() -> WordingClassifier:
    from convolens.enrich import sentiment

    texts, labels = sentiment.training_examples()
    model = train(texts, labels)
    assert tuple(model.classes_) == sentiment.LABELS
    return model
