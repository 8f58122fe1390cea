"""What every evaluator is: a name, a check of its options (at upload, so a bad option is a 422 naming
it, never a failed run), and a verdict on one generated response.

Outcomes are Context's: ``positive`` (passed), ``negative`` (failed), ``partially_passed`` (some of the
evaluator's checks passed) and ``inconclusive`` (it could not decide: no response, a provider that
failed). Each verdict carries its reasons as Context's ``[{verdict: bool, reason: str}]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Outcome = Literal["positive", "negative", "partially_passed", "inconclusive"]
OUTCOMES: tuple[Outcome, ...] = ("positive", "negative", "partially_passed", "inconclusive")
MAX_REASON_CHARS = 1000


def storable(text: str) -> str:
    """``text`` without what neither database nor JSON writer takes: NUL, unpaired UTF-16 surrogates (a
    provider's JSON may spell one as ``\\ud800``)."""
    if text.isascii():
        return text.replace("\x00", "")
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


@dataclass(frozen=True)
class Reason:
    verdict: bool
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": storable(self.reason[:MAX_REASON_CHARS])}


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reasons: tuple[Reason, ...] = ()

    @classmethod
    def of(cls, checks: list[Reason]) -> Verdict:
        """positive if every check passed, negative if none did, partially_passed in between."""
        passed = sum(1 for c in checks if c.verdict)
        if not checks:
            return cls("inconclusive", (Reason(False, "nothing to check"),))
        outcome: Outcome = "positive" if passed == len(checks) else "negative" if passed == 0 else "partially_passed"
        return cls(outcome, tuple(checks))

    @classmethod
    def passed(cls, passed: bool, reason: str) -> Verdict:
        return cls("positive" if passed else "negative", (Reason(passed, reason),))

    @classmethod
    def inconclusive(cls, reason: str) -> Verdict:
        return cls("inconclusive", (Reason(False, reason),))


@dataclass(frozen=True)
class Message:
    role: str  # system | user | assistant
    message: str


@dataclass(frozen=True)
class Attempt:
    """One test case's input and the response generated for it: what an evaluator judges."""

    messages: tuple[Message, ...]
    response: str | None  # None: no response could be had (see ``error``)
    latency_ms: float | None = None
    cost: float | None = None  # in the currency of the project's price table (USD by default)
    model: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def context_window(self) -> str:
        """The input messages and the response, one after the other, as one text."""
        parts = [m.message for m in self.messages]
        if self.response is not None:
            parts.append(self.response)
        return "\n".join(parts)


class OptionError(ValueError):
    """An evaluator's option that is missing or wrong: ``field`` is its name inside ``options``."""

    def __init__(self, field: str, msg: str) -> None:
        super().__init__(f"{field}: {msg}")
        self.field = field
        self.msg = msg


class Evaluator(Protocol):
    """The interface a custom evaluator implements (and registers under the ``convolens.evaluators``
    entry point group, see registry.py). ``check_options`` gets the options as uploaded and returns
    them normalised (defaults filled in) or raises ``OptionError``; ``evaluate`` must not raise for any
    response (it is the tested text of a model: hostile) and should bound its own time."""

    name: str
    offline: bool  # True: no network, no paid provider (may run freely); False: it calls the LLM provider

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]: ...

    def evaluate(self, attempt: Attempt, options: dict[str, Any], services: Services) -> Verdict: ...


class Services(Protocol):
    """What the run gives evaluators that need more than the text: the project's LLM provider."""

    def llm_json(self, system: str, user: str) -> Any:
        """One JSON answer from the project's configured provider (raises if there is none or it fails)."""
        ...


def text_option(options: dict[str, Any], name: str, *, required: bool, max_chars: int) -> str | None:
    value = options.get(name)
    if value is None:
        if required:
            raise OptionError(name, "is required")
        return None
    if not isinstance(value, str) or not value:
        raise OptionError(name, "must be a non-empty string")
    if len(value) > max_chars:
        raise OptionError(name, f"must be at most {max_chars} characters")
    return value


def choice_option(options: dict[str, Any], name: str, choices: dict[str, str], default: str) -> str:
    """One of ``choices`` (a spelling → its canonical value), or ``default`` when absent."""
    value = options.get(name, default)
    if not isinstance(value, str) or value not in choices:
        raise OptionError(name, f"must be one of {sorted(choices)}")
    return choices[value]


def number_option(
    options: dict[str, Any], name: str, *, low: float, high: float, default: float | None = None
) -> float | None:
    value = options.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise OptionError(name, f"must be a number from {low} to {high}")
    return float(value)


def no_other_options(options: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        raise OptionError(unknown[0], f"is not an option of this evaluator (known: {sorted(known)})")
