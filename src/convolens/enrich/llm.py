"""LLM topics: an OpenAI-compatible chat model decides, per user message, whether it is about a topic,
and says why — Context's ``{verdict, reason}``. Used only where a provider is configured, for the
server (``CONVOLENS_LLM_BASE_URL``, ``CONVOLENS_LLM_API_KEY``, ``CONVOLENS_LLM_MODEL``) or for a project
on its settings page: nothing leaves the machine otherwise. Messages reach the model after PII scrubbing,
like everything stored.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from convolens.config import LlmSettings
from convolens.outbound import OutboundPolicy, RefusedUrl, guarded_client, validate_url

log = logging.getLogger("convolens.llm")

SYSTEM = (
    "You classify messages that users sent to an AI assistant. You are given a topic definition and one "
    'message. Answer with a JSON object only: {"verdict": true or false, "reason": "<one short sentence>"}. '
    "verdict is true when the message is about the topic."
)
MAX_MESSAGE_CHARS = 4000
NAMING_SYSTEM = (
    "You name groups of messages that users sent to an AI assistant. For each group you are given its id, "
    "its distinctive keywords and a few of its messages. Answer with a JSON object only: "
    '{"clusters": [{"id": <id>, "name": "<2-5 words>", "description": "<one sentence: what these users ask>"}]}.'
)
NAMING_PROMPT = "Name these groups:\n"  # what the request's user message starts with (tests/openai_stub.py)
NAME_CHARS, DESCRIPTION_CHARS = 80, 300
NAMING_MESSAGES, NAMING_MESSAGE_CHARS = 5, 300  # representative messages a group, and characters of each


@dataclass(frozen=True)
class ClusterName:
    name: str
    description: str


def _clean(value: object, limit: int) -> str:
    """A model's string made safe to store: one line, no control characters, bounded."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value or "")[: limit * 2])
    return " ".join(text.split()).strip("\"'* ")[:limit]


@dataclass(frozen=True)
class Verdict:
    verdict: bool
    reason: str


class LlmJudge:
    """One provider's client. With a ``policy`` (a URL a project admin chose) the URL must pass
    ``validate_url`` (else ``RefusedUrl`` here) and every connection the outbound guard; without one (the
    operator's own ``CONVOLENS_LLM_BASE_URL``) the URL is trusted as given."""

    def __init__(
        self,
        settings: LlmSettings,
        transport: httpx.BaseTransport | None = None,
        policy: OutboundPolicy | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self.settings = settings
        if policy is not None:
            url = validate_url(settings.base_url or "")
            self.client = guarded_client(url, policy, headers=headers, timeout=settings.timeout_seconds)
        else:
            self.client = httpx.Client(
                base_url=settings.base_url or "", headers=headers, timeout=settings.timeout_seconds, transport=transport
            )

    def ask_json(self, system: str, user: str) -> Any:
        """One chat completion that asks for a JSON object, and the object its answer holds (a model may
        wrap it in prose). Raises ``RefusedUrl``, ``httpx.HTTPError``, or ``ValueError``/``KeyError``/
        ``IndexError``/``TypeError`` for an answer without one: each caller decides what a failure means."""
        body = {
            "model": self.settings.model,
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }
        response = self.client.post("/chat/completions", json=body)
        response.raise_for_status()
        content = str(response.json()["choices"][0]["message"]["content"])
        start, end = content.find("{"), content.rfind("}")
        return json.loads(content[start : end + 1])

    def judge(self, topic_prompt: str, text: str) -> Verdict | None:
        """The model's verdict, or None when it could not be had (the message is then not tagged)."""
        try:
            answer = self.ask_json(SYSTEM, f"Topic: {topic_prompt}\n\nMessage: {text[:MAX_MESSAGE_CHARS]}")
            verdict = answer.get("verdict")
            if isinstance(verdict, str):
                verdict = verdict.strip().lower() in ("true", "yes", "1")
            return Verdict(bool(verdict), str(answer.get("reason", ""))[:500])
        except RefusedUrl as exc:  # the outbound guard refused the address it connects to
            log.warning("LLM topic verdict refused: %s", exc)
            return None
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            log.warning("LLM topic verdict failed: %s", type(exc).__name__)
            return None

    def name_clusters(self, groups: list[tuple[list[str], list[str]]]) -> list[ClusterName | None] | None:
        """Names and one-sentence descriptions for clusters of user messages, each given as (a few of its
        most representative messages, its keywords), in ONE request. None when the request fails; an
        entry is None where the answer has no usable name for that cluster."""
        listing = [
            {
                "id": i,
                "keywords": [k[:40] for k in keywords[:8]],
                "messages": [m[:NAMING_MESSAGE_CHARS] for m in phrases[:NAMING_MESSAGES]],
            }
            for i, (phrases, keywords) in enumerate(groups)
        ]
        try:
            answer = self.ask_json(NAMING_SYSTEM, NAMING_PROMPT + json.dumps(listing, ensure_ascii=False))
            entries = answer["clusters"]
            if not isinstance(entries, list):
                raise ValueError("clusters is not a list")
        except RefusedUrl as exc:
            log.warning("LLM cluster names refused: %s", exc)
            return None
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            log.warning("LLM cluster names failed: %s", type(exc).__name__)
            return None
        out: list[ClusterName | None] = [None] * len(groups)
        for entry in entries[: len(groups) * 2]:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), int):
                continue
            name = _clean(entry.get("name"), NAME_CHARS)
            if 0 <= entry["id"] < len(groups) and name and out[entry["id"]] is None:
                out[entry["id"]] = ClusterName(name, _clean(entry.get("description"), DESCRIPTION_CHARS))
        return out

    def judge_many(self, pairs: list[tuple[str, str]]) -> list[Verdict | None]:
        """Verdicts for (topic prompt, message) pairs, a few requests at a time."""
        if not pairs:
            return []
        with ThreadPoolExecutor(max_workers=max(1, self.settings.concurrency)) as pool:
            return list(pool.map(lambda pair: self.judge(*pair), pairs))

    def close(self) -> None:
        self.client.close()


