"""A trace's spans → one conversation turn → events of the native ``IngestBatch``.

The turn is the trace's last model call (by end time): its input history plus its output. An agent's
nested calls, and the workflow spans around them, are not turns of their own: the last call's input
already holds what came before it. A trace with no model call that carries messages, but with a
workflow span that does (OpenLLMetry's ``traceloop.entity.*``, ``input.value``), takes its last such span.
Spans without messages are ignored.

Idempotence: message ids are the trace id and the message's place in the turn (``<trace>-<k>``), so an
exporter's retry, or a later span of the same trace whose input extends an earlier one's (an agent's
next step arriving in the next export), adds only what is new. Apps resend the whole history with
every call; when the conversation is a session (``gen_ai.conversation.id``, ``session.id``,
OpenLLMetry's ``session_id``) spanning traces, ``new_messages`` drops the part of the history the
conversation already holds, compared after PII scrubbing with what is stored.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from convolens.otlp.genai import LlmCall, Message, llm_call
from convolens.otlp.wire import LogEvent, Span, SpanEvent
from convolens.schemas.bounds import FieldError
from convolens.schemas.ingest import ConversationEvent, IngestBatch, MessageEvent, construct_complete

# The last of each: the Vercel AI SDK's telemetry metadata, under the names its docs use.
CONVERSATION_KEYS = (
    "gen_ai.conversation.id",
    "session.id",
    "traceloop.association.properties.session_id",
    "ai.telemetry.metadata.sessionId",
)
USER_KEYS = (
    "user.id",
    "enduser.id",
    "user_id",
    "traceloop.association.properties.user_id",
    "ai.telemetry.metadata.userId",
)
_LATEST_NS = 7_258_118_400 * 10**9  # 2200-01-01: the accepted time range ends before it (schemas/timestamps.py)


@dataclass(slots=True)
class Turn:
    trace_id: str
    span_id: str
    conversation_id: str
    user_id: str | None
    messages: list[Message]  # the call's input history, then its output
    history: int  # how many of ``messages`` are input
    call: LlmCall
    start: datetime | None
    end: datetime | None
    latency_ms: float | None
    spans: int  # the trace's spans (or log records) in this request: what refusing the turn rejects

    def message_id(self, k: int) -> str:
        return f"{self.trace_id}-{k}"


@dataclass
class Translation:
    turns: list[Turn]
    rejected: int = 0
    problems: list[str] | None = None

    def reject(self, spans: int, problem: str) -> None:
        self.rejected += spans
        self.problems = [*(self.problems or []), problem]


def _time(ns: int) -> datetime | None:
    return datetime.fromtimestamp(ns / 1e9, UTC) if 0 < ns < _LATEST_NS else None


def _identifier(spans: Sequence[Span], keys: Sequence[str]) -> str | None:
    """The first of ``keys`` found on the spans (the chosen one first), then on their resource."""
    for attributes in [s.attributes for s in spans] + [spans[0].resource]:
        value = attributes.first(*keys)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def _turn(trace_id: str, spans: list[Span], max_messages: int, translation: Translation) -> Turn | None:
    calls = [(span, call) for span in spans if (call := llm_call(span, max_messages)) is not None]
    if not calls:
        return None  # no span of this trace carries messages: nothing to store, nothing rejected
    pool = [c for c in calls if c[1].strong] or calls
    span, call = max(pool, key=lambda c: (c[0].end_ns, c[0].start_ns))
    if call.truncated:
        records = sum(s.records for s in spans)
        translation.reject(records, f"trace {trace_id}: span {span.span_id} has more than {max_messages} messages")
        return None
    ordered = [span, *(s for s in spans if s is not span)]
    messages = [*call.inputs, *call.outputs]
    if call.error is not None and not call.outputs:
        messages.append(Message("assistant", ""))  # the failed call's reply: empty, with its error
    latency = (span.end_ns - span.start_ns) / 1e6 if span.end_ns >= span.start_ns > 0 else None
    return Turn(
        trace_id=trace_id,
        span_id=span.span_id,
        conversation_id=_identifier(ordered, CONVERSATION_KEYS) or trace_id,
        user_id=_identifier(ordered, USER_KEYS),
        messages=messages,
        history=len(call.inputs),
        call=call,
        start=_time(span.start_ns),
        end=_time(span.end_ns),
        latency_ms=latency,
        spans=sum(s.records for s in spans),
    )


def turns_from_spans(spans: list[Span], max_messages: int) -> Translation:
    translation = Translation([])
    by_trace: dict[str, list[Span]] = {}
    for span in spans:
        if not span.trace_id or not span.span_id:
            translation.reject(1, "a span without a valid trace id (16 bytes) and span id (8 bytes)")
            continue
        by_trace.setdefault(span.trace_id, []).append(span)
    for trace_id, group in by_trace.items():
        turn = _turn(trace_id, group, max_messages, translation)
        if turn is not None:
            translation.turns.append(turn)
    # A session's turns in the order they happened: each one's history is compared with the ones before.
    translation.turns.sort(key=lambda t: (t.end or datetime.min.replace(tzinfo=UTC), t.trace_id))
    return translation


def spans_from_logs(events: list[LogEvent]) -> list[Span]:
    """GenAI log events grouped by the span they were emitted in, as spans holding them as events: the
    same translation then reads ``gen_ai.client.inference.operation.details`` and the per-message
    events. Records outside a span (no trace id) cannot be put in a turn and are ignored."""
    spans: dict[tuple[str, str], Span] = {}
    for event in events:
        if not event.name.startswith("gen_ai.") or not event.trace_id:
            continue
        key = (event.trace_id, event.span_id)
        span = spans.get(key)
        if span is None:
            span = spans[key] = Span(
                event.trace_id, event.span_id or "0" * 16, "", 0, 0, event.attributes, event.resource, records=0
            )
        span.records += 1
        span.events.append(SpanEvent(event.name, event.attributes, event.time_ns, event.body))
        if event.time_ns:
            span.start_ns = min(span.start_ns or event.time_ns, event.time_ns)
            span.end_ns = max(span.end_ns, event.time_ns)
    return list(spans.values())


# -- to the native batch -------------------------------------------------------------------------------


@dataclass(slots=True)
class TurnEvents:
    """Where a turn's events are in the batch: ``events[start:stop]``, its messages the last ``count``."""

    turn: Turn
    start: int
    stop: int


