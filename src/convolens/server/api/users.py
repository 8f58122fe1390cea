"""``DELETE /api/v1/users/{user_id}``: erase an end user and everything stored about them."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from convolens.server.api.deps import database
from convolens.server.auth import AdminToken
from convolens.server.errors import ERROR_RESPONSES, ApiError
from convolens.server.responses import JSONResponse
from convolens.store.db import Database
from convolens.store.erasure import erase_end_user, wipe_deleted
from convolens.store.projects import TokenInfo

router = APIRouter(tags=["users"], responses=ERROR_RESPONSES)


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
