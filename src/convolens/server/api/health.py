"""``/healthz``: the process answers. ``/readyz``: and its database does too."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from sqlalchemy import func, select
from starlette.responses import Response

from convolens.server.api.deps import database
from convolens.server.responses import JSONResponse
from convolens.store.db import Database
from convolens.store.tables import message

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


_PENDING_REFRESH_SECONDS = 15.0


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, db: Database = Depends(database)) -> Response:  # noqa: B008
    """Prometheus metrics of this process. No project names or ids are in them."""
    state = request.app.state
    now = time.monotonic()
    # Counting pending messages scans an index; do it at most every few seconds, not per scrape.
    if now - getattr(state, "pending_counted_at", -1e9) > _PENDING_REFRESH_SECONDS:
        try:
            with db.reader() as conn:
                pending = conn.execute(
                    select(func.count()).select_from(message).where(message.c.enriched_version.is_(None))
                ).scalar_one()
            state.metrics.pending_enrichment.set(pending)
            state.pending_counted_at = now
        except Exception:  # the metrics must answer even while the database is away
            pass
    body, content_type = state.metrics.render()
    return Response(body, media_type=content_type)
