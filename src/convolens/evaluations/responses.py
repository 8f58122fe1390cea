"""Where a test case's response comes from, first that applies: its ``pregenerated_response``; the app
under test, when the project set one (app_under_test.py); else the project's configured LLM provider (the
client enrich/llm.py makes, behind the outbound guard) called with the case's messages, its ``model``
(else the provider's) and the few generation settings of its ``model_config`` in ``MODEL_CONFIG_KEYS``.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from convolens.enrich.llm import LlmJudge
from convolens.evaluations import app_under_test
from convolens.evaluations.base import Attempt, Message, storable
from convolens.outbound import OutboundPolicy, RefusedUrl

MAX_RESPONSE_CHARS = 20_000  # what a run keeps of a generated response
MODEL_CONFIG_KEYS = ("temperature", "top_p", "max_tokens", "seed", "stop", "presence_penalty", "frequency_penalty")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _messages(case: dict[str, Any]) -> tuple[Message, ...]:
    return tuple(Message(str(m.get("role")), str(m.get("message", ""))) for m in case.get("messages", []))


def pregenerated(case: dict[str, Any]) -> Attempt:
    """The case's own response, with the latency and cost its ``metadata`` gives (``latency_ms``, ``cost``)."""
    metadata = case.get("metadata") or {}
    return Attempt(
        messages=_messages(case),
        response=case["pregenerated_response"],
        latency_ms=_number(metadata.get("latency_ms")),
        cost=_number(metadata.get("cost")),
        model=case.get("model"),
        metadata=metadata,
    )


def cost_of(model: str, usage: dict[str, Any], prices: dict[str, tuple[float, float]]) -> float | None:
    price = prices.get(model)
    prompt, completion = _number(usage.get("prompt_tokens")), _number(usage.get("completion_tokens"))
    if price is None or prompt is None or completion is None:
        return None
    return (prompt * price[0] + completion * price[1]) / 1_000_000


def generated(case: dict[str, Any], provider: LlmJudge | None, prices: dict[str, tuple[float, float]]) -> Attempt:
    """The provider's answer to the case's messages; an Attempt with ``error`` set when there is none."""
    messages = _messages(case)
    model = case.get("model") or (provider.settings.model if provider else None)
    base = Attempt(messages=messages, response=None, model=model, metadata=case.get("metadata") or {})
    if provider is None:
        return _failed(base, "no response: the test case has no pregenerated_response and no LLM provider is set")
    config = case.get("model_config") or {}
    body: dict[str, Any] = {k: config[k] for k in MODEL_CONFIG_KEYS if k in config}
    body |= {"model": model, "messages": [{"role": m.role, "content": m.message} for m in messages]}
    started = time.monotonic()
    try:
        answer = provider.client.post("/chat/completions", json=body)
        answer.raise_for_status()
        data = answer.json()
        text = data["choices"][0]["message"]["content"]
        if not isinstance(text, str):
            raise TypeError("the answer's content is not text")
    except RefusedUrl as exc:
        return _failed(base, f"the LLM provider's address is refused: {exc}")
    except httpx.HTTPStatusError as exc:
        return _failed(base, f"the LLM provider answered HTTP {exc.response.status_code}")
    except httpx.HTTPError as exc:
        return _failed(base, f"the LLM provider could not be reached: {type(exc).__name__}")
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return _failed(base, f"the LLM provider's answer has no message: {type(exc).__name__}")
    latency_ms = (time.monotonic() - started) * 1000
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Attempt(
        messages=messages,
        response=storable(text[:MAX_RESPONSE_CHARS]),
        latency_ms=latency_ms,
        cost=cost_of(str(model), usage, prices),
        model=model,
        metadata=base.metadata,
    )


def _failed(base: Attempt, error: str) -> Attempt:
    return Attempt(base.messages, None, model=base.model, metadata=base.metadata, error=error)


def respond(
    case: dict[str, Any],
    provider: LlmJudge | None,
    prices: dict[str, tuple[float, float]],
    app: app_under_test.App | None = None,
    policy: OutboundPolicy | None = None,
) -> Attempt:
    if case.get("pregenerated_response") is not None:
        return pregenerated(case)
    if app is not None:
        base = Attempt(
            messages=_messages(case), response=None, model=case.get("model"), metadata=case.get("metadata") or {}
        )
        return app_under_test.ask(app, case, base, policy or OutboundPolicy(), prices)
    return generated(case, provider, prices)
