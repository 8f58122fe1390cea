"""Suggested topics: clusters of the user messages that no topic covers, named by their words.

1. k-means on the unit embeddings (cosine geometry), with k chosen by the silhouette score of fits on a
   sample, so the number of topics is found, not configured; the chosen centres are then refined on
   every message with a few Lloyd steps in numpy (one 100,000 by 512 matrix product per step);
2. clusters too small to act on are dropped, and so are messages far from every centre;
3. each cluster is named by its most distinctive terms (c-TF-IDF: term frequency in the cluster times
   inverse frequency across clusters), as BERTopic does, with scikit-learn's vectorizer.
``bench/topic_quality.py`` measures agreement with true topics (adjusted Rand index) and the time at 100k.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from convolens.enrich.compute import compute_lock

SAMPLE = 6000
SILHOUETTE_SAMPLE = 3000
MIN_CLUSTER_SHARE = 0.01
MIN_CLUSTER_SIZE = 5
MEMBER_SIMILARITY = 0.2
SEARCH_DIMENSIONS = 64
# Words that say nothing about a topic in chat messages, on top of scikit-learn's English stop words.
CHAT_STOP_WORDS = {"please", "thanks", "thank", "hi", "hello", "hey", "want", "need", "does", "did", "just", "like",
                   "know", "tell", "help", "make", "way", "good", "best", "use", "using", "get", "ok", "okay",
                   "como", "que", "para", "por", "una", "los", "las", "del", "est", "les", "des", "pour", "une",
                   "ich", "wie", "der", "die", "das", "und", "mit", "mein", "meine",
                   "주세요", "알려", "어떻게", "하나요", "있나요", "뭔가요", "방법은", "해야", "좀"}  # fmt: skip


@dataclass
class Cluster:
    centroid: np.ndarray
    members: np.ndarray  # indexes into the input
    keywords: list[str]
    phrases: list[str]  # the members closest to the centre
    # The similarity to the centre that 90% of the members reach: what a message needs to belong.
    threshold: float = 0.45

    @property
    def name(self) -> str:
        return ", ".join(self.keywords[:4]) or (self.phrases[0][:60] if self.phrases else "unnamed")


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-9)


def choose_k(vectors: np.ndarray, seed: int = 0, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """Centres for the k with the best silhouette on a sample (k from 2 up to about n/20, at most 40).

    The search runs on the sample projected to its first 64 principal components (normalised again, so
    still cosine geometry): measured on tests/data/topics.jsonl, the same agreement with the true topics
    as in 512 dimensions, at a fraction of the time; the winning labels then give centres in the full space.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(seed)
    sample = vectors if len(vectors) <= SAMPLE else vectors[rng.choice(len(vectors), SAMPLE, replace=False)]
    reduced = _normalise(
        PCA(n_components=min(SEARCH_DIMENSIONS, *sample.shape), random_state=seed).fit_transform(sample)
    )
    top = max(4, min(40, len(sample) // 20))
    best: tuple[float, np.ndarray] | None = None
    for k in range(2, top + 1, 1 if top <= 24 else 2):
        if should_stop is not None and should_stop():
            break
        labels = KMeans(n_clusters=k, n_init=10 if len(sample) <= 2000 else 3, random_state=seed).fit_predict(reduced)
        score = silhouette_score(
            reduced, labels, metric="cosine", sample_size=min(SILHOUETTE_SAMPLE, len(sample)), random_state=seed
        )
        if best is None or score > best[0]:
            best = (float(score), labels)
    if best is None:
        return _normalise(sample[:1].astype(np.float32))
    labels = best[1]
    centres = np.stack([sample[labels == k].mean(axis=0) for k in range(labels.max() + 1) if (labels == k).any()])
    return _normalise(centres.astype(np.float32))


def refine(vectors: np.ndarray, centres: np.ndarray, steps: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lloyd steps on every vector; returns centres, each vector's cluster and its similarity to it."""
    for _ in range(steps):
        similarity = vectors @ centres.T
        labels = similarity.argmax(axis=1)
        for k in range(len(centres)):
            members = vectors[labels == k]
            if len(members):
                centres[k] = members.mean(axis=0)
        centres = _normalise(centres)
    similarity = vectors @ centres.T
    labels = similarity.argmax(axis=1)
    return centres, labels, similarity[np.arange(len(vectors)), labels]


def keywords(texts_by_cluster: list[list[str]], top: int = 5) -> list[list[str]]:
    """The most distinctive terms of each cluster (c-TF-IDF over unigrams and bigrams)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    documents = [" ".join(texts) for texts in texts_by_cluster]
    vectorizer = CountVectorizer(
        ngram_range=(1, 2),
        stop_words=sorted(ENGLISH_STOP_WORDS | CHAT_STOP_WORDS),
        token_pattern=r"(?u)\b[^\W\d_][^\W_]+\b",
        min_df=1,
    )
    try:
        counts = vectorizer.fit_transform(documents).toarray().astype(np.float64)
    except ValueError:  # nothing but stop words
        return [[] for _ in documents]
    terms = vectorizer.get_feature_names_out()
    tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    average_words = counts.sum() / len(documents)
    idf = np.log(1 + average_words / np.maximum(counts.sum(axis=0), 1))
    scores = tf * idf
    out = []
    for row in scores:
        chosen: list[str] = []
        for index in np.argsort(-row):
            if row[index] <= 0 or len(chosen) == top:
                break
            term = str(terms[index])
            # "reset password" and "password" say the same thing twice: keep the first, more distinctive one
            if not any(term in c or c in term for c in chosen):
                chosen.append(term)
        out.append(chosen)
    return out


def cluster(
    vectors: np.ndarray, texts: list[str], seed: int = 0, should_stop: Callable[[], bool] | None = None
) -> list[Cluster]:
    """Clusters of the given unit vectors (row i embeds texts[i]), largest first. ``should_stop`` is asked
    between fits: a worker told to stop gives up the search instead of finishing it."""
    if len(vectors) < 2 * MIN_CLUSTER_SIZE:
        return []
    vectors = _normalise(np.asarray(vectors, dtype=np.float32))
    with compute_lock:
        centres = choose_k(vectors, seed, should_stop)
        if should_stop is not None and should_stop():
            return []
        centres, labels, similarity = refine(vectors, centres)
    min_size = max(MIN_CLUSTER_SIZE, int(MIN_CLUSTER_SHARE * len(vectors)))
    groups = []
    for k in range(len(centres)):
        members = np.where((labels == k) & (similarity >= MEMBER_SIMILARITY))[0]
        if len(members) >= min_size:
            closest = members[np.argsort(-similarity[members])]
            groups.append((centres[k], closest, float(np.quantile(similarity[members], 0.1))))
    groups.sort(key=lambda g: -len(g[1]))
    # Term counts from at most 2,000 members a cluster: enough for stable names, and fast at 100k.
    names = keywords([[texts[i] for i in members[:2000]] for _, members, _ in groups])
    return [
        Cluster(
            centroid=centre,
            members=members,
            keywords=words,
            phrases=[texts[i] for i in members[:10]],
            threshold=round(min(0.6, max(0.3, threshold)), 3),
        )
        for (centre, members, threshold), words in zip(groups, names, strict=True)
    ]


def assign(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each vector's nearest centroid (for measuring agreement on every message)."""
    return (np.asarray(vectors, dtype=np.float32) @ np.asarray(centroids, dtype=np.float32).T).argmax(axis=1)
