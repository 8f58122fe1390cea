"""Trains the weights of ``enrich/outcomes.py`` and writes them to ``src/convolens/enrich/outcome_weights.py``
(Python constants: a few numbers per feature, and the ending model's weights over the embedding).

    python bench/train_outcomes.py                  # trains on TRAIN_SETS, writes the weights
    python bench/train_outcomes.py --check          # cross-validated figures only, writes nothing
    python bench/train_outcomes.py --loso           # each set held out in turn, writes nothing

The labelled conversations of ``TRAIN_SETS`` go through what the worker does
(``outcome_quality.transcripts``: user turns embedded, the store's window). First the ending model: a
logistic regression over the embedding of the last user turn of the threads whose user had the last
word, resolved or unresolved. Then ``outcomes.features_many``, where those threads read the ending
model's out-of-fold chance (stacking: as an unseen thread would), and a multinomial logistic regression
over the standardised features of the conversation's end (``outcomes.OUTCOME_FEATURES``) for the
outcome; one binary logistic regression per signal, over the features that are its evidence
(``outcomes.SIGNAL_FEATURES``), with the threshold of the best out-of-fold F1. Each one's
regularisation is chosen by 5-fold cross-validation on the training sets alone (eight labelled sets of
tests/data since stop 36, all but outcomes_fresh7 ... fresh10, which measured it once each; ``--loso`` holds each
out in turn, fitting on the others, for an honest figure; a new set is measured with
``outcome_quality.py --set``). Rows whose label contradicts the README are read as it defines them
(``outcome_quality.readme_reading``). Deterministic (lbfgs, fixed folds):
the same sets give the same weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from unittest import mock

import numpy as np
import outcome_quality
from outcome_quality import README_READING, readme_reading
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from convolens.enrich import embedding, outcome_examples, outcomes

TRAIN_SETS = (
    "outcomes_tune.jsonl",
    "outcomes_train2.jsonl",
    "outcomes_fresh.jsonl",
    "outcomes_holdout.jsonl",
    "outcomes_fresh3.jsonl",
    "outcomes_fresh4.jsonl",
    "outcomes_fresh5.jsonl",
    "outcomes_fresh6.jsonl",
)


THREE = outcome_quality.THREE
OUT = Path(__file__).resolve().parent.parent / "src" / "convolens" / "enrich" / "outcome_weights.py"
CS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
TOLERANCE = 0.01
THRESHOLDS = tuple(round(0.2 + 0.05 * i, 2) for i in range(9))  # 0.2 .. 0.6


def _folds(labels: np.ndarray) -> StratifiedKFold:
    smallest = min(np.unique(labels, return_counts=True)[1])
    return StratifiedKFold(n_splits=max(2, min(5, smallest)), shuffle=True, random_state=0)


def _best_c(x: np.ndarray, y: np.ndarray, score, extra=None) -> tuple[float, float, np.ndarray]:  # type: ignore[no-untyped-def]
    """The strongest regularisation (smallest C) whose out-of-fold score is within ``TOLERANCE`` of the
    best one's: a few hundred conversations do not tell C=10 from C=1 apart, and the weaker the weights the
    less they fit the training sets' accidents. ``extra``: (x, y) always in the training folds."""
    tried = []
    for c in CS:
        predicted = np.zeros((len(y), len(np.unique(y))))
        for train, test in _folds(y).split(x, y):
            xs, ys = (
                (x[train], y[train]) if extra is None else (np.vstack([x[train], extra[0]]), np.r_[y[train], extra[1]])
            )
            predicted[test] = LogisticRegression(C=c, max_iter=5000).fit(xs, ys).predict_proba(x[test])
        tried.append((c, score(predicted, np.unique(y)), predicted))
    best = max(value for _, value, _ in tried)
    return next(t for t in tried if t[1] >= best - TOLERANCE)


def _f1(gold: np.ndarray, guess: np.ndarray) -> float:
    hits = float(np.sum(gold & guess))
    return 2 * hits / (np.sum(gold) + np.sum(guess)) if hits else 0.0


