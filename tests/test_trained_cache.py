"""The sentiment classifier and its wording half, trained at first use, are kept on disk and loaded by the next
process (enrich/trained_cache.py): the same answers, at a fraction of the CPU; anything wrong with the file means
training again, never an error."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from convolens.enrich import embedding, sentiment, sentiment_wording, trained_cache

PROBE = ["That's not what I asked for.", "Thanks, it works now!", "My order number is 4471.", "또 안 되네요"]


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv(trained_cache.ENV, str(tmp_path))
    # Fewer kernel components than shipped (all ~2,700 training rows): the same code path, trained in a
    # third of the time; the components are part of the key, so this never meets the shipped file.
    monkeypatch.setattr(sentiment, "KERNEL_COMPONENTS", 300)
    embedding.embed(["load the encoder outside the timings"])
    sentiment._classifier.cache_clear()
    yield tmp_path
    sentiment._classifier.cache_clear()  # the next test trains or loads its own


def timed_classifier():  # type: ignore[no-untyped-def]
    sentiment._classifier.cache_clear()
    started = time.process_time()
    model = sentiment._classifier()
    return model, time.process_time() - started


def test_a_trained_classifier_is_loaded_by_the_next_process_with_the_same_answers(fresh: Path) -> None:
    trained, training_cpu = timed_classifier()
    assert len(list(fresh.glob("sentiment-*.npz"))) == 1
    loaded, loading_cpu = timed_classifier()
    vectors = embedding.embed(PROBE)
    assert np.array_equal(trained.predict_proba(vectors), loaded.predict_proba(vectors))
    assert loading_cpu < 0.5 < training_cpu, (loading_cpu, training_cpu)


def test_a_broken_or_foreign_file_is_trained_again(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trained, _ = timed_classifier()
    (kept,) = fresh.glob("sentiment-*.npz")
    kept.write_bytes(b"PK\x03\x04 not a zip at all")
    again, cpu = timed_classifier()
    assert cpu > 0.5  # trained, not loaded
    vectors = embedding.embed(PROBE)
    assert np.array_equal(trained.predict_proba(vectors), again.predict_proba(vectors))
    # Other training rows are another key: the file kept for these rows is not theirs.
    texts, labels = sentiment.training_examples()
    monkeypatch.setattr(sentiment, "training_examples", lambda: (texts[:-1], labels[:-1]))
    timed_classifier()
    assert len(list(fresh.glob("sentiment-*.npz"))) == 2


def test_off_keeps_nothing(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(trained_cache.ENV, "off")
    sentiment._classifier()
    assert not list(fresh.iterdir())


def test_a_save_deletes_this_classifier_s_files_unused_for_a_week(fresh: Path) -> None:
    """An upgrade's new examples are a new key: the old file goes once no process has loaded it for
    STALE_SECONDS (a load marks it used); other classifiers' files, even one whose name begins with
    "sentiment-", and recent ones stay."""
    week_ago = time.time() - trained_cache.STALE_SECONDS - 60
    names = ("sentiment", "sentiment", "wording", "sentiment-wording")
    old, recent, other, prefixed = (fresh / f"{name}-{trained_cache.key(str(i))}.npz" for i, name in enumerate(names))
    for path in (old, recent, other, prefixed):
        np.savez(path, x=np.zeros(1))
    for path in (old, other, prefixed):
        os.utime(path, (week_ago, week_ago))
    timed_classifier()  # trains and saves its own key
    (kept,) = set(fresh.glob("sentiment-*.npz")) - {recent, prefixed}
    assert not old.exists() and recent.exists() and other.exists() and prefixed.exists()
    os.utime(kept, (week_ago, week_ago))
    timed_classifier()  # loads it: used again, so a later save of another key keeps it
    assert kept.stat().st_mtime > week_ago + 3600


def test_the_wording_classifier_is_kept_too_and_answers_as_trained(fresh: Path) -> None:
    """The wording half (enrich/sentiment_wording.py) is kept as plain arrays (its pieces, their idf, the
    regression's weights) and rebuilt without pickle: the chances of a freshly trained model, at a fraction
    of its 1-3 s of CPU."""
    sentiment_wording.classifier.cache_clear()
    try:
        started = time.process_time()
        trained = sentiment_wording.classifier()
        training_cpu = time.process_time() - started
        assert len(list(fresh.glob("wording-*.npz"))) == 1
        sentiment_wording.classifier.cache_clear()
        started = time.process_time()
        loaded = sentiment_wording.classifier()
        loading_cpu = time.process_time() - started
        texts, labels = sentiment.training_examples()
        assert np.array_equal(trained.predict_proba(PROBE), loaded.predict_proba(PROBE))
        # And both are the regression sklearn fits: the kept arrays are the model, not an approximation.
        from sklearn.linear_model import LogisticRegression

        vectorizer = sentiment_wording.vectorizer(min_df=sentiment_wording.MIN_MESSAGES)
        regression = LogisticRegression(C=sentiment_wording.C, max_iter=3000, class_weight="balanced")
        regression.fit(vectorizer.fit_transform(texts), labels)
        expected = regression.predict_proba(vectorizer.transform(PROBE + texts[:200]))
        assert np.abs(loaded.predict_proba(PROBE + texts[:200]) - expected).max() < 1e-5
        assert loading_cpu < 0.3 < training_cpu, (loading_cpu, training_cpu)
    finally:
        sentiment_wording.classifier.cache_clear()
