"""The app under test: a test case's response asked of the team's own chain over HTTP, at the URL the
project set (``PUT /api/v1/evaluations/app``), so a run tests the real prompt, retrieval and model, not a
bare model. Every request goes through the outbound guard (outbound.py): public addresses only unless
the operator's ``CONVOLENS_OUTBOUND_ALLOW`` lets it reach more; no redirects; no proxy from the environment.

The request: ``POST <url>`` with JSON ``{"test_case": name, "messages": [{"role", "content"}], "model",
"model_config", "metadata"}`` (and the project's ``Authorization`` header value, if it set one). The
answer: a 2xx with JSON ``{"response": "<text>"}`` (optionally ``"cost"``), or an OpenAI-style chat
completion (``choices[0].message.content``, with ``usage`` priced like the provider's), or ``text/plain``.
At most ``MAX_BODY_BYTES`` of it are read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from convolens.evaluations.base import Attempt, storable
from convolens.outbound import OutboundPolicy, RefusedUrl, guarded_client, redacted, validate_url

SETTING = "evaluation_app"  # the project setting that holds {url, authorization}
MAX_BODY_BYTES = 1 << 20
TIMEOUT_SECONDS = 60.0
MAX_RESPONSE_CHARS = 20_000


@dataclass(frozen=True)
class App:
    url: str
    authorization: str | None = None

    @classmethod
    def of(cls, setting: object) -> App | None:
        """The project's ``evaluation_app`` setting, if it has a usable one."""
        if not isinstance(setting, dict) or not isinstance(setting.get("url"), str):
            return None
        auth = setting.get("authorization")
        return cls(setting["url"], auth if isinstance(auth, str) and auth else None)


def _read_capped(response: httpx.Response) -> bytes:
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ValueError(f"the answer is over {MAX_BODY_BYTES} bytes")
    return body


def _text_of(body: bytes, content_type: str) -> tuple[str, dict[str, Any]]:
    """(the response text, the JSON answer or {})."""
    if content_type.startswith("text/plain"):
        return body.decode("utf-8", "replace"), {}
    answer = json.loads(body)
    if isinstance(answer, dict) and isinstance(answer.get("response"), str):
        return answer["response"], answer
    text = answer["choices"][0]["message"]["content"]
    if not isinstance(text, str):
        raise TypeError("the answer's content is not text")
    return text, answer


def ask(
    app: App, case: dict[str, Any], base: Attempt, policy: OutboundPolicy, prices: dict[str, tuple[float, float]]
) -> Attempt:
    """The app's answer to the case; an Attempt with ``error`` set when there is none."""
    from convolens.evaluations.responses import cost_of  # one module prices both sources

    request = {
        "test_case": case.get("name"),
        "messages": [{"role": m.role, "content": m.message} for m in base.messages],
        "model": case.get("model"),
        "model_config": case.get("model_config"),
        "metadata": case.get("metadata"),
    }
    headers = {"Authorization": app.authorization} if app.authorization else {}
    started = time.monotonic()
    try:
        checked = validate_url(app.url)
        with (
            guarded_client(checked, policy, timeout=TIMEOUT_SECONDS) as client,
            client.stream("POST", checked.url, json=request, headers=headers) as response,
        ):
            if not 200 <= response.status_code < 300:
                return _failed(base, f"the app under test answered HTTP {response.status_code}")
            body = _read_capped(response)
            text, answer = _text_of(body, response.headers.get("content-type", ""))
    except RefusedUrl as exc:
        return _failed(base, f"the app under test's address is refused: {exc}")
    except httpx.HTTPError as exc:
        return _failed(base, f"the app under test at {redacted(app.url)} could not be reached: {type(exc).__name__}")
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return _failed(base, f"the app under test's answer has no response: {str(exc)[:200]}")
    latency_ms = (time.monotonic() - started) * 1000
    cost = answer.get("cost") if isinstance(answer.get("cost"), int | float) else None
    if cost is None and isinstance(answer.get("usage"), dict):
        cost = cost_of(str(answer.get("model") or case.get("model")), answer["usage"], prices)
    return Attempt(
        messages=base.messages,
        response=storable(text[:MAX_RESPONSE_CHARS]),
        latency_ms=latency_ms,
        cost=float(cost) if cost is not None else None,
        model=case.get("model"),
        metadata=base.metadata,
    )


def _failed(base: Attempt, error: str) -> Attempt:
    return Attempt(base.messages, None, model=base.model, metadata=base.metadata, error=error)