def train_ending(
    rows: list[dict], transcripts: dict, say=print
) -> tuple[tuple[np.ndarray, float], list[int], np.ndarray]:  # type: ignore[no-untyped-def]
    """The ending model: resolved or not, from the embedding of the last user turn of the threads whose
    user had the last word and whose outcome is resolved or unresolved. Returns its (weights, intercept),
    the rows it learned from and their out-of-fold chances."""
    picked, vectors = [], []
    for i, r in enumerate(rows):
        turns = [t for t in transcripts[i] if t.kind == "message"]
        if r["outcome"] in ("resolved", "unresolved") and turns and turns[-1].role == "user" and turns[-1].vector:
            picked.append(i)
            vectors.append(embedding.from_bytes(turns[-1].vector))
    x = np.array(vectors)
    y = np.array([rows[i]["outcome"] == "resolved" for i in picked])
    # And the example turns of outcome_examples (what a user says when it worked, and when it did not),
    # in every fold's training part: a few hundred real endings do not cover "that's wrong, ..." well.
    good = outcome_examples.THANKS + outcome_examples.SUCCESS
    bad = (
        outcome_examples.CORRECTION + outcome_examples.OFF_TARGET + outcome_examples.SARCASM + outcome_examples.GIVES_UP
    )
    extra = (embedding.embed(good + bad), np.array([True] * len(good) + [False] * len(bad)))

    def accuracy(predicted: np.ndarray, classes: np.ndarray) -> float:
        return float(np.mean((predicted[:, 1] >= 0.5) == y))

    c, value, predicted = _best_c(x, y, accuracy, extra)
    say(f"ending: n={len(picked)} (+{len(extra[1])} examples) C={c} cross-validated accuracy={value:.4f}")
    model = LogisticRegression(C=c, max_iter=5000).fit(np.vstack([x, extra[0]]), np.r_[y, extra[1]])
    return (model.coef_[0].astype(np.float32), float(model.intercept_[0])), picked, predicted[:, 1]


def fit(rows: list[dict], transcripts: dict, verbose: bool = True):  # type: ignore[no-untyped-def]
    """The ending model, the outcome model and the signal models trained on ``rows`` (each regularisation
    chosen by 5-fold cross-validation on them): (mean, scale, outcome model, signal weights, ending)."""
    say = print if verbose else (lambda *a, **k: None)
    ending, ending_rows, out_of_fold_ending = train_ending(rows, transcripts, say)
    found = outcomes.features_many(transcripts, ending)
    raw = np.array([found[i] for i in range(len(rows))])
    # The conversations the ending model learned from read its out-of-fold chance, as unseen ones will.
    raw[ending_rows, outcomes.FEATURES.index("last_ends_well")] = out_of_fold_ending
    mean = raw.mean(axis=0)
    scale = raw.std(axis=0)
    scale[scale == 0] = 1.0
    x = (raw - mean) / scale
    y = np.array([r["outcome"] for r in rows])
    three = np.isin(y, ("resolved", "unresolved", "abandoned"))

    def accuracy(predicted: np.ndarray, classes: np.ndarray) -> float:
        return float(np.mean(classes[predicted.argmax(axis=1)] == y))

    reads = [outcomes.FEATURES.index(f) for f in outcomes.OUTCOME_FEATURES]
    c, value, predicted = _best_c(x[:, reads], y, accuracy)
    classes = np.array(outcomes.CLASSES)
    out_of_fold = classes[predicted.argmax(axis=1)]
    say(f"n={len(rows)}")
    say(
        f"outcome: C={c} cross-validated accuracy={value:.4f} "
        f"(resolved/unresolved/abandoned rows: {np.mean(out_of_fold[three] == y[three]):.4f})"
    )
    model = LogisticRegression(C=c, max_iter=5000).fit(x[:, reads], y)
    assert tuple(model.classes_) == outcomes.CLASSES
    coef = np.zeros((len(outcomes.CLASSES), len(outcomes.FEATURES)))  # the features it does not read weigh nothing
    coef[:, reads] = model.coef_
    model.coef_ = coef
    signal_weights = {}
    for signal in outcomes.TRANSCRIPT_SIGNALS:
        gold = np.array([signal in r["signals"] for r in rows])

        def f1(predicted: np.ndarray, classes: np.ndarray, gold: np.ndarray = gold) -> float:
            return max(_f1(gold, predicted[:, 1] >= t) for t in THRESHOLDS)

        columns = [outcomes.FEATURES.index(f) for f in outcomes.SIGNAL_FEATURES[signal]]
        sc, value, predicted = _best_c(x[:, columns], gold, f1)
        at = max(THRESHOLDS, key=lambda t, p=predicted: (_f1(gold, p[:, 1] >= t), -abs(t - 0.5)))
        guess = predicted[:, 1] >= at
        hits = int(np.sum(gold & guess))
        say(
            f"  {signal:16} C={sc} at={at} cross-validated F1={value:.3f} "
            f"precision={hits / max(1, guess.sum()):.3f} recall={hits / max(1, gold.sum()):.3f} (n={gold.sum()})"
        )
        fitted = LogisticRegression(C=sc, max_iter=5000).fit(x[:, columns], gold)
        coef = np.zeros(len(outcomes.FEATURES))  # the features the signal does not read weigh nothing
        coef[columns] = fitted.coef_[0]
        signal_weights[signal] = (coef, float(fitted.intercept_[0]), at)
    assert tuple(signal_weights) == outcomes.TRANSCRIPT_SIGNALS
    return mean, scale, model, signal_weights, ending


