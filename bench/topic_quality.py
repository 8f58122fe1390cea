"""Suggested-topic quality and speed.

    python bench/topic_quality.py            # ARI on tests/data/topics.jsonl, semantic-topic F1 by threshold
    python bench/topic_quality.py --100k     # also: clustering time for 100,000 messages

Agreement: every labelled message is embedded and clustered as if no topic covered it; each message
is then assigned to its nearest suggested topic and the assignment compared with the true topics by
the adjusted Rand index. Semantic topics: each true topic is defined by 5 of its messages as examples;
the rest are matched against every topic, and precision/recall/F1 reported per threshold.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from convolens.enrich import embedding, suggest

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "topics.jsonl"


def evaluate(rows: list[dict]) -> dict:
    from sklearn.metrics import adjusted_rand_score

    texts = [r["text"] for r in rows]
    vectors = embedding.embed(texts)
    started = time.perf_counter()
    clusters = suggest.cluster(vectors, texts)
    seconds = time.perf_counter() - started
    labels = suggest.assign(vectors, np.stack([c.centroid for c in clusters]))
    return {
        "n": len(rows),
        "topics": len({r["topic"] for r in rows}),
        "clusters": len(clusters),
        "ari": round(float(adjusted_rand_score([r["topic"] for r in rows], labels)), 4),
        "seconds": round(seconds, 2),
        "names": [c.name for c in clusters],
        "semantic": semantic_thresholds(rows, vectors),
    }


def semantic_thresholds(rows: list[dict], vectors: np.ndarray, examples: int = 5) -> dict[float, dict]:
    by_topic: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_topic[r["topic"]].append(i)
    names = sorted(by_topic)
    example_vectors = [vectors[by_topic[t][:examples]] for t in names]
    held_out = [i for t in names for i in by_topic[t][examples:]]
    best = np.stack([np.max(vectors[held_out] @ ex.T, axis=1) for ex in example_vectors], axis=1)
    truth = np.array([[rows[i]["topic"] == t for t in names] for i in held_out])
    out = {}
    for threshold in (0.3, 0.35, 0.4, 0.45, 0.5, 0.55):
        predicted = best >= threshold
        tp = float((predicted & truth).sum())
        precision = tp / max(predicted.sum(), 1)
        recall = tp / truth.sum()
        out[threshold] = {
            "precision": round(precision, 3),
            "recall": round(recall, 3),
            "f1": round(2 * precision * recall / max(precision + recall, 1e-9), 3),
        }
    return out


def time_100k(rows: list[dict], n: int = 100_000) -> dict:
    """Clustering time at 100k: the labelled vectors, jittered so that no two are the same."""
    texts = [r["text"] for r in rows]
    base = embedding.embed(texts)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(base), n)
    vectors = base[picks]
    vectors += 0.02 * rng.standard_normal(vectors.shape, dtype=np.float32)
    started = time.perf_counter()
    clusters = suggest.cluster(vectors, [texts[i] for i in picks])
    seconds = time.perf_counter() - started
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"n": n, "clusters": len(clusters), "seconds": round(seconds, 1), "peak_rss_mb": round(rss)}


if __name__ == "__main__":
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    result = evaluate(rows)
    print(json.dumps({k: v for k, v in result.items() if k != "semantic"}, ensure_ascii=False, indent=1))
    for threshold, figures in result["semantic"].items():
        print(f"semantic threshold {threshold}: {figures}")
    if "--100k" in sys.argv:
        print(time_100k(rows))
