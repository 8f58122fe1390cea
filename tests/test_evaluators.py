"""Each offline evaluator on cases that pass and cases that fail, with the exact verdicts and reasons;
the registry and its entry point group."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from convolens.evaluations import registry
from convolens.evaluations.base import Attempt, Message, OptionError
from convolens.evaluations.run import ProjectServices, judge

NO_SERVICES = ProjectServices(None)


def attempt(response: str | None, *, user: str = "What is the capital of France?", **kwargs) -> Attempt:
    return Attempt(messages=(Message("system", "Be brief."), Message("user", user)), response=response, **kwargs)


def verdict(name: str, response: str | None, options: dict | None = None, **kwargs):
    evaluator = registry.get(name)
    assert evaluator is not None
    return evaluator.evaluate(attempt(response, **kwargs), evaluator.check_options(dict(options or {})), NO_SERVICES)


def outcome(name: str, response: str | None, options: dict | None = None, **kwargs) -> str:
    return verdict(name, response, options, **kwargs).outcome


def test_golden_response_is_exact_by_default_and_each_aspect_can_be_ignored() -> None:
    golden = {"golden_response": "Paris is the capital of France."}
    assert outcome("golden_response", "Paris is the capital of France.", golden) == "positive"
    found = verdict("golden_response", "paris is the capital of France.", golden)
    assert found.outcome == "negative"
    assert found.reasons[0].reason == (
        "the response differs from the golden response (exactly) at character 0: "
        "'paris is the capital of France.' where 'Paris is the capital of France.' was expected"
    )
    assert outcome("golden_response", "paris is the capital of france.", golden | {"capitalization": "agnostic"}) == (
        "positive"
    )
    assert outcome("golden_response", "Paris is the capital of France", golden) == "negative"
    assert outcome("golden_response", "Paris is the capital of France", golden | {"punctuation": "agnostic"}) == (
        "positive"
    )
    assert outcome("golden_response", "Paris  is the capital\nof France.", golden) == "negative"
    assert outcome("golden_response", "Paris  is the capital\nof France.", golden | {"whitespace": "agnostic"}) == (
        "positive"
    )
    everything = golden | {"capitalization": "agnostic", "punctuation": "agnostic", "whitespace": "agnostic"}
    assert outcome("golden_response", "  PARIS is the capital of france!! ", everything) == "positive"
    assert outcome("golden_response", "Lyon is the capital of France.", everything) == "negative"
    # "exact" is accepted for "full"; a composed and a decomposed é are one letter.
    assert outcome("golden_response", "Café", {"golden_response": "Cafe\u0301", "capitalization": "exact"}) == (
        "positive"
    )
    assert outcome("golden_response", None, golden) == "inconclusive"


def test_golden_response_options_are_checked() -> None:
    evaluator = registry.get("golden_response")
    with pytest.raises(OptionError) as missing:
        evaluator.check_options({})
    assert missing.value.field == "golden_response"
    with pytest.raises(OptionError) as wrong:
        evaluator.check_options({"golden_response": "x", "punctuation": "loose"})
    assert wrong.value.field == "punctuation"
    with pytest.raises(OptionError) as unknown:
        evaluator.check_options({"golden_response": "x", "casing": "agnostic"})
    assert unknown.value.field == "casing"


def test_context_contains_phrase_in_the_window_or_the_response_only() -> None:
    assert outcome("context_contains_phrase", "It is Paris.", {"phrase": "paris"}) == "positive"
    # The phrase is in the input only: found in the whole window, not in the response.
    assert outcome("context_contains_phrase", "It is Paris.", {"phrase": "capital of France"}) == "positive"
    found = verdict("context_contains_phrase", "It is Paris.", {"phrase": "capital of France", "scope": "response"})
    assert found.outcome == "negative"
    assert found.reasons[0].reason == "the response does not contain the phrase 'capital of France'"
    assert outcome("context_contains_phrase", "It is Paris.", {"phrase": "paris", "case_sensitive": True}) == (
        "negative"
    )
    with pytest.raises(OptionError) as bad_scope:
        registry.get("context_contains_phrase").check_options({"phrase": "x", "scope": "everything"})
    assert bad_scope.value.field == "scope"


def test_regex_is_re2_and_can_require_a_match_or_its_absence() -> None:
    assert outcome("regex", "Order #12345 shipped", {"pattern": r"#\d{5}\b"}) == "positive"
    assert outcome("regex", "Order shipped", {"pattern": r"#\d{5}\b"}) == "negative"
    assert outcome("regex", "Call 555-0100", {"pattern": r"\d{3}-\d{4}", "expect": "no_match"}) == "negative"
    assert outcome("regex", "No number here", {"pattern": r"\d{3}-\d{4}", "expect": "no_match"}) == "positive"
    # A pattern that backtracking engines take exponential time on is just a pattern to RE2.
    assert outcome("regex", "a" * 30_000 + "!", {"pattern": r"^(a+)+$"}) == "negative"
    evaluator = registry.get("regex")
    for pattern in (r"(a)\1", r"(?=a)b", "a{1000}{1000}"):  # backreference, look-ahead, too large
        with pytest.raises(OptionError) as refused:
            evaluator.check_options({"pattern": pattern})
        assert refused.value.field == "pattern"


def test_json_checks() -> None:
    assert outcome("valid_json", '{"a": [1, 2]}') == "positive"
    assert outcome("valid_json", "{'a': 1}") == "negative"
    assert outcome("valid_json", "[" * 5000 + "]" * 5000) == "negative"  # too deep: refused, no recursion
    schema = {
        "type": "object",
        "required": ["city", "population"],
        "properties": {"city": {"type": "string", "pattern": "^[A-Z]"}, "population": {"type": "integer"}},
    }
    assert outcome("json_schema", '{"city": "Paris", "population": 2102650}', {"schema": schema}) == "positive"
    found = verdict("json_schema", '{"city": "paris", "population": "many"}', {"schema": schema})
    assert found.outcome == "negative"
    assert "at /city" in found.reasons[0].reason and "at /population" in found.reasons[0].reason
    assert outcome("json_schema", "not json", {"schema": schema}) == "negative"
    evaluator = registry.get("json_schema")
    for bad in ({"$ref": "http://169.254.169.254/latest"}, {"pattern": r"(a)\1"}, {"type": "nothing"}):
        with pytest.raises(OptionError) as refused:
            evaluator.check_options({"schema": bad})
        assert refused.value.field == "schema"


def test_length_latency_and_cost() -> None:
    assert outcome("length", "four words right here", {"min_words": 2, "max_words": 4}) == "positive"
    found = verdict("length", "four words right here", {"min_chars": 5, "max_words": 3})
    assert found.outcome == "partially_passed"
    assert [r.verdict for r in found.reasons] == [True, False]
    assert outcome("length", "x", {"min_chars": 5}) == "negative"
    with pytest.raises(OptionError):
        registry.get("length").check_options({})
    assert outcome("latency", "ok", {"max_ms": 500}, latency_ms=420.0) == "positive"
    assert outcome("latency", "ok", {"max_ms": 500}, latency_ms=501.0) == "negative"
    assert outcome("latency", "ok", {"max_ms": 500}) == "inconclusive"
    assert outcome("cost", "ok", {"max_cost": 0.01}, cost=0.002) == "positive"
    assert outcome("cost", "ok", {"max_cost": 0.001}, cost=0.002) == "negative"


def test_a_failing_or_missing_evaluator_gives_an_inconclusive_verdict_not_a_crash() -> None:
    class Broken:
        name = "broken_for_test"
        offline = True

        def check_options(self, options: dict) -> dict:
            return options

        def evaluate(self, attempt, options, services):
            raise ZeroDivisionError

    registry.register(Broken())
    found = judge(attempt("x"), [{"evaluator": "broken_for_test"}, {"evaluator": "not_installed"}], NO_SERVICES)
    assert [(e["evaluator_name"], e["outcome"]) for e in found] == [
        ("broken_for_test", "inconclusive"),
        ("not_installed", "inconclusive"),
    ]
    assert found[0]["reasoning"]["result"] == [{"verdict": False, "reason": "the evaluator failed: ZeroDivisionError"}]
    with pytest.raises(ValueError, match="built-in"):
        registry.register(type("Fake", (), {"name": "regex", "check_options": len, "evaluate": len})())


def test_custom_evaluators_register_through_the_entry_point_group(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "polite_eval.py").write_text(
        textwrap.dedent(
            """
            from convolens.evaluations.base import Verdict

            class Polite:
                name = "polite"
                offline = True

                def check_options(self, options):
                    return {}

                def evaluate(self, attempt, options, services):
                    said = (attempt.response or "").lower()
                    return Verdict.passed("please" in said or "thank" in said, "politeness words")
            """
        )
    )
    dist = tmp_path / "polite_eval-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: polite-eval\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\npolite = polite_eval:Polite\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_registered", {})
    monkeypatch.setattr(registry, "_builtin_names", set())
    monkeypatch.setattr(registry, "_loaded", False)
    assert "polite" in registry.names() and "golden_response" in registry.names()
    assert outcome("polite", "Thank you for asking") == "positive"
    assert outcome("polite", "No.") == "negative"
    sys.modules.pop("polite_eval", None)


def test_semantic_match_accepts_paraphrases_in_any_language_and_refuses_other_answers() -> None:
    golden = {"golden_response": "You can return the shoes within 30 days for a full refund."}
    assert outcome("semantic_match", "Shoes may be sent back within thirty days and you get all your money back.",
                   golden) == "positive"  # fmt: skip
    assert outcome("semantic_match", "Puede devolver los zapatos en 30 días y le reembolsamos todo.", golden) == (
        "positive"
    )
    found = verdict("semantic_match", "Our stores open at 9am every day.", golden)
    assert found.outcome == "negative"
    assert found.reasons[0].reason.startswith("similarity to the golden response 0.")
    assert found.reasons[0].reason.endswith("below the threshold 0.56")
    # A project may set its own bar: 0.99 is more than a paraphrase reaches.
    strict = golden | {"threshold": 0.99}
    assert outcome("semantic_match", "Shoes may be sent back within thirty days for a full refund.", strict) == (
        "negative"
    )
    assert outcome("semantic_match", "", golden) == "inconclusive"
    with pytest.raises(OptionError) as bad:
        registry.get("semantic_match").check_options(golden | {"threshold": 2})
    assert bad.value.field == "threshold"


def test_semantic_match_can_require_a_response_unlike_one_to_avoid() -> None:
    avoid = {"golden_response": "I can't help with refunds, please call the store.", "expect": "different"}
    found = verdict("semantic_match", "Sorry, I cannot help you with refunds; call the shop.", avoid)
    assert found.outcome == "negative"
    assert found.reasons[0].reason.startswith("similarity to the response to avoid 0.")
    assert outcome("semantic_match", "Your refund of $20 was issued today.", avoid) == "positive"