class Judges:
    """The judge of each project: the provider its admins set on the dashboard's settings page, else the
    server's (``CONVOLENS_LLM_*``), else none. ``load`` gives ``{project key: {base_url, model, api_key}}``
    and is asked again at most every ``refresh_seconds``; one client per distinct provider. A project's
    provider is a URL its admins chose: it goes through the outbound guard with ``policy`` (the operator's
    allowlist; by default only public addresses), and one the guard refuses judges nothing."""

    def __init__(
        self,
        default: LlmSettings | None,
        load: Callable[[], dict[int, dict]],
        refresh_seconds: float = 30.0,
        policy: OutboundPolicy | None = None,
    ) -> None:
        self.default = LlmJudge(default) if default is not None and default.enabled else None
        self._load = load
        self._refresh_seconds = refresh_seconds
        self._loaded_at = float("-inf")
        self._settings: dict[int, dict] = {}
        self._policy = policy or OutboundPolicy()
        self._clients: dict[tuple[str, str, str | None], LlmJudge | None] = {}

    def for_project(self, project_pk: int) -> LlmJudge | None:
        if time.monotonic() - self._loaded_at > self._refresh_seconds:
            try:
                self._settings = self._load()
            except Exception:  # keep the last known settings; the database may be briefly away
                log.warning("could not read the projects' LLM settings")
            self._loaded_at = time.monotonic()
        own = self._settings.get(project_pk) or {}
        if not own.get("base_url"):
            return self.default
        key = (str(own["base_url"]), str(own.get("model") or LlmSettings.model), own.get("api_key"))
        if key not in self._clients:
            try:
                self._clients[key] = LlmJudge(
                    LlmSettings(base_url=key[0], model=key[1], api_key=key[2]), policy=self._policy
                )
            except RefusedUrl as exc:  # saved before the guard existed, or written past the settings page
                log.warning("project %d: its LLM provider is refused: %s", project_pk, exc)
                self._clients[key] = None
        return self._clients[key]

    def close(self) -> None:
        for judge in [self.default, *self._clients.values()]:
            if judge is not None:
                judge.close()
