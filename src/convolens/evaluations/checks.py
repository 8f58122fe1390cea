"""Plain checks people ask for: ``regex``, ``valid_json``, ``json_schema``, ``length``, ``latency``, ``cost``.

Every pattern is matched in time linear in the text: ``regex`` uses RE2 (as the PII scrubber does) and
``json_schema`` validates with jsonschema-rs on Rust's ``regex`` engine (no backreferences, no
look-around: linear), with fetching of remote ``$ref`` documents turned off.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import orjson
import re2

from convolens.evaluations.base import (
    Attempt,
    OptionError,
    Reason,
    Services,
    Verdict,
    choice_option,
    no_other_options,
    number_option,
    text_option,
)
from convolens.schemas.bounds import json_problem

MAX_PATTERN_CHARS = 1000
# RE2's memory for one compiled pattern: ``a{1000}{1000}`` and the like fail to compile instead of
# taking the worker's memory.
PATTERN_MAX_MEM = 8 << 20
MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH = 20_000, 16
SCOPES = {"response": "response", "context_window": "context_window"}


@functools.lru_cache(maxsize=256)  # a run evaluates the same few patterns over and over
def _compile(pattern: str) -> Any:
    options = re2.Options()
    options.max_mem = PATTERN_MAX_MEM
    options.log_errors = False
    return re2.compile(pattern, options)


def _searched(attempt: Attempt, scope: str) -> str | None:
    return attempt.response if scope == "response" else attempt.context_window()


@dataclass(frozen=True)
class Regex:
    """Options: ``pattern`` (RE2 syntax), ``scope`` (``response`` by default, or ``context_window``),
    ``expect``: ``match`` (default: the pattern must be found) or ``no_match`` (it must not be)."""

    name: str = "regex"
    offline: bool = True

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        no_other_options(options, {"pattern", "scope", "expect"})
        pattern = text_option(options, "pattern", required=True, max_chars=MAX_PATTERN_CHARS)
        try:
            _compile(pattern)
        except re2.error as exc:
            raise OptionError(
                "pattern", f"is not a pattern RE2 accepts (no backreferences or look-around): {exc}"
            ) from None
        return {
            "pattern": pattern,
            "scope": choice_option(options, "scope", SCOPES, "response"),
            "expect": choice_option(options, "expect", {"match": "match", "no_match": "no_match"}, "match"),
        }

    def evaluate(self, attempt: Attempt, options: dict[str, Any], services: Services) -> Verdict:
        text = _searched(attempt, options["scope"])
        if text is None:
            return Verdict.inconclusive("no response to match")
        found = _compile(options["pattern"]).search(text)
        shown = options["pattern"][:200]
        if options["expect"] == "match":
            if found:
                return Verdict.passed(True, f"{shown!r} matches {found.group(0)[:100]!r}")
            return Verdict.passed(False, f"{shown!r} matches nothing in the {options['scope'].replace('_', ' ')}")
        if found:
            return Verdict.passed(False, f"{shown!r} matches {found.group(0)[:100]!r}, which it must not")
        return Verdict.passed(True, f"{shown!r} matches nothing, as required")


def _parsed(response: str) -> tuple[bool, Any, str]:
    """(parsed?, value, why not): orjson refuses nesting past 1,024 levels instead of recursing."""
    try:
        return True, orjson.loads(response), ""
    except orjson.JSONDecodeError as exc:
        return False, None, str(exc)[:200]


@dataclass(frozen=True)
class ValidJson:
    """The response is one JSON value (no options)."""

    name: str = "valid_json"
    offline: bool = True

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        no_other_options(options, set())
        return {}

    def evaluate(self, attempt: Attempt, options: dict[str, Any], services: Services) -> Verdict:
        if attempt.response is None:
            return Verdict.inconclusive("no response to parse")
        ok, _, why = _parsed(attempt.response)
        return Verdict.passed(ok, "the response is valid JSON" if ok else f"the response is not valid JSON: {why}")


def _validator(schema: Any) -> Any:
    import jsonschema_rs

    return jsonschema_rs.validator_for(
        schema, pattern_options=jsonschema_rs.RegexOptions(size_limit=PATTERN_MAX_MEM), offline=True
    )


@dataclass(frozen=True)
class JsonSchema:
    """Options: ``schema``, a JSON Schema (draft 4 to 2020-12, detected from ``$schema``; 2020-12 by
    default). The response must parse as JSON and be valid against it; each violation is a reason."""

    name: str = "json_schema"
    offline: bool = True

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        no_other_options(options, {"schema"})
        schema = options.get("schema")
        if not isinstance(schema, dict | bool):
            raise OptionError("schema", "is required: a JSON Schema object")
        problem = json_problem(schema, MAX_SCHEMA_DEPTH, MAX_SCHEMA_BYTES)
        if problem is not None:
            raise OptionError("schema", problem[1])
        try:
            _validator(schema)
        except Exception as exc:  # jsonschema-rs raises ValidationError/ReferencingError/ValueError
            raise OptionError("schema", f"is not a usable JSON Schema: {str(exc).splitlines()[0][:200]}") from None
        return {"schema": schema}

    def evaluate(self, attempt: Attempt, options: dict[str, Any], services: Services) -> Verdict:
        if attempt.response is None:
            return Verdict.inconclusive("no response to validate")
        ok, value, why = _parsed(attempt.response)
        if not ok:
            return Verdict.passed(False, f"the response is not valid JSON: {why}")
        errors = []
        for error in _validator(options["schema"]).iter_errors(value):
            errors.append(f"{error.message[:200]} (at /{'/'.join(str(p) for p in error.instance_path)})")
            if len(errors) >= 10:
                break
        if not errors:
            return Verdict.passed(True, "the response is valid against the schema")
        return Verdict.passed(False, "; ".join(errors))


@dataclass(frozen=True)
class Length:
    """Options: ``min_chars``, ``max_chars``, ``min_words``, ``max_words`` (at least one)."""

    name: str = "length"
    offline: bool = True

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        keys = ("min_chars", "max_chars", "min_words", "max_words")
        no_other_options(options, set(keys))
        found = {}
        for key in keys:
            value = number_option(options, key, low=0, high=10_000_000)
            if value is not None:
                if value != int(value):
                    raise OptionError(key, "must be a whole number")
                found[key] = int(value)
        if not found:
            raise OptionError("max_chars", f"at least one of {', '.join(keys)} is required")
        return found

    def evaluate(self, attempt: Attempt, options: dict[str, Any], services: Services) -> Verdict:
        if attempt.response is None:
            return Verdict.inconclusive("no response to measure")
        chars, words = len(attempt.response), len(attempt.response.split())
        checks = []
        for key, limit in options.items():
            value, unit = (chars, "characters") if key.endswith("chars") else (words, "words")
            ok = value >= limit if key.startswith("min") else value <= limit
            bound = "at least" if key.startswith("min") else "at most"
            checks.append((ok, f"{value} {unit}, {bound} {limit} {'as required' if ok else 'required'}"))
        return Verdict.of([Reason(ok, text) for ok, text in checks])


@dataclass(frozen=True)
class Latency:
    """Options: ``max_ms``. The response's latency is measured when it is generated, or given as a test
    case's ``metadata.latency_ms`` with a pre-generated response; without one the verdict is inconclusive."""

    name: str = "latency"
    offline: bool = True

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        no_other_options(options, {"max_ms"})
        value = number_option(options, "max_ms", low=0, high=3_600_000)
        if value is None:
            raise OptionError("max_ms", "is required")
        return {"max_ms": value}

    def evaluate(self, attempt: Attempt, options: dict[str, Any], services: Services) -> Verdict:
        if attempt.latency_ms is None:
            return Verdict.inconclusive("the response's latency is not known")
        ok = attempt.latency_ms <= options["max_ms"]
        return Verdict.passed(ok, f"{attempt.latency_ms:.0f} ms, at most {options['max_ms']:.0f} ms allowed")


@dataclass(frozen=True)
class Cost:
    """Options: ``max_cost`` (in the currency of the project's model prices, USD by default). The cost is
    estimated from the generated response's token counts and the model's price, or given as a test
    case's ``metadata.cost``; without one the verdict is inconclusive."""

    name: str = "cost"
    offline: bool = True

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        no_other_options(options, {"max_cost"})
        value = number_option(options, "max_cost", low=0, high=1_000_000)
        if value is None:
            raise OptionError("max_cost", "is required")
        return {"max_cost": value}

    def evaluate(self, attempt: Attempt, options: dict[str, Any], services: Services) -> Verdict:
        if attempt.cost is None:
            return Verdict.inconclusive("the response's cost is not known (no token counts or no price for its model)")
        ok = attempt.cost <= options["max_cost"]
        return Verdict.passed(ok, f"cost {attempt.cost:.6f}, at most {options['max_cost']:.6f} allowed")


EVALUATORS = (Regex(), ValidJson(), JsonSchema(), Length(), Latency(), Cost())
