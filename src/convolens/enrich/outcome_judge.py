"""The LLM outcome judge: where a project chose it and has a provider, an OpenAI-compatible model reads a
few conversations in ONE request and gives each a verdict (resolved, unresolved, abandoned or unknown) and
a one-sentence reason — what LangSmith's and Langfuse's judges do, one paid call per conversation, here
batched — and the signals behind the verdict (rephrase, correction, ...), which replace the offline ones
so that a judged conversation's signals explain its verdict (the client's events, copy/share/regenerate/
edit, are facts and stay). An answer that lists no signals keeps the offline ones. The offline outcome
(enrich/outcomes.py) stays where the judge is off, fails or is over its cap.

What is sent is bounded: each conversation's last ``TURNS`` messages (as stored: PII-scrubbed), each cut
to ``TURN_CHARS``; what comes back is checked (a known verdict, an id that was asked, a printable reason).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import httpx

from convolens.enrich.llm import LlmJudge
from convolens.outbound import RefusedUrl
from convolens.store.enrichment import Turn
from convolens.store.outcome_fields import FEEDBACK_EVENTS, SIGNALS

log = logging.getLogger("convolens.llm")

VERDICTS = ("resolved", "unresolved", "abandoned", "unknown")
BATCH = 10  # conversations a request
TURNS, TURN_CHARS = 16, 600
REASON_CHARS = 300
# What the judge may say it read in a transcript (the client's events are not in the transcript).
JUDGED_SIGNALS = tuple(s for s in SIGNALS if s not in FEEDBACK_EVENTS)
SYSTEM = (
    "You read conversations between a user and an AI assistant and decide, for each, whether the user's need "
    "was met. resolved: the user got what they needed (a thank-you is not required); unresolved: they did not "
    "(they corrected the assistant, asked again, gave up or complained); abandoned: the assistant asked "
    "something or was still working on it when the user left; unknown: too little to tell. Also list the "
    "signals you saw, of: rephrase (the user asked the same again in other words), correction (the user "
    "pointed out an error), thanks, gives_up, sarcasm, repeated_answer (the assistant said the same thing "
    "twice), off_target (the answer missed the question). Answer with a JSON object only: "
    '{"conversations": [{"id": <id>, "verdict": "<resolved|unresolved|abandoned|unknown>", '
    '"reason": "<one short sentence>", "signals": ["<signal>", ...]}]}.'
)
PROMPT = "Judge these conversations:\n"  # what the request's user message starts with (tests/openai_stub.py)


def _listing(transcripts: Mapping[int, list[Turn]]) -> tuple[list[dict], dict[int, int]]:
    """The conversations as the model reads them, numbered 0..n-1 (keys stay here), and number → key."""
    listing, keys = [], {}
    for i, (key, turns) in enumerate(transcripts.items()):
        said = [t for t in turns if t.kind == "message" and t.role in ("user", "assistant")][-TURNS:]
        listing.append({"id": i, "messages": [{"role": t.role, "text": t.content[:TURN_CHARS]} for t in said]})
        keys[i] = key
    return listing, keys


def _reason(value: object) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in str(value or "")[: REASON_CHARS * 2])
    return " ".join(text.split())[:REASON_CHARS]


def _signals(value: object) -> tuple[str, ...] | None:
    """The known signal names of an answer's list, in ``SIGNALS`` order; None when it gave no list (the
    offline signals stay). Unknown names are dropped: a list of only those says "none"."""
    if not isinstance(value, list):
        return None
    named = {str(v).strip().lower() for v in value[: len(JUDGED_SIGNALS) * 2] if isinstance(v, str)}
    return tuple(s for s in JUDGED_SIGNALS if s in named)


def judge(
    llm: LlmJudge, transcripts: Mapping[int, list[Turn]]
) -> dict[int, tuple[str, str, tuple[str, ...] | None]] | None:
    """{key: (verdict, reason, signals or None)} for the conversations the answer judged (at most
    ``BATCH`` asked in one request); None when the request failed."""
    listing, keys = _listing(transcripts)
    if not listing:
        return {}
    try:
        answer = llm.ask_json(SYSTEM, PROMPT + json.dumps(listing, ensure_ascii=False))
        entries = answer["conversations"]
        if not isinstance(entries, list):
            raise ValueError("conversations is not a list")
    except RefusedUrl as exc:  # the outbound guard refused the address it connects to
        log.warning("LLM outcome judge refused: %s", exc)
        return None
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        log.warning("LLM outcome judge failed: %s", type(exc).__name__)
        return None
    out: dict[int, tuple[str, str, tuple[str, ...] | None]] = {}
    for entry in entries[: len(keys) * 2]:
        if not isinstance(entry, dict) or type(entry.get("id")) is not int or entry["id"] not in keys:
            continue
        verdict = str(entry.get("verdict", "")).strip().lower()
        if verdict in VERDICTS and keys[entry["id"]] not in out:
            out[keys[entry["id"]]] = (verdict, _reason(entry.get("reason")), _signals(entry.get("signals")))
    return out
