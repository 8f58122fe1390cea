"""One work item of a run: get the case's response, then every evaluator's verdict on it.

Never raises for what a test case or a response holds: an evaluator that fails gives an inconclusive
verdict naming the failure, so one bad evaluator cannot stop a run (or kill its worker in a loop).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from convolens.enrich.llm import LlmJudge
from convolens.evaluations import registry
from convolens.evaluations.app_under_test import App
from convolens.evaluations.base import Attempt, OptionError, Verdict
from convolens.evaluations.responses import respond
from convolens.outbound import OutboundPolicy

log = logging.getLogger("convolens.evaluations")


class LeaseLost(BaseException):  # not an Exception: evaluators' own except clauses must not stop it
    """The worker no longer holds the item (its lease ran out and another worker took it): stop."""


KeepAlive = Callable[[], bool]  # renews the worker's lease on the item; False when it was lost


class ProjectServices:
    """What evaluators may use beyond the text: the project's LLM provider (llm_judge), with the item's
    lease renewed before each call (a provider may take its whole timeout)."""

    def __init__(self, provider: LlmJudge | None, keep_alive: KeepAlive | None = None) -> None:
        self.provider = provider
        self.keep_alive = keep_alive

    def llm_json(self, system: str, user: str) -> Any:
        if self.provider is None:
            raise RuntimeError("no LLM provider is set for this project")
        if self.keep_alive is not None and not self.keep_alive():
            raise LeaseLost
        return self.provider.ask_json(system, user)


def evaluation_json(name: str, verdict: Verdict) -> dict[str, Any]:
    """One evaluation as Context's ``Evaluation``."""
    return {
        "evaluator_name": name,
        "outcome": verdict.outcome,
        "reasoning": {"result": [r.as_json() for r in verdict.reasons]},
    }


def judge(attempt: Attempt, evaluators: list[dict[str, Any]], services: ProjectServices) -> list[dict[str, Any]]:
    out = []
    for spec in evaluators:
        name = str(spec.get("evaluator"))
        evaluator = registry.get(name)
        if evaluator is None:
            verdict = Verdict.inconclusive(f"the evaluator {name!r} is not installed on this worker")
        else:
            try:
                options = evaluator.check_options(dict(spec.get("options") or {}))
                verdict = evaluator.evaluate(attempt, options, services)
            except OptionError as exc:
                verdict = Verdict.inconclusive(f"options.{exc.field}: {exc.msg}")
            except Exception as exc:  # a plugin's bug: named in the verdict, logged in full
                log.exception("evaluator %s failed", name)
                verdict = Verdict.inconclusive(f"the evaluator failed: {type(exc).__name__}")
        out.append(evaluation_json(name, verdict))
    return out


def evaluate_case(
    case: dict[str, Any],
    set_evaluators: list[dict[str, Any]],
    provider: LlmJudge | None,
    prices: dict[str, tuple[float, float]],
    app: App | None = None,
    policy: OutboundPolicy | None = None,
    keep_alive: KeepAlive | None = None,
) -> tuple[str | None, dict[str, Any]]:
    """(the response, the item's result: evaluations, error, latency_ms, cost, model). Raises
    ``LeaseLost`` when ``keep_alive`` says the item went to another worker meanwhile."""
    attempt = respond(case, provider, prices, app, policy)
    if keep_alive is not None and not keep_alive():
        raise LeaseLost
    services = ProjectServices(provider, keep_alive)
    evaluations = judge(attempt, [*set_evaluators, *(case.get("evaluators") or [])], services)
    result = {
        "evaluations": evaluations,
        "error": attempt.error,
        "latency_ms": attempt.latency_ms,
        "cost": attempt.cost,
        "model": attempt.model,
    }
    return attempt.response, result
