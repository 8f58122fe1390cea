"""``golden_response``: the response equals a known good one.

Options: ``golden_response`` (the expected text) and ``capitalization``, ``punctuation`` and
``whitespace``, each ``full`` (it counts; ``exact`` is accepted too) or ``agnostic`` (ignored: letters
compared case-folded, punctuation removed, whitespace removed). Default: all ``full``. Both texts are
compared in Unicode NFC, so an accent typed as one code point or two is the same letter.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from convolens.evaluations.base import (
    Attempt,
    Services,
    Verdict,
    choice_option,
    no_other_options,
    text_option,
)

MAX_GOLDEN_CHARS = 50_000
MODES = {"full": "full", "exact": "full", "agnostic": "agnostic"}
ASPECTS = ("capitalization", "punctuation", "whitespace")


def normalise(text: str, capitalization: str, punctuation: str, whitespace: str) -> str:
    text = unicodedata.normalize("NFC", text)
    if capitalization == "agnostic":
        text = text.casefold()
    if punctuation == "agnostic":
        text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    if whitespace == "agnostic":
        text = "".join(text.split())
    return text


def _first_difference(a: str, b: str) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


@dataclass(frozen=True)
class GoldenResponse:
    name: str = "golden_response"
    offline: bool = True

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        no_other_options(options, {"golden_response", *ASPECTS})
        golden = text_option(options, "golden_response", required=True, max_chars=MAX_GOLDEN_CHARS)
        return {"golden_response": golden, **{a: choice_option(options, a, MODES, "full") for a in ASPECTS}}

    def evaluate(self, attempt: Attempt, options: dict[str, Any], services: Services) -> Verdict:
        if attempt.response is None:
            return Verdict.inconclusive("no response to compare")
        modes = [options[a] for a in ASPECTS]
        got = normalise(attempt.response, *modes)
        want = normalise(options["golden_response"], *modes)
        ignoring = [a for a in ASPECTS if options[a] == "agnostic"]
        how = f" (ignoring {', '.join(ignoring)})" if ignoring else " (exactly)"
        if got == want:
            return Verdict.passed(True, f"the response matches the golden response{how}")
        at = _first_difference(got, want)
        return Verdict.passed(
            False,
            f"the response differs from the golden response{how} at character {at}: "
            f"{got[at : at + 40]!r} where {want[at : at + 40]!r} was expected",
        )


EVALUATORS = (GoldenResponse(),)