def _events(turn: Turn) -> list[Any]:
    call = turn.call
    events: list[Any] = []
    if turn.user_id is not None:
        events.append(
            construct_complete(
                ConversationEvent,
                {
                    "type": "conversation",
                    "id": turn.conversation_id,
                    "tenant_id": None,
                    "user_id": turn.user_id,
                    "metadata": None,
                    "feedback": None,
                    "timestamp": None,
                },
            )
        )
    last = len(turn.messages) - 1
    for k, message in enumerate(turn.messages):
        reply = k == last and k >= turn.history
        events.append(
            construct_complete(
                MessageEvent,
                {
                    "type": "message",
                    "conversation_id": turn.conversation_id,
                    "id": turn.message_id(k),
                    "role": message.role,
                    "content": message.content,
                    "kind": "message",
                    "name": message.name,
                    "timestamp": turn.end if k >= turn.history else turn.start,
                    # The trace id is in the message ids already; metadata would be PII-scrubbed, at a cost.
                    "metadata": None,
                    "rating": None,
                    "model": call.model if reply else None,
                    "input_tokens": call.input_tokens if reply else None,
                    "output_tokens": call.output_tokens if reply else None,
                    "latency_ms": turn.latency_ms if reply else None,
                    "error": call.error if reply else None,
                    "extra": message.extra,
                    "thought": None,
                    "observation": None,
                    "input": None,
                    "user_id": None,
                    "tenant_id": None,
                },
            )
        )
    return events


def to_batch(translation: Translation) -> tuple[IngestBatch, list[TurnEvents]]:
    """The turns as one batch, and where each turn's events are in it."""
    events: list[Any] = []
    placed: list[TurnEvents] = []
    for turn in translation.turns:
        turn_events = _events(turn)
        placed.append(TurnEvents(turn, len(events), len(events) + len(turn_events)))
        events.extend(turn_events)
    return IngestBatch.model_construct(events=events, client=None), placed


