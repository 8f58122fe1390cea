"""How far any clustering of the encoder's vectors can get on a labelled topic set, and how far ours gets.

    python bench/topic_ceiling.py                  # every labelled set
    python bench/topic_ceiling.py fresh4 fresh5    # some of them
    python bench/topic_ceiling.py --seeds 3        # random k-means starts a set: 3 x 20 (default 1 x 20)

Every figure is taken in the space ``suggest`` groups in (language means and the phrasing directions taken
out), on the messages with a true topic, with the phrasing directions learned without the set measured
(as ``topic_quality.py --loso`` does). Each line answers one question about where ARI is lost:

- ``oracle``: every message to the nearest true-topic mean. What the vectors allow with the answer known.
- ``from truth``: k-means with the true number of topics, started at the true-topic means and run until it
  settles. Whether the k-means objective holds on to the topics once it is shown them.
- ``random``: the same k-means from 20 random starts a seed, the start with the lowest inertia kept.
  ``gap`` is its inertia against the one from truth: near zero or below means the objective cannot tell
  the human partition from the others it finds, so no better search of it (more fits, other starts,
  consensus) can be relied on to find the topics.
- ``pieces x5``: k-means into five times as many pieces as topics, each piece then given to its majority
  true topic: the best that any merge of fine pieces could reach.
- ``pair AUC``: how often a pair of messages on one topic is closer (cosine) than a pair on two.
- ``shipped``: ``suggest.cluster`` as the product runs it, judged as ``topic_quality.py`` judges it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import topic_quality

from convolens.enrich import embedding, suggest
from convolens.enrich import language as languages_of

RANDOM_STARTS = 20
PIECES = 5
COLUMNS = ("oracle", "from truth", "random", "gap %", f"pieces x{PIECES}", "pair AUC", "shipped")


def ceiling(name: str, seeds: int = 1) -> dict[str, float]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, roc_auc_score

    rows = [r for r in topic_quality.load(name)[0] if r.get("topic") is not None]
    texts = [r["text"] for r in rows]
    directions = topic_quality.directions_without(name)
    neutral = suggest.language_neutral(embedding.embed(texts), [languages_of.detect(t) for t in texts])
    vectors = suggest.without(neutral, directions)
    topics = sorted({r["topic"] for r in rows})
    truth = np.array([topics.index(r["topic"]) for r in rows])
    means = np.stack([vectors[truth == k].mean(axis=0) for k in range(len(topics))])

    oracle = (vectors @ suggest._normalise(means).T).argmax(axis=1)
    from_truth = KMeans(len(topics), init=means, n_init=1).fit(vectors)
    random_aris, gaps = [], []
    for seed in range(seeds):
        best = KMeans(len(topics), n_init=RANDOM_STARTS, random_state=seed).fit(vectors)
        random_aris.append(adjusted_rand_score(truth, best.labels_))
        gaps.append((best.inertia_ - from_truth.inertia_) / from_truth.inertia_)
    pieces = KMeans(PIECES * len(topics), n_init=1, random_state=0).fit_predict(vectors)
    majority = {p: np.bincount(truth[pieces == p]).argmax() for p in set(pieces.tolist())}
    upper = np.triu_indices(len(rows), 1)
    same_topic = (truth[:, None] == truth[None, :])[upper]

    return {
        "oracle": adjusted_rand_score(truth, oracle),
        "from truth": adjusted_rand_score(truth, from_truth.labels_),
        "random": float(np.mean(random_aris)),
        "gap %": 100 * float(np.mean(gaps)),
        f"pieces x{PIECES}": adjusted_rand_score(truth, [majority[p] for p in pieces]),
        "pair AUC": roc_auc_score(same_topic, (vectors @ vectors.T)[upper]),
        "shipped": topic_quality.evaluate_left_out(name, directions=directions)["ari"],
    }


if __name__ == "__main__":
    seeds = int(topic_quality._option("seeds") or 1)
    skip = {"--seeds", str(seeds), f"--seeds={seeds}"}
    names = [a for a in sys.argv[1:] if a not in skip] or list(topic_quality.SETS)
    print(f"{'set':<9}" + "".join(f"{column:>12}" for column in COLUMNS))
    for name in names:
        figures = ceiling(name, seeds)
        print(f"{name:<9}" + "".join(f"{figures[column]:>12.3f}" for column in COLUMNS), flush=True)
