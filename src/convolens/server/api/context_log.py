"""Context's log endpoints (``/api/v1/log/…``): a door of the one write pipeline (server/pipeline.py).

Each POST translates its body into the native ``IngestBatch`` (api/context_batch.py, which also names
the native fields back in Context's terms for the 422s) and hands it to the pipeline: token → bounds →
scrub → write. ``POST /api/v1/log/conversation``, one new conversation a request and the hottest, takes
``pipeline.new_ids`` (the process's batch thread); the upsert and the thread append take
``pipeline.run`` with their own write inside the transaction (the continuation, the appended messages).
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Query, Request
from sqlalchemy import Connection

from convolens.schemas.context import (
    ConversationBody,
    ThreadBody,
    ThreadRating,
    ThreadRatingsBody,
)
from convolens.schemas.ingest import ConversationEvent, IngestBatch, MessageEvent, RatingEvent
from convolens.server import pipeline
from convolens.server.api import context_batch
from convolens.server.api.deps import app_limits, count_ingested
from convolens.server.asgi.fast_path import Counted, FastRoute
from convolens.server.asgi.orjson_route import OrjsonRoute
from convolens.server.auth import IngestBearer
from convolens.server.errors import ERROR_RESPONSES, ApiError
from convolens.server.pipeline import Translation
from convolens.server.responses import JSONResponse
from convolens.store import conversation_reads, upsert
from convolens.store.ingest import BatchOutcome, apply_batch, new_id
from convolens.store.projects import TokenInfo
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


_OK = {"status": "ok"}


@router.post("/api/v1/log/conversation", status_code=201)
async def log_conversation(
    request: Request, body: ConversationBody, tenant_id: str | None = TenantQuery, token: str = IngestBearer
) -> JSONResponse:
    """Log one whole conversation; every call makes a new conversation."""
    conversation = body.conversation
    conversation_id = new_id()
    limits = app_limits(request)

    def translate(_info: TokenInfo) -> Translation:
        return context_batch.translate(
            conversation, conversation_id, context_batch.tenant(tenant_id, body.tenant_id), limits
        )

    # Every id in it is new: written on the batch thread with every such request waiting by then.
    outcome = await pipeline.new_ids(request, token, translate, heavy=context_batch.heavy(conversation))
    count_ingested(request, outcome.created_messages)
    return JSONResponse({**_OK, "data": {"id": conversation_id}}, status_code=201)


@router.post("/api/v1/log/conversation/upsert", status_code=201)
async def log_conversation_upsert(
    request: Request, body: ConversationBody, tenant_id: str | None = TenantQuery, token: str = IngestBearer
) -> JSONResponse:
    """Log the whole history so far; a continuation of a recent conversation appends only what is new."""
    conversation = body.conversation
    limits = app_limits(request)

    def translate(_info: TokenInfo) -> Translation:
        tenant = context_batch.tenant(tenant_id, body.tenant_id)
        return context_batch.translate(conversation, new_id(), tenant, limits, store=_upsert)

    conversation_id, appended, outcome = await pipeline.run(
        request, token, translate, heavy=context_batch.heavy(conversation)
    )
    count_ingested(request, outcome.created_messages)
    return JSONResponse({**_OK, "data": {"id": conversation_id, "appended": appended}}, status_code=201)


def _upsert(conn: Connection, project_pk: int, clean: IngestBatch) -> tuple[str, int, BatchOutcome]:
    """Inside the write transaction, on the scrubbed batch (the stored messages it is compared with are
    scrubbed): the stored conversation it continues (store/upsert.py) gets only the messages past the
    stored ones; else it is a new conversation, of at least two messages."""
    head, *messages = clean.events
    pairs = [(m.role, m.content) for m in messages]
    key = upsert.upsert_key(head.metadata, head.tenant_id, pairs[:2])
    now = utcnow()
    found = upsert.find_continuation(conn, project_pk, key, now - UPSERT_WINDOW, pairs)
    if found is None:
        if len(messages) < 2:
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
        conversation_id, skip = head.id, 0
    else:
        conversation_id, skip = found
        for event in (head, *messages[skip:]):
            _set_conversation(event, conversation_id)
    batch = IngestBatch.model_construct(events=[head, *messages[skip:]], client=None)
    outcome = apply_batch(conn, project_pk, batch, now)
    if found is None:
        upsert.set_upsert_key(conn, project_pk, conversation_id, key)
    return conversation_id, len(messages) - skip, outcome


def _set_conversation(event: ConversationEvent | MessageEvent, conversation_id: str) -> None:
    if isinstance(event, ConversationEvent):
        event.id = conversation_id
    else:
        event.conversation_id = conversation_id


@router.post("/api/v1/log/conversation/thread", status_code=201)
async def log_conversation_thread(
    request: Request, body: ThreadBody, tenant_id: str | None = TenantQuery, token: str = IngestBearer
) -> JSONResponse:
    """Append messages to a thread (``id`` given, created if new) or start one (no ``id``)."""
    thread = body.conversation
    thread_id = thread.id or new_id()
    limits = app_limits(request)

    def translate(_info: TokenInfo) -> Translation:
        tenant = context_batch.tenant(tenant_id, body.tenant_id)
        return context_batch.translate(thread, thread_id, tenant, limits, store=_append)

    outcome, messages = await pipeline.run(request, token, translate, heavy=context_batch.heavy(thread))
    count_ingested(request, outcome.created_messages)
    appended = [{"id": m.id, "role": m.role, "message": m.content, "rating": m.rating} for m in messages]
    return JSONResponse({**_OK, "data": {"id": thread_id, "appended_messages": appended}}, status_code=201)


def _append(conn: Connection, project_pk: int, clean: IngestBatch) -> tuple[BatchOutcome, list[MessageEvent]]:
    """The thread's new messages, answered as stored (scrubbed)."""
    return apply_batch(conn, project_pk, clean, utcnow()), clean.events[1:]


