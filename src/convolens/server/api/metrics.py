"""``GET /api/v1/metrics``: product metrics over time, split by topic, language, model, tenant or a
metadata key — what the dashboard charts, for a product to embed per tenant."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request

from convolens.server.api.context_read import MAX_BUCKETED_DAYS, time_window
from convolens.server.api.deps import database, tenant_filter
from convolens.server.auth import ReadToken
from convolens.server.errors import ERROR_RESPONSES, query_error
from convolens.server.responses import JSONResponse
from convolens.store import metrics as metric_queries
from convolens.store.conversation_reads import bucket_starts
from convolens.store.db import Database
from convolens.store.projects import TokenInfo
from convolens.timeutil import iso

router = APIRouter(tags=["read"], responses=ERROR_RESPONSES)


@router.get("/api/v1/metrics")
def metrics(
    request: Request,
    start_time: str | None = None,
    end_time: str | None = None,
    period: Literal["day", "week", "month"] = "day",
    group_by: str = "none",
    level: str = "topic",
    tenant_id: str | None = Depends(tenant_filter),
    token: TokenInfo = ReadToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """Per bucket and group: conversations, messages, user_messages, users, avg_sentiment (user
    messages), ratings_up/down, rating_share_up, input/output tokens and cost_usd (estimated); and
    ``outcomes``: the conversations that *started* in the bucket per outcome (resolved, unresolved,
    abandoned, unknown), each once in its latest outcome, with ``resolved_share`` (resolved among
    resolved + unresolved + abandoned; null without any).
    With ``group_by=topic``, ``level=category`` groups by the topics' categories instead (a message
    counts once in a category however many of its topics it is in; active topics in no category are
    grouped as "Uncategorised"). Both levels count active topics only, not suggestions."""
    try:
        grouping = metric_queries.Grouping.parse(group_by)
    except ValueError as exc:
        raise query_error("group_by", str(exc)) from None
    try:
        grouping = grouping.at_level(level)
    except ValueError as exc:
        raise query_error("level", str(exc)) from None
    start, end = time_window(start_time, end_time, max_days=MAX_BUCKETED_DAYS)
    with db.reader() as conn:
        data = metric_queries.metrics(
            conn,
            token.project_pk,
            start=start,
            end=end,
            period=period,
            grouping=grouping,
            prices=request.app.state.prices,
            tenant_id=tenant_id,
        )
    return JSONResponse(
        {
            "period": period,
            "group_by": group_by,
            "level": level,
            "start_time": iso(start),
            "end_time": iso(end),
            "buckets": bucket_starts(start, end, period),
            "series": [{"group": group, "data": buckets} for group, buckets in data.items()],
        }
    )
