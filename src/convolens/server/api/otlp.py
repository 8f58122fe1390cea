"""``POST /v1/traces`` and ``POST /v1/logs``: the OpenTelemetry door (OTLP/HTTP, protobuf or JSON).

Like every write, the request's token (``Authorization: Bearer`` or ``x-convolens-token``) is checked
from its headers before its body is read (server/asgi/write_admission.py), and the body is bounded and
inflated by server/asgi/body_limits.py. Then it is a door of the one write pipeline (server/pipeline.py):
after the token, the body is decoded and translated into the native batch (convolens/otlp/); the
pipeline's bounds refuse a turn over a bound alone (``in_part``), its PII scrubbing and write follow (on
the heavy lane for a batch with a lot of text), and the write, inside its transaction, compares resent
history with the stored conversations before ``store.ingest.apply_batch``, idempotent on the message ids
the trace gives.

The answer is an Export…ServiceResponse in the request's encoding; turns over a bound are counted in
its ``partial_success`` (the exporter does not retry them) and the rest is stored. A body that is not
OTLP gets a 400 with a google.rpc.Status naming the problem, an unknown content type a 415.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Connection

from convolens.otlp import turns
from convolens.otlp.wire import (
    JSON,
    PROTOBUF,
    OtlpError,
    decode_logs,
    decode_spans,
    export_response,
    media_type,
    status_body,
)
from convolens.schemas.bounds import FieldError
from convolens.schemas.ingest import IngestBatch, MessageEvent
from convolens.server import pipeline
from convolens.server.api.deps import app_limits, count_ingested
from convolens.server.auth import OtlpToken
from convolens.server.errors import ERROR_RESPONSES
from convolens.server.pipeline import Translation
from convolens.store import conversation_ends
from convolens.store.ingest import BatchOutcome, apply_batch
from convolens.store.projects import TokenInfo
from convolens.timeutil import to_naive_utc, utcnow

router = APIRouter(tags=["opentelemetry"], responses=ERROR_RESPONSES)

_BODY = {
    "content": {PROTOBUF: {"schema": {"type": "string", "format": "binary"}}, JSON: {"schema": {"type": "object"}}},
    "required": True,
}


def _store(conn: Connection, project_pk: int, batch: IngestBatch, placed: list[turns.TurnEvents]) -> BatchOutcome:
    """Inside the write transaction: each turn's messages less the history its conversation already
    holds (turns.new_messages, on scrubbed text, as stored), then the one write path."""
    longest = max(len(p.turn.messages) for p in placed)
    conversation_ids = {p.turn.conversation_id for p in placed}
    conversation_ends.lock(conn, project_pk, conversation_ids)
    ends = conversation_ends.conversation_ends(conn, project_pk, conversation_ids, longest, 2 * longest)
    events: list = []
    for p in placed:
        turn_events = batch.events[p.start : p.stop]
        head = 1 if p.turn.user_id is not None else 0
        messages: list[MessageEvent] = turn_events[head:]  # type: ignore[assignment]
        stored = ends.setdefault(p.turn.conversation_id, [])
        keep = turns.new_messages(p.turn, messages, stored)
        events.extend(turn_events[:head])
        events.extend(messages[i] for i in keep)
        # The next turn of the same session in this request compares with this one's messages too.
        at = to_naive_utc(p.turn.end) if p.turn.end else utcnow()
        stored.extend((messages[i].id or "", messages[i].role, messages[i].content, at) for i in keep)
    return apply_batch(conn, project_pk, IngestBatch.model_construct(events=events, client=None), utcnow())


def _as_native(translation: turns.Translation, batch: IngestBatch, placed: list[turns.TurnEvents]) -> Translation:
    """The door's translation for the pipeline: a turn over a bound is refused alone (``in_part``); the
    native bound on events is not applied to the sum, since one exporter batch (512 spans) already makes
    ~2,000 events (a turn holds at most ``max_messages_per_conversation`` messages, ``llm_call``; the
    request, at most ``max_body_bytes``)."""

    def in_part(errors: list[FieldError]) -> Translation:
        return _as_native(translation, *turns.without_refused(translation, batch, placed, errors))

    return Translation(
        batch,
        max_events=len(batch.events),
        store=lambda conn, project_pk, clean: _store(conn, project_pk, clean, placed),
        in_part=in_part,
    )


async def _export(request: Request, token: str, *, logs: bool) -> Response:
    kind = media_type(request.headers.get("content-type"))
    if kind is None:
        detail = "Content-Type must be application/x-protobuf or application/json (OTLP/HTTP)"
        body = orjson.dumps(
            {"detail": detail, "errors": [{"field": "content-type", "loc": ["header", "content-type"], "msg": detail}]}
        )
        return Response(body, status_code=415, media_type=JSON)
    body = await request.body()  # bounded and inflated already (server/asgi/body_limits.py)
    limits = app_limits(request)
    translated: list[turns.Translation] = []  # what the answer tells: the spans refused and why

    def translate(_info: TokenInfo) -> Translation:
        spans = turns.spans_from_logs(decode_logs(body, kind)) if logs else decode_spans(body, kind)
        translation = turns.turns_from_spans(spans, limits.max_messages_per_conversation)
        translated.append(translation)
        return _as_native(translation, *turns.to_batch(translation))

    try:
        # The lane is chosen once translated: the body is binary until then.
        outcome: BatchOutcome = await pipeline.run(request, token, translate, heavy=None)
    except OtlpError as exc:
        return _bad_request(kind, str(exc), exc.field)
    count_ingested(request, outcome.created_messages)
    translation = translated[0]
    problems = translation.problems or []
    message = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    return Response(export_response(kind, translation.rejected, message, logs=logs), media_type=kind)


def _bad_request(kind: str, detail: str, field: str) -> Response:
    if kind == PROTOBUF:
        return Response(status_body(kind, detail), status_code=400, media_type=PROTOBUF)
    payload = {
        "detail": detail,
        "errors": [{"field": field, "loc": ["body", field], "msg": detail}],
        "code": 3,  # google.rpc.Status, as OTLP/HTTP answers a 4xx
        "message": detail,
    }
    return Response(orjson.dumps(payload), status_code=400, media_type=JSON)


@router.post("/v1/traces", openapi_extra={"requestBody": _BODY})
async def export_traces(request: Request, token: str = OtlpToken) -> Response:
    """OTLP/HTTP traces: each trace's last LLM span becomes a conversation turn (GenAI semantic
    conventions, OpenLLMetry, OpenInference); spans without messages are ignored."""
    return await _export(request, token, logs=False)


@router.post("/v1/logs", openapi_extra={"requestBody": _BODY})
async def export_logs(request: Request, token: str = OtlpToken) -> Response:
    """OTLP/HTTP logs: GenAI events (``gen_ai.client.inference.operation.details``, ``gen_ai.user.message``,
    ``gen_ai.choice``…) become turns as their span would; other records are ignored."""
    return await _export(request, token, logs=True)