def as_model(mean, scale, model, signals, ending) -> outcomes._Model:  # type: ignore[no-untyped-def]
    """What ``outcomes._model`` reads from the written weights, from a fit in memory (leave-one-set-out)."""
    names = tuple(signals)
    return outcomes._Model(
        mean,
        scale,
        model.coef_,
        model.intercept_,
        np.array([signals[s][0] for s in names]),
        np.array([signals[s][1] for s in names]),
        np.array([signals[s][2] for s in names]),
        np.asarray(ending[0], dtype=np.float32),
        float(ending[1]),
    )


def leave_one_set_out(names: list[str]) -> None:
    """Each set labelled by the models trained on the others: per-set and pooled 3-class accuracy (the
    figure outcome_quality.py reports) and pooled per-signal precision/recall."""
    sets = {name: outcome_quality.load(name) for name in names}
    memo: dict[str, np.ndarray] = {}
    real = embedding.embed

    def embed(texts: list[str]) -> np.ndarray:  # each fold embeds the same turns again otherwise
        missing = [t for t in dict.fromkeys(texts) if t not in memo]
        if missing:
            memo.update(zip(missing, real(missing), strict=True))
        return np.array([memo[t] for t in texts], dtype=np.float32).reshape(len(texts), embedding.DIMENSIONS)

    with mock.patch.object(embedding, "embed", embed):
        _leave_one_set_out(names, sets)


