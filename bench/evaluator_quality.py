"""Quality of the offline evaluators that judge meaning, on the labelled sets in tests/data.

``semantic_match``: pairs {lang, a (golden), b (response), paraphrase} in the SEMANTIC sets below.
Each set is reported at the shipped ``THRESHOLD`` (with the near-miss checks on: numbers, polarity,
refusal), then leave-one-set-out: the threshold with the best F1 on the other sets, reported on the
one left out. ``attempts_answer``: responses {lang, label answer|refusal, response}; the shipped
classifier is trained on evaluations/attempts_examples.py only (reported there 5-fold
cross-validated) and on each set; leave-one-set-out trains on the examples plus the other sets.

All these sets are seen (tuned on). A new, blind file is measured once, on its own, with

    PYTHONPATH=src .venv/bin/python bench/evaluator_quality.py --set PATH            # semantic pairs
    PYTHONPATH=src .venv/bin/python bench/evaluator_quality.py --attempts-set PATH   # attempts rows

which print precision/recall/F1/accuracy for that file only (no rows: nothing to tune on).
``--wrong`` lists the seen sets' misclassified rows; ``--timing`` the CPU time per evaluated pair.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
SEMANTIC = ("paraphrase_pairs_tune.jsonl", "paraphrase_pairs_holdout.jsonl", "semantic_pairs_fresh.jsonl")
ATTEMPTS = ("attempts_answer_holdout.jsonl", "attempts_answer_fresh.jsonl")
THRESHOLDS = np.arange(0.30, 0.96, 0.01)


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def scores(predicted: list[bool], actual: list[bool]) -> tuple[float, float, float, float]:
    """(precision, recall, F1, accuracy) with ``True`` as the positive class."""
    tp = sum(p and a for p, a in zip(predicted, actual, strict=True))
    fp = sum(p and not a for p, a in zip(predicted, actual, strict=True))
    fn = sum(a and not p for p, a in zip(predicted, actual, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = sum(p == a for p, a in zip(predicted, actual, strict=True)) / len(actual) if actual else 0.0
    return precision, recall, f1, accuracy


def line(label: str, n: int, unit: str, predicted: list[bool], actual: list[bool]) -> str:
    p, r, f, a = scores(predicted, actual)
    return f"  {label:28s} {n:4d} {unit}  precision {p:.3f}  recall {r:.3f}  F1 {f:.3f}  accuracy {a:.3f}"


class Pairs:
    """One pair set with its similarities and near misses computed once (the checks do not depend on
    the threshold, so sweeping it is cheap)."""

    def __init__(self, name: str, rows: list[dict]) -> None:
        from convolens.enrich import embedding
        from convolens.evaluations.semantic import near_misses

        self.name, self.rows = name, rows
        a = embedding.embed([r["a"] for r in rows])
        b = embedding.embed([r["b"] for r in rows])
        self.similarity = np.sum(a * b, axis=1)
        self.misses = [near_misses(r["a"], r["b"], a[i], b[i]) for i, r in enumerate(rows)]
        self.actual = [bool(r["paraphrase"]) for r in rows]

    def predicted(self, threshold: float, checks: bool = True) -> list[bool]:
        return [bool(s >= threshold and not (checks and m)) for s, m in zip(self.similarity, self.misses, strict=True)]


def best_threshold(sets: list[Pairs]) -> float:
    actual = [a for s in sets for a in s.actual]
    # on a tie the higher threshold: the checks catch near misses, not unrelated answers without numbers
    return float(
        max(THRESHOLDS, key=lambda t: (round(scores([p for s in sets for p in s.predicted(t)], actual)[2], 6), t))
    )


def semantic_match(wrong: bool) -> None:
    from convolens.evaluations.semantic import THRESHOLD

    sets = [Pairs(name.removesuffix(".jsonl"), load(DATA / name)) for name in SEMANTIC]
    print(f"semantic_match (positive class: same meaning) at the shipped THRESHOLD {THRESHOLD:.2f}")
    for s in sets:
        print(line(s.name, len(s.rows), "pairs", s.predicted(THRESHOLD), s.actual))
        print(line("  similarity alone", len(s.rows), "pairs", s.predicted(THRESHOLD, checks=False), s.actual))
        caught = {"numbers/dates": 0, "negation": 0, "names": 0, "words": 0, "refusal": 0}
        lost = dict.fromkeys(caught, 0)
        for sim, misses, actual in zip(s.similarity, s.misses, s.actual, strict=True):
            if sim < THRESHOLD:
                continue
            for miss in misses:
                kind = ("refusal" if "refuses" in miss else "negation" if "negates" in miss
                        else "names" if " names " in miss else "words" if "in place of" in miss or " says '" in miss
                        else "numbers/dates")  # fmt: skip
                (lost if actual else caught)[kind] += 1
        print(f"    checks above the threshold: different pairs caught {caught}; paraphrases rejected {lost}")
    everything = best_threshold(sets)
    actual = [a for s in sets for a in s.actual]
    sweep = ", ".join(
        f"{t:.2f} {scores([p for s in sets for p in s.predicted(t)], actual)[2]:.3f}"
        for t in np.arange(0.40, 0.61, 0.04)
    )
    print(f"  best threshold on all seen sets together: {everything:.2f}; F1 of all seen pairs by threshold: {sweep}")
    print("  leave-one-set-out (threshold chosen on the other sets):")
    for s in sets:
        t = best_threshold([o for o in sets if o is not s])
        print(line(f"{s.name} @ {t:.2f}", len(s.rows), "pairs", s.predicted(t), s.actual))
    if wrong:
        for s in sets:
            for row, sim, misses, guess in zip(s.rows, s.similarity, s.misses, s.predicted(THRESHOLD), strict=True):
                if guess != row["paraphrase"]:
                    print(f"    wrong {s.name} {sim:.3f} ({'paraphrase' if row['paraphrase'] else 'different'},"
                          f" {row['lang']}): {row['a'][:70]!r} / {row['b'][:70]!r} {misses}")  # fmt: skip


def semantic_file(path: Path) -> None:
    from convolens.evaluations.semantic import THRESHOLD

    s = Pairs(path.name, load(path))
    print(f"semantic_match on {path} at the shipped THRESHOLD {THRESHOLD:.2f} (positive class: same meaning)")
    print(line(path.name, len(s.rows), "pairs", s.predicted(THRESHOLD), s.actual))
    print(line("similarity alone", len(s.rows), "pairs", s.predicted(THRESHOLD, checks=False), s.actual))
    for kind, wanted in (("same language", False), ("cross-lingual", True)):
        keep = [i for i, r in enumerate(s.rows) if ("-" in r.get("lang", "")) == wanted]
        guessed = s.predicted(THRESHOLD)
        print(line(kind, len(keep), "pairs", [guessed[i] for i in keep], [s.actual[i] for i in keep]))


def attempts_lines(label: str, predicted: list[bool], actual: list[bool]) -> None:
    print(line(label, len(actual), "responses", predicted, actual))
    refusals = [not a for a in actual]
    p, r, f, _ = scores([not x for x in predicted], refusals)
    print(f"  {'':28s}      (refusal/deflection as the positive class: precision {p:.3f}  recall {r:.3f}  F1 {f:.3f})")


def attempts_answer(wrong: bool) -> None:
    from sklearn.model_selection import cross_val_predict

    from convolens.enrich import embedding
    from convolens.evaluations import attempts
    from convolens.evaluations.attempts_examples import EXAMPLES

    named: dict[str, tuple[list[str], list[bool]]] = {
        "attempts_examples.py": ([t for t, _ in EXAMPLES], [label == "answer" for _, label in EXAMPLES])
    }
    for name in ATTEMPTS:
        rows = load(DATA / name)
        named[name.removesuffix(".jsonl")] = ([r["response"] for r in rows], [r["label"] == "answer" for r in rows])
    vectors = {name: embedding.embed(texts) for name, (texts, _) in named.items()}
    print("attempts_answer (positive class: the response attempts an answer), shipped classifier")
    labels = named["attempts_examples.py"][1]
    guessed = cross_val_predict(attempts.fresh_model(), vectors["attempts_examples.py"], labels, cv=5)
    attempts_lines("attempts_examples.py (5-fold)", [bool(g) for g in guessed], labels)
    for name in named:
        if name == "attempts_examples.py":
            continue
        predicted = [p >= 0.5 for p in attempts.answer_probabilities(vectors[name])]
        attempts_lines(name, predicted, named[name][1])
        if wrong:
            for text, guess, actual in zip(named[name][0], predicted, named[name][1], strict=True):
                if guess != actual:
                    print(f"    wrong ({'answer' if actual else 'refusal'}): {text[:90]!r}")
    print("  leave-one-set-out (trained on the examples and the other sets, tested on the one left out):")
    for name in named:
        others = [o for o in named if o != name]
        model = attempts.fresh_model()
        model.fit(np.vstack([vectors[o] for o in others]), [a for o in others for a in named[o][1]])
        attempts_lines(name, [bool(g) for g in model.predict(vectors[name])], named[name][1])


def attempts_file(path: Path) -> None:
    from convolens.enrich import embedding
    from convolens.evaluations import attempts

    rows = load(path)
    predicted = [p >= 0.5 for p in attempts.answer_probabilities(embedding.embed([r["response"] for r in rows]))]
    actual = [r["label"] == "answer" for r in rows]
    print(f"attempts_answer on {path} (positive class: the response attempts an answer)")
    attempts_lines(path.name, predicted, actual)
    for kind, english in (("English", True), ("other languages", False)):
        keep = [i for i, r in enumerate(rows) if (r.get("lang") == "en") == english]
        print(line(kind, len(keep), "responses", [predicted[i] for i in keep], [actual[i] for i in keep]))


def timing() -> None:
    """CPU time per pair as the online path runs it: one pair at a time (encoder warm)."""
    from convolens.evaluations import registry
    from convolens.evaluations.base import Attempt, Message
    from convolens.evaluations.run import ProjectServices
    from convolens.evaluations.semantic import similarity

    rows = load(DATA / SEMANTIC[2])[:100]
    services = ProjectServices(None)
    semantic, tries = registry.get("semantic_match"), registry.get("attempts_answer")
    assert semantic is not None and tries is not None
    similarity("warm", "up")
    tries.evaluate(Attempt((Message("user", "?"),), "warm"), {"method": "classifier"}, services)
    started = time.process_time()
    for r in rows:
        similarity(r["a"], r["b"])
    alone = (time.process_time() - started) / len(rows)
    started = time.process_time()
    for r in rows:
        options = semantic.check_options({"golden_response": r["a"]})
        semantic.evaluate(Attempt((Message("user", "?"),), r["b"]), options, services)
    full = (time.process_time() - started) / len(rows)
    started = time.process_time()
    for r in rows:
        tries.evaluate(Attempt((Message("user", "?"),), r["b"]), {"method": "classifier"}, services)
    one = (time.process_time() - started) / len(rows)
    from convolens.enrich import embedding
    from convolens.evaluations.semantic import near_misses

    vectors = [embedding.embed([r["a"], r["b"]]) for r in rows]
    started = time.process_time()
    for r, v in zip(rows, vectors, strict=True):
        near_misses(r["a"], r["b"], v[0], v[1])
    checks = (time.process_time() - started) / len(rows)
    print(f"CPU per pair: the near-miss checks alone {checks * 1000:.2f} ms")
    print(f"CPU per pair: similarity alone {alone * 1000:.1f} ms; semantic_match with its checks "
          f"{full * 1000:.1f} ms; attempts_answer {one * 1000:.1f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, help="a new semantic-pairs file: only its figures are printed")
    parser.add_argument("--attempts-set", type=Path, help="a new attempts file: only its figures are printed")
    parser.add_argument("--wrong", action="store_true", help="list the seen sets' misclassified rows")
    parser.add_argument("--timing", action="store_true", help="CPU time per evaluated pair")
    args = parser.parse_args()
    if args.set or args.attempts_set:
        if args.set:
            semantic_file(args.set)
        if args.attempts_set:
            attempts_file(args.attempts_set)
        return
    semantic_match(args.wrong)
    attempts_answer(args.wrong)
    if args.timing:
        timing()


if __name__ == "__main__":
    main()
