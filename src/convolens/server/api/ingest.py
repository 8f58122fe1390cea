"""``POST /api/v1/ingest``: the native batch API. One transaction per request; idempotent on ids."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from convolens.config import Limits
from convolens.enrich.pii import scrub_batch
from convolens.schemas.bounds import check_batch
from convolens.schemas.ingest import IngestBatch, IngestResponse
from convolens.server.api.deps import count_ingested, database, limits
from convolens.server.auth import IngestToken
from convolens.server.errors import ERROR_RESPONSES, bound_violation
from convolens.server.json_route import OrjsonRoute
from convolens.server.responses import JSONResponse
from convolens.store.db import Database
from convolens.store.ingest import apply_batch
from convolens.store.projects import TokenInfo
from convolens.timeutil import utcnow

router = APIRouter(tags=["ingest"], responses=ERROR_RESPONSES, route_class=OrjsonRoute)


@router.post("/api/v1/ingest", status_code=202, response_model=IngestResponse)
def ingest(
    request: Request,
    batch: IngestBatch,
    token: TokenInfo = IngestToken,
    db: Database = Depends(database),  # noqa: B008
    bounds: Limits = Depends(limits),  # noqa: B008
) -> JSONResponse:
    errors = check_batch(batch, bounds)
    if errors:
        raise bound_violation(errors)
    if token.pii_scrubbing:
        scrub_batch(batch, names=token.pii_names)  # before storage: raw values never reach the database
    outcome = db.write(lambda conn: apply_batch(conn, token.project_pk, batch, utcnow()))
    count_ingested(request, outcome.created_messages)
    metrics = request.app.state.metrics
    if batch.client is not None:
        metrics.client_dropped.inc(batch.client.dropped)
        metrics.client_retries.inc(batch.client.retries)
    results = outcome.results
    accepted = sum(r.status != "not_found" for r in results)
    return JSONResponse({"accepted": accepted, "results": [r.as_dict() for r in results]}, status_code=202)
