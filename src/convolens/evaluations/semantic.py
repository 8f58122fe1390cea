"""``semantic_match``: the response means the same as an expected one, judged offline by the cosine
similarity of the two texts' sentence embeddings (enrich/embedding.py, the multilingual encoder the
enrichment uses: an answer in another language can match too).

Options: ``golden_response`` (the expected text), ``threshold`` (default ``THRESHOLD``) and ``expect``:
``similar`` (default) or ``different`` — the response must not mean the same as the given text (a reply
kept as an example of what not to say). The default
was chosen on the tuning half of a labelled set of paraphrase / non-paraphrase pairs
(tests/data/paraphrase_pairs_tune.jsonl) and is reported on both halves by bench/evaluator_quality.py.
The encoder reads a text's first 600 characters: longer answers are compared by their beginnings.
What it cannot tell apart: a statement and its contradiction on the same subject ("your claim was
approved" / "was rejected" score ~0.88) — check those with ``golden_response``, a phrase or ``llm_judge``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convolens.evaluations.base import (
    Attempt,
    Services,
    Verdict,
    choice_option,
    no_other_options,
    number_option,
    text_option,
)

MAX_GOLDEN_CHARS = 50_000
THRESHOLD = 0.56


def similarity(a: str, b: str) -> float:
    """Cosine similarity of two texts' embeddings (rows are unit length: a dot product)."""
    from convolens.enrich import embedding

    vectors = embedding.embed([a, b])
    return float(np.dot(vectors[0], vectors[1]))


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
        if attempt.response is None or not attempt.response.strip():
            return Verdict.inconclusive("no response to compare")
        threshold = THRESHOLD if options.get("threshold") is None else options["threshold"]
        score = similarity(attempt.response, options["golden_response"])
        similar = score >= threshold
        wanted = options.get("expect", "similar") == "similar"
        target = "the golden response" if wanted else "the response to avoid"
        side = "at or above" if similar else "below"
        return Verdict.passed(
            similar == wanted, f"similarity to {target} {score:.3f}, {side} the threshold {threshold:.2f}"
        )


EVALUATORS = (SemanticMatch(),)
