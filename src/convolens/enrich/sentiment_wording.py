"""The wording half of the sentiment classifier: a logistic regression over character n-grams of the
message (TF-IDF of 2- to 5-character pieces within words), trained at first use on the same messages
as the embedding classifier (``sentiment.training_examples``).

The sentence encoder reads what a message is about; it blurs how it is said. "wait, I can do it from
the phone?!", "Rode home without a single skip." and "I requested June 21." sit near complaints in its
space, while their pieces ("?!", "not a single", "requested") carry the verdict, in every script (Korean
and Japanese pieces are characters). Blended with the encoder's chances (``sentiment.WORDING_WEIGHT``),
leave-one-set-out over the ten complaint sets went 0.865 / negative recall 0.893 → 0.883 / 0.914
(bench/README.md, stop 37). What it trained is kept on disk like the embedding classifier
(``enrich/trained_cache.py``): its training took 1-2 s of CPU in every process that scores a message
(every worker and test server), growing with the training sets.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from convolens.enrich import trained_cache

# Characters of a message read: the n-grams of a longer text add nothing but CPU.
MAX_CHARS = 2000
NGRAMS = (2, 5)
# Pieces seen in fewer training messages are left out (typos, names).
MIN_MESSAGES = 2
C = 3.0
# The sentiment labels, in the order of every chance this module and enrich/sentiment.py give (sentiment.LABELS
# is this tuple: that module imports this one).
LABELS = ("negative", "neutral", "positive")


def vectorizer(**fitting):  # type: ignore[no-untyped-def]
    """The TF-IDF of a message's pieces that training fits (``min_df``) and a kept model restores
    (``vocabulary``, then its ``idf_``): one definition of which pieces and how they are weighed."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char_wb", ngram_range=NGRAMS, sublinear_tf=True, dtype=np.float32, **fitting)


class WordingClassifier:
    """``predict_proba(texts)``: (negative, neutral, positive) chances of each text from its wording: the
    TF-IDF of its ``pieces`` (their ``idf``), then a softmax of ``weights`` (a row a class) and ``intercept``."""

    def __init__(self, pieces: np.ndarray, idf: np.ndarray, weights: np.ndarray, intercept: np.ndarray) -> None:
        self.pieces = np.asarray(pieces, dtype=str)
        self.idf = np.asarray(idf, dtype=np.float32)
        self.weights = np.asarray(weights, dtype=np.float32)
        self.intercept = np.asarray(intercept, dtype=np.float32)
        self.classes_ = LABELS
        self.vectorizer = vectorizer(vocabulary={piece: i for i, piece in enumerate(self.pieces.tolist())})
        self.vectorizer.idf_ = self.idf

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.classes_)))
        features = self.vectorizer.transform([t[:MAX_CHARS] for t in texts])
        scores = np.asarray(features @ self.weights.T, dtype=np.float64) + self.intercept
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        return scores / scores.sum(axis=1, keepdims=True)


def train(texts: list[str], labels: list[str]) -> WordingClassifier:
    """Deterministic: the same messages give the same model (bench/sentiment_cv.py trains one a fold)."""
    from sklearn.linear_model import LogisticRegression

    fitted = vectorizer(min_df=MIN_MESSAGES)
    features = fitted.fit_transform([t[:MAX_CHARS] for t in texts])
    regression = LogisticRegression(C=C, max_iter=3000, class_weight="balanced").fit(features, labels)
    assert tuple(regression.classes_) == LABELS
    pieces = np.array(fitted.get_feature_names_out(), dtype=str)
    return WordingClassifier(pieces, fitted.idf_, regression.coef_, regression.intercept_)


@cache
def classifier() -> WordingClassifier:
    from sklearn import __version__ as sklearn_version

    from convolens.enrich import sentiment

    texts, labels = sentiment.training_examples()
    settings = repr((MAX_CHARS, NGRAMS, MIN_MESSAGES, C, LABELS, sklearn_version))
    of = trained_cache.key(settings, "\x1f".join(texts), "\x1f".join(labels))
    shapes = {"pieces": (None,), "idf": (None,), "weights": (len(LABELS), None), "intercept": (len(LABELS),)}
    kept = trained_cache.load("wording", of, shapes)
    if kept is not None and len(kept["pieces"]) == len(kept["idf"]) == kept["weights"].shape[1]:
        return WordingClassifier(kept["pieces"], kept["idf"], kept["weights"], kept["intercept"])
    model = train(texts, labels)
    arrays = {"pieces": model.pieces, "idf": model.idf, "weights": model.weights, "intercept": model.intercept}
    trained_cache.save("wording", of, arrays)
    return model
