"""``llm_judge``: the project's configured LLM provider (the one its LLM topics and outcome judge use,
through the same client and outbound guard) decides whether the response meets a criterion the test
set writes, and says why.

Options: ``prompt`` (the criterion, e.g. "The answer must recommend contacting support"). The judge
sees the test case's messages and the response, each cut to ``MAX_CHARS``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from convolens.evaluations.base import Attempt, Services, Verdict, no_other_options, text_option

MAX_PROMPT_CHARS = 4000
MAX_CHARS = 4000
SYSTEM = (
    "You evaluate a response that an AI assistant gave in a conversation, against a criterion. Answer with "
    'a JSON object only: {"verdict": true or false, "reason": "<one or two sentences>"}. verdict is true '
    "when the response meets the criterion."
)
PROMPT = "Evaluate this response:\n"  # what the request's user message starts with (tests/openai_stub.py rules)


@dataclass(frozen=True)
class LlmJudge:
    name: str = "llm_judge"
    offline: bool = False

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        no_other_options(options, {"prompt"})
        return {"prompt": text_option(options, "prompt", required=True, max_chars=MAX_PROMPT_CHARS)}

    def evaluate(self, attempt: Attempt, options: dict[str, Any], services: Services) -> Verdict:
        if attempt.response is None:
            return Verdict.inconclusive("no response to judge")
        asked = {
            "criterion": options["prompt"],
            "conversation": [{"role": m.role, "message": m.message[:MAX_CHARS]} for m in attempt.messages[-20:]],
            "response": attempt.response[:MAX_CHARS],
        }
        try:
            answer = services.llm_json(SYSTEM, PROMPT + json.dumps(asked, ensure_ascii=False))
            verdict = answer["verdict"]
            if isinstance(verdict, str):
                verdict = verdict.strip().lower() in ("true", "yes", "1", "pass", "passed")
            reason = " ".join(str(answer.get("reason", "")).split())[:500]
        except Exception as exc:  # no provider, refused URL, HTTP error, an answer without a verdict
            return Verdict.inconclusive(f"the LLM judge gave no verdict: {str(exc)[:200] or type(exc).__name__}")
        return Verdict.passed(bool(verdict), reason or "(the judge gave no reason)")


EVALUATORS = (LlmJudge(),)