def _leave_one_set_out(names: list[str], sets: dict[str, list[dict]]) -> None:
    pooled_rows: list[dict] = []
    pooled_got: list = []
    for held in names:
        rows = readme_reading([r for name in names if name != held for r in sets[name]])
        mean, scale, model, signals, ending = fit(rows, outcome_quality.transcripts(rows), verbose=False)
        fitted = as_model(mean, scale, model, signals, ending)
        held_rows = readme_reading(sets[held])
        with mock.patch.object(outcomes, "_model", lambda fitted=fitted: fitted):
            result = outcome_quality.evaluate(held_rows)
        outcome_quality.report(f"{held.removesuffix('.jsonl')} (held out)", result)
        pooled_rows += held_rows
        pooled_got += result["got"]
    three = [r["outcome"] == g[0] for r, g in zip(pooled_rows, pooled_got, strict=True) if r["outcome"] in THREE]
    print(f"pooled: n={len(pooled_rows)} resolved/unresolved/abandoned rows: {np.mean(three):.4f}")
    agreed = [
        r["outcome"] == g[0]
        for r, g in zip(pooled_rows, pooled_got, strict=True)
        if r["outcome"] in THREE and r["id"] not in README_READING
    ]
    print(f"  the same without the rows whose label contradicted the README: {np.mean(agreed):.4f} (n={len(agreed)})")
    for s in outcomes.TRANSCRIPT_SIGNALS:
        gold = np.array([s in r["signals"] for r in pooled_rows])
        guess = np.array([s in g[1] for g in pooled_got])
        hits = int(np.sum(gold & guess))
        precision, recall = hits / max(1, guess.sum()), hits / max(1, gold.sum())
        print(f"  {s:16} precision={precision:.3f} recall={recall:.3f} (n={gold.sum()})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="print cross-validated figures, write nothing")
    parser.add_argument("--loso", action="store_true", help="each set held out in turn; writes nothing")
    parser.add_argument("--sets", nargs="*", default=list(TRAIN_SETS))
    args = parser.parse_args()
    used = [name for name in args.sets if (outcome_quality.DATA / name).exists()]
    if args.loso:
        leave_one_set_out(used)
        return
    rows = readme_reading([r for name in used for r in outcome_quality.load(name)])
    print(used, f"({len(README_READING)} rows read as the README defines them, not as labelled)")
    mean, scale, model, signal_weights, ending = fit(rows, outcome_quality.transcripts(rows))
    if args.check:
        return
    OUT.write_text(render(used, len(rows), mean, scale, model, signal_weights, ending))
    print(f"wrote {OUT}")


def _floats(values) -> str:  # type: ignore[no-untyped-def]
    return "(" + ", ".join(f"{float(v):.5g}" for v in values) + ")"


def render(used: list[str], n: int, mean, scale, model, signals, ending) -> str:  # type: ignore[no-untyped-def]
    """The weights as a Python module, one line per feature, so that a diff of two trainings reads."""
    names = outcomes.FEATURES
    signal_names = tuple(signals)
    lines = [
        '"""Weights of the outcome model (``enrich/outcomes.py``), written by ``bench/train_outcomes.py`` from',
        *(f"{name}," for name in used[:-1]),
        f"{used[-1]} ({n} labelled conversations). Do not edit: retrain.",
        "",
        "Per feature: its mean and scale over the training conversations (features are standardised), its",
        "weight for each outcome (``CLASSES`` order) and for each signal (``SIGNALS`` order).",
        '"""',
        "",
        "# fmt: off",
        f"CLASSES = {tuple(model.classes_.tolist())!r}",
        f"SIGNALS = {signal_names!r}",
        "STANDARD = {",
        *(f"    {name!r}: {_floats((m, s))}," for name, m, s in zip(names, mean, scale, strict=True)),
        "}",
        "OUTCOME_COEF = {",
        *(f"    {name!r}: {_floats(model.coef_[:, j])}," for j, name in enumerate(names)),
        "}",
        f"OUTCOME_INTERCEPT = {_floats(model.intercept_)}",
        "SIGNAL_COEF = {",
        *(f"    {name!r}: {_floats([signals[s][0][j] for s in signal_names])}," for j, name in enumerate(names)),
        "}",
        f"SIGNAL_INTERCEPT = {_floats([signals[s][1] for s in signal_names])}",
        f"SIGNAL_AT = {_floats([signals[s][2] for s in signal_names])}",
        "# The ending model: weights over the last user turn's embedding.",
        "ENDING_COEF = (",
        *(f"    {_floats(ending[0][i : i + 8])[1:-1]}," for i in range(0, len(ending[0]), 8)),
        ")",
        f"ENDING_INTERCEPT = {ending[1]:.5g}",
        "# fmt: on",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
