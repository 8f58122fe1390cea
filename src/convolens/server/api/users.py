"""``GET /api/v1/users``: the end users with their figures, sorted by any of them;
``DELETE /api/v1/users/{user_id}``: erase an end user and everything stored about them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from convolens.config import Limits
from convolens.server.api.deps import database, limits
from convolens.server.auth import AdminToken, ReadToken
from convolens.server.errors import ERROR_RESPONSES, ApiError, query_error
from convolens.server.responses import JSONResponse
from convolens.store import end_users
from convolens.store.db import Database
from convolens.store.erasure import erase_end_user, wipe_deleted
from convolens.store.projects import TokenInfo
from convolens.timeutil import iso

router = APIRouter(tags=["users"], responses=ERROR_RESPONSES)


@router.get("/api/v1/users")
def list_users(
    sort: str = "last_seen",
    order: str = "desc",
    q: str | None = Query(None, max_length=200),
    page: int = Query(1, ge=1, le=1_000_000),
    per_page: int = Query(20, ge=1),
    token: TokenInfo = ReadToken,
    db: Database = Depends(database),  # noqa: B008
    bounds: Limits = Depends(limits),  # noqa: B008
) -> JSONResponse:
    """The project's end users and their figures (a few seconds behind the messages: the worker keeps
    them). ``sort``: last_seen, first_seen, conversations, messages, avg_sentiment, avg_rating or user_id;
    ``order``: asc or desc (users without a figure come last either way); ``q``: part of a user id."""
    if sort not in end_users.SORTS:
        raise query_error("sort", f"must be one of {', '.join(end_users.SORTS)}")
    if order not in ("asc", "desc"):
        raise query_error("order", "must be asc or desc")
    if per_page > bounds.max_per_page:
        raise query_error("per_page", f"must be at most {bounds.max_per_page}")
    if q is not None and not q.isprintable():
        raise query_error("q", "must be printable text")
    with db.reader() as conn:
        rows, total = end_users.users_page(
            conn, token.project_pk, search=(q or "").strip() or None, sort=sort, descending=order == "desc",
            page=page, per_page=per_page,
        )  # fmt: skip
    pages = max(1, -(-total // per_page))
    return JSONResponse(
        {
            "users": [
                {
                    "user_id": r.user_id,
                    "conversations": r.conversations,
                    "messages": r.messages,
                    "avg_sentiment": r.avg_sentiment,
                    "avg_rating": r.avg_rating,
                    "first_seen": iso(r.first_seen),
                    "last_seen": iso(r.last_seen),
                }
                for r in rows
            ],
            "pagination": {
                "total_records": total,
                "per_page": per_page,
                "current_page": page,
                "previous_page": page - 1 if page > 1 else None,
                "next_page": page + 1 if page < pages else None,
                "page_count": pages,
            },
        }
    )


# ``:path``: an id may hold ``/`` (base64), which arrives decoded from ``%2F``; the rest of the path is the id.
@router.delete("/api/v1/users/{user_id:path}")
def erase_user(
    user_id: str,
    token: TokenInfo = AdminToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """Erase the end user and their conversations and messages; answers with a receipt of what went."""
    with db.writer() as conn:
        receipt = erase_end_user(conn, token.project_pk, user_id)
    if receipt is None:
        raise ApiError(404, "no such end user in this project")
    wipe_deleted(db)
    return JSONResponse({"status": "erased", **receipt.as_dict()})