# ``:path``: an id may hold ``/`` (base64), which arrives decoded from ``%2F``; the rest of the path is the id.
@router.patch("/api/v1/log/conversation/thread/{thread_id:path}")
async def rate_thread_messages(
    request: Request, thread_id: str, body: ThreadRatingsBody | list[ThreadRating], token: str = IngestBearer
) -> JSONResponse:
    """Rate messages of a thread: ``{"messages": [{"id", "rating"}]}``, or the SDK's positional array.

    A door of the pipeline like the POSTs: the token, then the bounds on the ratings (how many, the
    thread id), then one write. A rating is a number on a stored message: no text to scrub."""
    entries = body.messages if isinstance(body, ThreadRatingsBody) else body
    loc_root: tuple[str, ...] = ("messages",) if isinstance(body, ThreadRatingsBody) else ()
    rated = [(i, entry) for i, entry in enumerate(entries) if entry.rating is not None]
    limits = app_limits(request)

    def translate(_info: TokenInfo) -> Translation:
        # A positional rating's message id is only known inside the transaction (``_rate``): ``None`` here.
        events = [
            RatingEvent.model_construct(
                type="rating", conversation_id=thread_id, message_id=entry.id, rating=entry.rating
            )
            for _, entry in rated
        ]
        batch = IngestBatch.model_construct(events=events, client=None)
        return Translation(
            batch,
            locate=_rating_loc(loc_root),
            max_events=limits.max_messages_per_conversation,  # at most one rating a message of the thread
            store=_rate(thread_id, rated, loc_root),
            store_empty=True,  # nothing rated: still a 404 for a thread not in the project
        )

    await pipeline.run(request, token, translate, heavy=False)
    return JSONResponse(_OK, status_code=200)


def _rating_loc(loc_root: tuple[str, ...]) -> pipeline.Locate:
    """A bound's native field in the PATCH's terms: the events' count is the ratings' (``messages``, or
    the bare array), an event's ``conversation_id`` the thread id of the path."""

    def locate(loc: pipeline.Loc) -> pipeline.Loc | None:
        if loc == ("events",):
            return loc_root
        if len(loc) == 3 and loc[2] == "conversation_id":
            return ("path", "thread_id")
        return loc

    return locate


def _rate(thread_id: str, rated: list[tuple[int, ThreadRating]], loc_root: tuple[str, ...]) -> pipeline.Store:
    """The write, inside the transaction: the positional ratings' messages, then the one write path; a
    thread or message not in the project is a 404, a position past the thread's end a 422."""

    def store(conn: Connection, project_pk: int, clean: IngestBatch) -> BatchOutcome:
        ids = conversation_reads.message_ids_at_positions(conn, project_pk, thread_id)
        if ids is None:
            raise ApiError(404, f"no thread {thread_id!r} in this project")
        for event, (i, entry) in zip(clean.events, rated, strict=True):
            if entry.id is not None:
                continue
            if i >= len(ids):
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
            event.message_id = ids[i]  # type: ignore[union-attr]
        outcome = apply_batch(conn, project_pk, clean, utcnow())
        missing = [r for r in outcome.results if r.status == "not_found"]
        if missing:
            raise ApiError(404, f"no message {missing[0].id!r} in thread {thread_id!r}")
        return outcome

    return store
