"""``/healthz``: the process answers. ``/readyz``: and its database does too."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from convolens.server.api.deps import database
from convolens.server.responses import JSONResponse
from convolens.store.db import Database

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
def readyz(db: Database = Depends(database)) -> JSONResponse:  # noqa: B008
    if db.ping():
        return JSONResponse({"status": "ok", "database": db.dialect})
    return JSONResponse(
        {"status": "unavailable", "database": db.dialect}, status_code=503, headers={"Retry-After": "5"}
    )
