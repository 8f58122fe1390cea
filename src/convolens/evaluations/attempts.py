"""``attempts_answer``: does the response try to answer (even with a "no", even after an apology)
rather than refuse, deflect elsewhere or stall?

Offline by default: a logistic regression over the response's sentence embedding (the multilingual
encoder of enrich/embedding.py), trained at first use on attempts_examples.py (the tuning part of a
labelled set; bench/evaluator_quality.py reports it and the held-out part). Option ``method``:
``classifier`` (default) or ``llm`` (the project's configured provider decides, with its reason).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from convolens.evaluations.base import Attempt, Services, Verdict, choice_option, no_other_options

SYSTEM = (
    "You decide whether an AI assistant's response attempts to answer the user's request (a direct answer, "
    "a partial answer or a clear 'no' all count) or instead refuses, deflects to someone or something else, "
    'or stalls. Answer with a JSON object only: {"verdict": true or false, "reason": "<one sentence>"}; '
    "verdict is true when the response attempts an answer."
)
PROMPT = "Does this response attempt an answer?\n"
MAX_CHARS = 4000

_lock = threading.Lock()
_model: Any = None


def fresh_model() -> Any:
    """The classifier, untrained (bench/evaluator_quality.py cross-validates it)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=3.0, max_iter=2000, class_weight="balanced")


def classifier() -> Any:
    global _model
    with _lock:
        if _model is None:
            from convolens.enrich import embedding
            from convolens.evaluations.attempts_examples import EXAMPLES

            model = fresh_model()
            model.fit(embedding.embed([t for t, _ in EXAMPLES]), [label == "answer" for _, label in EXAMPLES])
            _model = model
        return _model


def attempts(response: str) -> tuple[bool, float]:
    """(attempts an answer?, the classifier's probability that it does)."""
    from convolens.enrich import embedding

    probability = answer_probabilities(embedding.embed([response]))[0]
    return probability >= 0.5, probability


def answer_probabilities(vectors: Any) -> list[float]:
    """The classifier's probability that each embedded response attempts an answer (semantic_match
    reuses the vectors it already has)."""
    model = classifier()
    column = list(model.classes_).index(True)
    return [float(row[column]) for row in model.predict_proba(vectors)]


@dataclass(frozen=True)
class AttemptsAnswer:
    name: str = "attempts_answer"
    offline: bool = True  # with method=llm it calls the provider: the option says so

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        no_other_options(options, {"method"})
        return {"method": choice_option(options, "method", {"classifier": "classifier", "llm": "llm"}, "classifier")}

    def evaluate(self, attempt: Attempt, options: dict[str, Any], services: Services) -> Verdict:
        if attempt.response is None or not attempt.response.strip():
            return Verdict.inconclusive("no response to judge")
        if options["method"] == "llm":
            return self._by_llm(attempt, services)
        tried, probability = attempts(attempt.response)
        what = "attempts an answer" if tried else "refuses or deflects"
        return Verdict.passed(tried, f"the response {what} (classifier: {probability:.2f} that it answers)")

    @staticmethod
    def _by_llm(attempt: Attempt, services: Services) -> Verdict:
        asked = [m for m in attempt.messages if m.role == "user"]
        question = asked[-1].message[:MAX_CHARS] if asked else ""
        body = json.dumps({"request": question, "response": attempt.response[:MAX_CHARS]}, ensure_ascii=False)
        try:
            answer = services.llm_json(SYSTEM, PROMPT + body)
            verdict = answer["verdict"]
            if isinstance(verdict, str):
                verdict = verdict.strip().lower() in ("true", "yes", "1")
            reason = " ".join(str(answer.get("reason", "")).split())[:500]
        except Exception as exc:  # no provider, refused URL, HTTP error, an answer without a verdict
            return Verdict.inconclusive(f"the LLM gave no verdict: {str(exc)[:200] or type(exc).__name__}")
        return Verdict.passed(bool(verdict), reason or "(no reason given)")


EVALUATORS = (AttemptsAnswer(),)