def without_refused(
    translation: Translation, batch: IngestBatch, placed: list[TurnEvents], errors: list[FieldError]
) -> tuple[IngestBatch, list[TurnEvents]]:
    """The batch less the turns that the bounds' ``errors`` (``check_batch``'s, on ``batch``) fall in,
    each refused turn told in the answer's partial_success (``translation.reject``), so that one
    oversized span does not fail the export."""
    events = batch.events
    starts = [p.start for p in placed]
    refused: dict[int, FieldError] = {}
    for error in errors:
        index = error.loc[1] if len(error.loc) > 1 and isinstance(error.loc[1], int) else 0
        refused.setdefault(bisect_right(starts, index) - 1, error)
    kept_events: list[Any] = []
    kept: list[TurnEvents] = []
    for n, p in enumerate(placed):
        error = refused.get(n)
        if error is None:
            kept.append(TurnEvents(p.turn, len(kept_events), len(kept_events) + p.stop - p.start))
            kept_events.extend(events[p.start : p.stop])
            continue
        turn = p.turn
        k = error.loc[1] - p.start - (1 if turn.user_id is not None else 0)  # type: ignore[operator]
        what = "conversation" if k < 0 else f"message {k}"
        field = ".".join(str(part) for part in error.loc[2:]) or "events"
        translation.reject(turn.spans, f"trace {turn.trace_id} span {turn.span_id}: {what} {field}: {error.msg}")
    return IngestBatch.model_construct(events=kept_events, client=None), kept


# -- against what is stored -------------------------------------------------------------------------------

StoredMessage = tuple[str, str, str, datetime]  # (id, role, content, created_at: naive UTC) in position order


def _overlap(text: Sequence[tuple[str, str]], pattern: Sequence[tuple[str, str]]) -> tuple[int, bool]:
    """(the length of the longest prefix of ``pattern`` that ends ``text``, whether ``pattern`` occurs
    whole in ``text``), by Knuth-Morris-Pratt: linear in both, whatever a client sends (comparing every
    stretch with every other was quadratic in a history of 2,000 messages)."""
    if not pattern:
        return 0, False
    fallback = [0] * len(pattern)
    k = 0
    for i in range(1, len(pattern)):
        while k and pattern[i] != pattern[k]:
            k = fallback[k - 1]
        if pattern[i] == pattern[k]:
            k += 1
        fallback[i] = k
    k, whole = 0, False
    for item in text:
        while k and (k == len(pattern) or item != pattern[k]):
            k = fallback[k - 1]
        if item == pattern[k]:
            k += 1
            whole = whole or k == len(pattern)
    return k, whole


def new_messages(turn: Turn, messages: Sequence[MessageEvent], stored: Sequence[StoredMessage]) -> list[int]:
    """Which of a turn's (scrubbed) messages to send to the store: its history minus what the
    conversation already holds from other traces, and everything after it. ``stored``: the
    conversation's first and last messages. Messages of this same trace are left to the ids."""
    own = f"{turn.trace_id}-"
    kept = [m for m in stored if not m[0].startswith(own)]
    others = [(role, content) for _id, role, content, _at in kept]
    if not others:
        return list(range(len(messages)))
    incoming = [(m.role, m.content) for m in messages]
    # What a user saw: user and assistant texts. Apps often resend a conversation without the tool
    # calls and results between them, so history is compared on these.
    seen = [i for i, (role, content) in enumerate(others) if role in ("user", "assistant") and content]
    seen_pairs = [others[i] for i in seen]

    # A turn that happened before the conversation's last stored message (an exporter sends spans as
    # they end, several requests at once) and whose whole exchange is already in it: a later turn
    # brought it as history. Only a late turn: the same short exchange said again later is new.
    latest = max(at for *_rest, at in kept)
    exchange = [(role, content) for role, content in incoming if role in ("user", "assistant") and content]
    if turn.end is not None and turn.end.replace(tzinfo=None) <= latest and _overlap(seen_pairs, exchange)[1]:
        return []
    skip = 0
    systems = {pair for pair in others if pair[0] == "system"}
    while skip < turn.history and incoming[skip][0] == "system" and incoming[skip] in systems:
        skip += 1  # the session's system prompt, stored with its first turn
    # The longest stretch at the end of the stored conversation that the history starts with: what the
    # app resent (all of it, or a sliding window).
    resent = [i for i in range(skip, turn.history) if incoming[i][0] in ("user", "assistant") and incoming[i][1]]
    j, _ = _overlap(seen_pairs, [incoming[i] for i in resent])
    if j:
        skip, at = resent[j - 1] + 1, seen[-1] + 1
        # Tool calls and results resent after the last text, as stored after it, are not new either.
        while skip < turn.history and at < len(others) and incoming[skip] == others[at]:
            skip, at = skip + 1, at + 1
    return list(range(skip, len(messages)))
