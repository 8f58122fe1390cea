"""Context's log endpoints (``/api/v1/log/…``), translated into the native ``IngestBatch``.

The three POSTs are hot routes, as ``/api/v1/ingest``: ``async``, with the token look-up, bounds,
scrubbing and write in one thread hop (server/offload.py); ``POST /api/v1/log/conversation``, one
conversation a request and the hottest, is checked and written on the process's batch thread instead
(store/writer/batches.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import Connection

from convolens.config import Limits
from convolens.enrich import names
from convolens.enrich.pii import Budget, Possible, assign_if_changed, scrub, scrub_name, scrub_value
from convolens.schemas.bounds import check_context_conversation
from convolens.schemas.context import (
    ContextConversation,
    ConversationBody,
    ThreadBody,
    ThreadRating,
    ThreadRatingsBody,
)
from convolens.schemas.ingest import ConversationEvent, IngestBatch, MessageEvent, RatingEvent, construct_complete
from convolens.server.api.deps import app_database, app_limits, count_ingested, database
from convolens.server.asgi.fast_path import Counted, FastRoute
from convolens.server.asgi.orjson_route import OrjsonRoute
from convolens.server.auth import IngestBearer, IngestToken, TokenLookups, authorize
from convolens.server.errors import ERROR_RESPONSES, ApiError, bound_violation
from convolens.server.offload import in_heavy_lane, in_thread, is_heavy
from convolens.server.responses import JSONResponse
from convolens.server.scrubbing_process import scrubbed
from convolens.store import conversation_reads, upsert
from convolens.store.db import Database
from convolens.store.ingest import BatchOutcome, NewIdsBatch, apply_batch, new_id
from convolens.store.projects import TokenInfo
from convolens.store.writer.batches import NotWritten
from convolens.timeutil import utcnow

router = APIRouter(tags=["context"], responses=ERROR_RESPONSES, route_class=OrjsonRoute)

# Context continued an upserted conversation only if it was active in the last six hours.
UPSERT_WINDOW = timedelta(hours=6)
TenantQuery = Query(None, description="Tenant (embedded sub-account); may also come in the body.")

# The fast path's contract with the three log POSTs below (server/asgi/fast_path.py checks it at start-up).
_MESSAGES = Counted(("conversation", "messages"), "max_messages_per_conversation", "messages")
FAST_ROUTES = (
    FastRoute("/api/v1/log/conversation", ConversationBody, "body", takes_tenant=True, counted=_MESSAGES),
    FastRoute("/api/v1/log/conversation/upsert", ConversationBody, "body", takes_tenant=True, counted=_MESSAGES),
    FastRoute("/api/v1/log/conversation/thread", ThreadBody, "body", takes_tenant=True, counted=_MESSAGES),
)


def _tenant(query_value: str | None, body_value: str | None) -> str | None:
    if query_value is not None and body_value is not None and query_value != body_value:
        raise ApiError(
            422,
            "tenant_id in the query and in the body disagree",
            [{"field": "tenant_id", "loc": ["tenant_id"], "msg": "query and body disagree"}],
        )
    return body_value if body_value is not None else query_value


def _check(
    conversation: ContextConversation,
    bounds: Limits,
    *,
    thread_id: str | None = None,
    tenant_id: str | None = None,
    min_messages: int = 1,
) -> None:
    errors = check_context_conversation(conversation, bounds, thread_id=thread_id, tenant_id=tenant_id)
    if errors:
        raise bound_violation(errors)
    if len(conversation.messages) < min_messages:
        raise ApiError(
            422,
            f"conversation.messages must hold at least {min_messages} message(s)",
            [
                {
                    "field": "conversation.messages",
                    "loc": ["conversation", "messages"],
                    "msg": f"at least {min_messages} required",
                }
            ],
        )


def scrub_conversation(conversation: ContextConversation, token: TokenInfo) -> ContextConversation:
    """PII out of every free-text field, in place, before anything else looks at the conversation
    (the upsert matching included: it compares with what was stored, which is scrubbed). Returns the
    conversation: called through ``scrubbed``, a heavy one comes back from the scrubbing process."""
    if not token.pii_scrubbing:
        return conversation
    messages = conversation.messages
    # The free texts are gated once, joined (as scrub_batch does): most conversations hold nothing
    # any rule could match, and then no text is scrubbed one by one.
    possible = Possible.within(
        [t for t in (conversation.feedback, *(f for m in messages for f in (m.message, m.thought, m.observation))) if t]
    )

    def text(value: str | None, budget: Budget) -> str | None:
        return value if value is None or possible.nothing else scrub(value, possible, budget).text

    if conversation.metadata:
        assign_if_changed(conversation, "metadata", scrub_value(conversation.metadata))
    assign_if_changed(conversation, "feedback", text(conversation.feedback, Budget()))
    for message in messages:
        budget = Budget()  # one budget of numbering-plan checks per message, shared by all its fields
        assign_if_changed(message, "message", text(message.message, budget) or "")
        if message.metadata:
            assign_if_changed(message, "metadata", scrub_value(message.metadata, budget))
        assign_if_changed(message, "thought", text(message.thought, budget))
        assign_if_changed(message, "observation", text(message.observation, budget))
        if message.name:
            assign_if_changed(message, "name", scrub_name(message.name, budget))
        if message.input is not None:
            assign_if_changed(message, "input", scrub_value(message.input, budget))
    if token.pii_names:
        texts = [conversation.feedback or "", *(m.message for m in messages)]
        feedback, *redacted = names.redact(texts)
        if conversation.feedback:
            conversation.feedback = feedback
        for message, redacted_text in zip(messages, redacted, strict=True):
            message.message = redacted_text
    return conversation


def _admit(
    request: Request,
    token: str,
    conversation: ContextConversation,
    query_tenant: str | None,
    body_tenant: str | None,
    *,
    thread_id: str | None = None,
    lookups: TokenLookups | None = None,
) -> tuple[TokenInfo, str | None]:
    """The token, the tenant and the bounds: checked before anything else looks at the conversation."""
    info = authorize(request, token, "ingest", lookups)
    tenant = _tenant(query_tenant, body_tenant)
    _check(conversation, app_limits(request), thread_id=thread_id, tenant_id=tenant)
    return info, tenant


def _accept(
    request: Request,
    token: str,
    conversation: ContextConversation,
    query_tenant: str | None,
    body_tenant: str | None,
    *,
    thread_id: str | None = None,
) -> tuple[TokenInfo, str | None, ContextConversation]:
    """What every log POST does first, inside its thread hop: the token, the tenant, bounds, PII out."""
    info, tenant = _admit(request, token, conversation, query_tenant, body_tenant, thread_id=thread_id)
    return info, tenant, scrubbed(scrub_conversation, conversation, info)


def _to_batch(
    conversation: ContextConversation, conversation_id: str, tenant_id: str | None, *, skip: int = 0
) -> tuple[IngestBatch, list[MessageEvent]]:
    metadata = conversation.metadata or {}
    user_id = metadata.get("user_id")
    conversation_model = metadata.get("model")
    events: list[Any] = [
        construct_complete(
            ConversationEvent,
            {
                "type": "conversation",
                "id": conversation_id,
                "tenant_id": tenant_id,
                "user_id": str(user_id)[:128] if user_id not in (None, "") else None,
                "metadata": conversation.metadata,
                "feedback": conversation.feedback,
                "timestamp": None,
            },
        )
    ]
    messages = []
    for m in conversation.messages[skip:]:
        extra = {
            k: v
            for k, v in (("thought", m.thought), ("input", m.input), ("observation", m.observation))
            if v is not None
        }
        model = (m.metadata or {}).get("model", conversation_model) if m.role == "assistant" else None
        event = construct_complete(
            MessageEvent,
            {
                "type": "message",
                "conversation_id": conversation_id,
                "id": new_id(),
                "role": m.stored_role,
                "content": m.stored_content,
                "kind": m.type,
                "name": m.name,
                "timestamp": m.event_timestamp,
                "metadata": m.metadata,
                "rating": m.rating,
                "model": str(model)[:128] if model is not None else None,
                "input_tokens": None,
                "output_tokens": None,
                "latency_ms": None,
                "error": None,
                "extra": extra or None,
                "user_id": None,
                "tenant_id": None,
            },
        )
        messages.append(event)
    return IngestBatch.model_construct(events=events + messages, client=None), messages


_OK = {"status": "ok"}


def _is_heavy(conversation: ContextConversation) -> bool:
    return is_heavy(text for m in conversation.messages for text in (m.message, m.thought, m.observation)) or is_heavy(
        (conversation.feedback,)
    )


@dataclass(frozen=True, slots=True)
class _RedactNamesOnItsOwnThread:
    """A request accepted on the batch thread whose project redacts names: the model takes ~2 ms a
    message (enrich/names.py), which would hold up every other request of the process waiting for that
    thread, so the rest of its work goes to a thread of its own."""

    info: TokenInfo
    tenant: str | None


@router.post("/api/v1/log/conversation", status_code=201)
async def log_conversation(
    request: Request, body: ConversationBody, tenant_id: str | None = TenantQuery, token: str = IngestBearer
) -> JSONResponse:
    """Log one whole conversation; every call makes a new conversation."""
    conversation = body.conversation
    conversation_id = new_id()

    def clean_batch(info: TokenInfo, tenant: str | None) -> NewIdsBatch:
        batch, _ = _to_batch(scrubbed(scrub_conversation, conversation, info), conversation_id, tenant)
        return NewIdsBatch(info.project_pk, batch)

    def prepare(lookups: TokenLookups) -> NewIdsBatch | NotWritten:
        info, tenant = _admit(request, token, conversation, tenant_id, body.tenant_id, lookups=lookups)
        if info.pii_names:
            return NotWritten(_RedactNamesOnItsOwnThread(info, tenant))
        return clean_batch(info, tenant)

    if _is_heavy(conversation):  # its scrubbing would hold up the batch thread's every other request

        def admitted_and_scrubbed() -> BatchOutcome:
            info, tenant = _admit(request, token, conversation, tenant_id, body.tenant_id)
            return app_database(request).write(clean_batch(info, tenant))

        outcome = await in_heavy_lane(admitted_and_scrubbed)
        count_ingested(request, outcome.created_messages)
        return JSONResponse({**_OK, "data": {"id": conversation_id}}, status_code=201)
    # Checked and written on the process's batch thread with every other request waiting by then.
    outcome: BatchOutcome | NotWritten = await request.app.state.write_batches.write(prepare)
    if isinstance(outcome, NotWritten):
        accepted: _RedactNamesOnItsOwnThread = outcome.value
        outcome = await in_thread(lambda: app_database(request).write(clean_batch(accepted.info, accepted.tenant)))
    count_ingested(request, outcome.created_messages)
    return JSONResponse({**_OK, "data": {"id": conversation_id}}, status_code=201)


@router.post("/api/v1/log/conversation/upsert", status_code=201)
async def log_conversation_upsert(
    request: Request, body: ConversationBody, tenant_id: str | None = TenantQuery, token: str = IngestBearer
) -> JSONResponse:
    """Log the whole history so far; a continuation of a recent conversation appends only what is new."""
    conversation = body.conversation

    def check_and_store() -> tuple[str, int, BatchOutcome]:
        info, tenant, clean = _accept(request, token, conversation, tenant_id, body.tenant_id)
        pairs = [(m.stored_role, m.stored_content) for m in clean.messages]
        key = upsert.upsert_key(clean.metadata, tenant, pairs[:2])
        now = utcnow()

        def store(conn: Connection) -> tuple[str, int, BatchOutcome]:
            found = upsert.find_continuation(conn, info.project_pk, key, now - UPSERT_WINDOW, pairs)
            if found is None:
                if len(clean.messages) < 2:
                    raise ApiError(
                        422,
                        "the first upsert of a conversation needs at least 2 messages",
                        [
                            {
                                "field": "conversation.messages",
                                "loc": ["conversation", "messages"],
                                "msg": "at least 2 required for a new conversation",
                            }
                        ],
                    )
                conversation_id, skip = new_id(), 0
            else:
                conversation_id, skip = found
            batch, _ = _to_batch(clean, conversation_id, tenant, skip=skip)
            outcome = apply_batch(conn, info.project_pk, batch, now)
            if found is None:
                upsert.set_upsert_key(conn, info.project_pk, conversation_id, key)
            return conversation_id, skip, outcome

        return app_database(request).write(store)

    conversation_id, skip, outcome = await (in_heavy_lane if _is_heavy(conversation) else in_thread)(check_and_store)
    count_ingested(request, outcome.created_messages)
    appended = len(conversation.messages) - skip
    return JSONResponse({**_OK, "data": {"id": conversation_id, "appended": appended}}, status_code=201)


@router.post("/api/v1/log/conversation/thread", status_code=201)
async def log_conversation_thread(
    request: Request, body: ThreadBody, tenant_id: str | None = TenantQuery, token: str = IngestBearer
) -> JSONResponse:
    """Append messages to a thread (``id`` given, created if new) or start one (no ``id``)."""
    thread = body.conversation
    thread_id = thread.id or new_id()

    def store() -> tuple[BatchOutcome, list[MessageEvent]]:
        info, tenant, clean = _accept(request, token, thread, tenant_id, body.tenant_id, thread_id=thread.id)
        batch, messages = _to_batch(clean, thread_id, tenant)
        return app_database(request).write(lambda conn: apply_batch(conn, info.project_pk, batch, utcnow())), messages

    outcome, messages = await (in_heavy_lane if _is_heavy(thread) else in_thread)(store)
    count_ingested(request, outcome.created_messages)
    appended = [{"id": m.id, "role": m.role, "message": m.content, "rating": m.rating} for m in messages]
    return JSONResponse({**_OK, "data": {"id": thread_id, "appended_messages": appended}}, status_code=201)


# ``:path``: an id may hold ``/`` (base64), which arrives decoded from ``%2F``; the rest of the path is the id.
@router.patch("/api/v1/log/conversation/thread/{thread_id:path}")
def rate_thread_messages(
    thread_id: str,
    body: ThreadRatingsBody | list[ThreadRating],
    token: TokenInfo = IngestToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """Rate messages of a thread: ``{"messages": [{"id", "rating"}]}``, or the SDK's positional array."""
    entries = body.messages if isinstance(body, ThreadRatingsBody) else body
    loc_root = ["messages"] if isinstance(body, ThreadRatingsBody) else []
    with db.writer() as conn:
        ids = conversation_reads.message_ids_at_positions(conn, token.project_pk, thread_id)
        if ids is None:
            raise ApiError(404, f"no thread {thread_id!r} in this project")
        events = []
        for i, entry in enumerate(entries):
            if entry.rating is None:
                continue
            if entry.id is None and i >= len(ids):
                raise ApiError(
                    422,
                    f"rating {i} has no message: the thread has {len(ids)} messages",
                    [
                        {
                            "field": ".".join(map(str, [*loc_root, i])),
                            "loc": [*loc_root, i],
                            "msg": "no message at this position",
                        }
                    ],
                )
            message_id = entry.id if entry.id is not None else ids[i]
            events.append(
                RatingEvent.model_construct(
                    type="rating", conversation_id=thread_id, message_id=message_id, rating=entry.rating
                )
            )
        outcome = apply_batch(conn, token.project_pk, IngestBatch.model_construct(events=events, client=None), utcnow())
        missing = [r for r in outcome.results if r.status == "not_found"]
        if missing:
            raise ApiError(404, f"no message {missing[0].id!r} in thread {thread_id!r}")
    return JSONResponse(_OK, status_code=200)
