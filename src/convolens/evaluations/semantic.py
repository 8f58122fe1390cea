"""``semantic_match``: the response means the same as an expected one, judged offline.

First gate: the cosine similarity of the two texts' sentence embeddings (enrich/embedding.py, the
multilingual encoder the enrichment uses: an answer in another language can match too) must reach the
threshold. Embeddings cannot see the near misses a tester cares most about — "5 to 7 days" / "2 to 3
days", "you can return it" / "you can't return it" score ~0.9 — so a response above the threshold must
also pass these checks, each of which names what differed in the verdict's reasons:

- facts (quantities.py): every number, amount, percentage, time, weekday and month of the golden
  response is in the response, however spelled ("five", "18:00" / "6pm", "48 hours" / "two days");
- polarity (polarity.py): the response does not negate the golden response's statement;
- names (entities.py): the response does not name another place, person or product in its place;
- wording (wording.py): the response is not the golden response with one or two words replaced
  ("rose" / "fell", "merge" / "rebase");
- refusal (attempts.py's classifier, over the vectors already computed): when the golden response
  answers, the response does not clearly refuse or deflect (``REFUSAL_BELOW``).

Options: ``golden_response`` (the expected text), ``threshold`` (default ``THRESHOLD``) and ``expect``:
``similar`` (default) or ``different`` — the response must not mean the same as the given text (a
reply kept as an example of what not to say). ``THRESHOLD`` was chosen with the checks on, on the
labelled pair sets in tests/data (bench/evaluator_quality.py reports each set and leave-one-set-out).
The encoder reads a text's first 600 characters: longer answers are compared by their beginnings.
What it still cannot tell apart: a reworded sentence that changes an action or a relation ("your
claim was approved" / "your claim was rejected", "flights to Tokyo" / "flights from Tokyo") — check
those with ``golden_response``, a phrase or ``llm_judge``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convolens.evaluations import entities, polarity, quantities, wording
from convolens.evaluations.base import (
    Attempt,
    Reason,
    Services,
    Verdict,
    choice_option,
    no_other_options,
    number_option,
    text_option,
)

MAX_GOLDEN_CHARS = 50_000
THRESHOLD = 0.56
# The refusal check rejects only a response the attempts classifier is sure of: between 0.25 and 0.5 it
# misreads terse answers ("Sorry, we've run out of that size": 0.40) on the seen pair sets, where no
# different pair above the similarity threshold was a refusal.
REFUSAL_BELOW = 0.25


def similarity(a: str, b: str) -> float:
    """Cosine similarity of two texts' embeddings (rows are unit length: a dot product)."""
    from convolens.enrich import embedding

    vectors = embedding.embed([a, b])
    return float(np.dot(vectors[0], vectors[1]))


def near_misses(golden: str, response: str, golden_vector: Any, response_vector: Any) -> list[str]:
    """What makes the response say something else than the golden response although their embeddings
    are close (one reason per failed check; empty when none failed)."""
    from convolens.evaluations import attempts

    reasons = []
    facts = quantities.compare(golden, response)
    if facts:
        reasons.append(facts)
    flipped = polarity.flip(golden, response)
    if flipped:
        reasons.append(flipped)
    names = entities.swapped(golden, response)
    if names:
        reasons.append(names)
    if not (facts or flipped or names):  # the same change is named once
        words = wording.opposite(golden, response) or wording.swapped(golden, response)
        if words:
            reasons.append(words)
    golden_answers, response_answers = attempts.answer_probabilities(np.stack([golden_vector, response_vector]))
    if golden_answers >= 0.5 and response_answers < REFUSAL_BELOW:
        reasons.append(
            f"the response refuses or deflects (classifier: {response_answers:.2f} that it answers)"
            " where the golden response answers"
        )
    return reasons


def judge(golden: str, response: str, golden_vector: Any, response_vector: Any, threshold: float) -> tuple[
        bool, float, list[str]]:  # fmt: skip
    """(same meaning?, the similarity, the near misses found). The checks run only above the threshold:
    below it the pair already differs, and the online path stays one embedding call."""
    score = float(np.dot(golden_vector, response_vector))
    if score < threshold:
        return False, score, []
    misses = near_misses(golden, response, golden_vector, response_vector)
    return not misses, score, misses


@dataclass(frozen=True)
class SemanticMatch:
    name: str = "semantic_match"
    offline: bool = True

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        no_other_options(options, {"golden_response", "threshold", "expect"})
        golden = text_option(options, "golden_response", required=True, max_chars=MAX_GOLDEN_CHARS)
        return {
            "golden_response": golden,
            "threshold": number_option(options, "threshold", low=-1, high=1),
            "expect": choice_option(options, "expect", {"similar": "similar", "different": "different"}, "similar"),
        }

    def evaluate(self, attempt: Attempt, options: dict[str, Any], services: Services) -> Verdict:
        from convolens.enrich import embedding

        if attempt.response is None or not attempt.response.strip():
            return Verdict.inconclusive("no response to compare")
        threshold = THRESHOLD if options.get("threshold") is None else options["threshold"]
        golden = options["golden_response"]
        vectors = embedding.embed([golden, attempt.response])
        same, score, misses = judge(golden, attempt.response, vectors[0], vectors[1], threshold)
        wanted = options.get("expect", "similar") == "similar"
        target = "the golden response" if wanted else "the response to avoid"
        side = "at or above" if score >= threshold else "below"
        first = Reason((score >= threshold) == wanted, f"similarity to {target} {score:.3f}, {side} the threshold "
                       f"{threshold:.2f}")  # fmt: skip
        checks = [Reason(not wanted, miss) for miss in misses]
        return Verdict("positive" if same == wanted else "negative", (first, *checks))


EVALUATORS = (SemanticMatch(),)
