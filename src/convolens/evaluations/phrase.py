"""``context_contains_phrase``: a phrase appears in the response, or anywhere in the context window
(the input messages and the response) — e.g. that the right document was retrieved into the prompt,
or that the answer cites it.

Options: ``phrase`` (required); ``scope``: ``context_window`` (default) or ``response``;
``case_sensitive``: false by default (compared case-folded). Plain substring search: linear in the text.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from convolens.evaluations.base import (
    Attempt,
    OptionError,
    Services,
    Verdict,
    choice_option,
    no_other_options,
    text_option,
)

MAX_PHRASE_CHARS = 2000
SCOPES = {"context_window": "context_window", "response": "response", "response_only": "response"}


def _fold(text: str, case_sensitive: bool) -> str:
    text = unicodedata.normalize("NFC", text)
    return text if case_sensitive else text.casefold()


@dataclass(frozen=True)
class ContextContainsPhrase:
    name: str = "context_contains_phrase"
    offline: bool = True

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        no_other_options(options, {"phrase", "scope", "case_sensitive"})
        phrase = text_option(options, "phrase", required=True, max_chars=MAX_PHRASE_CHARS)
        case_sensitive = options.get("case_sensitive", False)
        if not isinstance(case_sensitive, bool):
            raise OptionError("case_sensitive", "must be true or false")
        return {
            "phrase": phrase,
            "scope": choice_option(options, "scope", SCOPES, "context_window"),
            "case_sensitive": case_sensitive,
        }

    def evaluate(self, attempt: Attempt, options: dict[str, Any], services: Services) -> Verdict:
        if options["scope"] == "response":
            if attempt.response is None:
                return Verdict.inconclusive("no response to search")
            text, where = attempt.response, "the response"
        else:
            text, where = attempt.context_window(), "the context window"
        found = _fold(options["phrase"], options["case_sensitive"]) in _fold(text, options["case_sensitive"])
        said = "contains" if found else "does not contain"
        return Verdict.passed(found, f"{where} {said} the phrase {options['phrase'][:200]!r}")


EVALUATORS = (ContextContainsPhrase(),)
