"""Context's read API: conversations with pagination and a time window, series, suggested topics."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from fastapi import APIRouter, Depends, Query

from convolens.config import Limits
from convolens.schemas.timestamps import parse_timestamp
from convolens.server.api.context_format import conversation_response
from convolens.server.api.deps import database, limits, tenant_filter
from convolens.server.auth import ReadToken
from convolens.server.errors import ERROR_RESPONSES, ApiError, query_error
from convolens.server.responses import JSONResponse
from convolens.store import conversation_reads, metrics, search, topics
from convolens.store.db import Database
from convolens.store.outcome_fields import OUTCOMES, SIGNALS
from convolens.store.projects import TokenInfo
from convolens.timeutil import iso, utcnow

router = APIRouter(tags=["read"], responses=ERROR_RESPONSES)

SERIES = metrics.SERIES
DEFAULT_DAYS_BACK = 6  # Context: "defaults to the beginning of 6 days ago"


def _parse_time(field: str, value: str | None) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise query_error(field, str(exc)) from None


# Series and metrics make one bucket a day at most: a window this long is still a few thousand.
MAX_BUCKETED_DAYS = 3700


def time_window(
    start_time: str | None, end_time: str | None, *, max_days: int | None = None
) -> tuple[datetime, datetime]:
    now = utcnow()
    start = _parse_time("start_time", start_time)
    end = _parse_time("end_time", end_time) or now
    if start is None:
        start = datetime.combine((end - timedelta(days=DEFAULT_DAYS_BACK)).date(), datetime.min.time())
    if start > end:
        raise query_error("start_time", "must not be after end_time")
    if max_days is not None and (end - start).days > max_days:
        raise query_error("start_time", "the window may span at most about ten years")
    return start, end


@router.get("/api/v1/conversations")
def list_conversations(
    start_time: str | None = None,
    end_time: str | None = None,
    page: int = Query(1, ge=1, le=1_000_000),
    per_page: int = Query(20, ge=1),
    tenant_id: str | None = Depends(tenant_filter),
    outcome: str | None = None,
    signal: str | None = None,
    q: str | None = Query(None, max_length=search.MAX_CHARS),
    order: str = "time",
    token: TokenInfo = ReadToken,
    db: Database = Depends(database),  # noqa: B008
    bounds: Limits = Depends(limits),  # noqa: B008
) -> JSONResponse:
    """``outcome`` (resolved, unresolved, abandoned, unknown) and ``signal`` (rephrase, correction, …) keep
    only the conversations that have it. ``q``: words and "quoted phrases" that one message holds, as
    case-insensitive substrings (the dashboard's search); ``order``: ``time`` (newest activity first) or
    ``relevance`` (best match first, with ``q``)."""
    if per_page > bounds.max_per_page:
        raise query_error("per_page", f"must be at most {bounds.max_per_page}")
    if outcome is not None and outcome not in OUTCOMES:
        raise query_error("outcome", f"must be one of {', '.join(OUTCOMES)}")
    if signal is not None and signal not in SIGNALS:
        raise query_error("signal", f"must be one of {', '.join(SIGNALS)}")
    if order not in search.ORDERS:
        raise query_error("order", f"must be one of {', '.join(search.ORDERS)}")
    if q is not None and not q.isprintable():
        raise query_error("q", "must be printable text")
    start, end = time_window(start_time, end_time)
    with db.snapshot() as conn:  # the listed rows and their attached messages agree (see get_conversation)
        result = conversation_reads.list_conversations(
            conn,
            token.project_pk,
            start=start,
            end=end,
            page=page,
            per_page=per_page,
            tenant_id=tenant_id,
            outcome=outcome,
            signal=signal,
            text=(q or "").strip() or None,
            order=order,
        )
    page_count = result.page_count
    return JSONResponse(
        {
            "conversations": [conversation_response(c) for c in result.items],
            "pagination": {
                "total_records": result.total,
                "per_page": per_page,
                "current_page": page,
                "previous_page": page - 1 if page > 1 else None,
                "next_page": page + 1 if page < page_count else None,
                "page_count": page_count,
            },
        }
    )


@router.get("/api/v1/conversations/series")
def available_series(token: TokenInfo = ReadToken) -> JSONResponse:
    return JSONResponse({"available": list(SERIES)})


@router.get("/api/v1/conversations/series/{name}")
def series(
    name: Literal["sentiment", "rating", "volume", "outcome"],
    start_time: str | None = None,
    end_time: str | None = None,
    period: Literal["day", "week", "month"] = "day",
    tenant_id: str | None = Depends(tenant_filter),
    token: TokenInfo = ReadToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    start, end = time_window(start_time, end_time, max_days=MAX_BUCKETED_DAYS)
    with db.reader() as conn:
        data = metrics.context_series(
            conn, token.project_pk, name, start=start, end=end, period=period, tenant_id=tenant_id
        )
    return JSONResponse(
        {
            "series": [{"name": series_name, "data": values} for series_name, values in data.items()],
            "type": name,
            "period": period,
            "start_time": iso(start),
            "end_time": iso(end),
        }
    )


# ``:path``: an id may hold ``/`` (base64), which arrives decoded from ``%2F``; the rest of the path is the id.
# Declared after the series routes: as in Context, ``series`` and ``series/{name}`` are those.
@router.get("/api/v1/conversations/{conversation_id:path}")
def get_conversation(
    conversation_id: str,
    token: TokenInfo = ReadToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    # One snapshot: on PostgreSQL the conversation's row and its messages are separate statements, and a
    # worker's save between them showed new messages' enrichment next to the outcome from before it.
    with db.snapshot() as conn:
        view = conversation_reads.get_conversation(conn, token.project_pk, conversation_id)
    if view is None:
        raise ApiError(404, f"no conversation {conversation_id!r} in this project")
    return JSONResponse(conversation_response(view))


@router.get("/api/v1/suggested_topics")
def suggested_topics(
    tenant_id: str | None = Depends(tenant_filter),
    page: int = Query(1, ge=1),
    per_page: int = Query(20, ge=1, le=100),
    token: TokenInfo = ReadToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """Clusters the worker found among the user messages no topic covers, largest first. They are per
    project: ``tenant_id`` is accepted for Context's clients but does not split them."""
    with db.reader() as conn:
        rows = topics.list_topics(conn, token.project_pk, ("suggested",))
    rows.sort(key=lambda r: -int(r.definition.get("size", 0)))
    chosen = rows[(page - 1) * per_page : page * per_page]
    return JSONResponse(
        {
            "count": len(rows),
            "topics": [
                {
                    "id": str(r.pk),
                    "name": r.name,
                    # One sentence from the project's LLM provider, where one named the cluster; else null.
                    "description": r.definition.get("description"),
                    "conversations_sample": r.samples or [],
                    "keywords": r.definition.get("keywords", []),
                    "phrases": r.definition.get("phrases", [])[:5],
                    "size": r.definition.get("size", 0),
                }
                for r in chosen
            ],
        }
    )
