"""``POST /api/v1/ingest``: the native batch API. One transaction per request; idempotent on ids.

A hot route: ``async``, with its token look-up, bounds, PII scrubbing and write in one thread hop
(server/offload.py); FastAPI itself only parses and validates the body.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from convolens.enrich.pii import scrubbed_batch
from convolens.schemas.bounds import check_batch
from convolens.schemas.ingest import IngestBatch, IngestResponse
from convolens.server.api.deps import app_database, app_limits, count_ingested
from convolens.server.asgi.fast_path import Counted, FastRoute
from convolens.server.asgi.orjson_route import OrjsonRoute
from convolens.server.auth import IngestBearer, authorize
from convolens.server.errors import ERROR_RESPONSES, bound_violation
from convolens.server.offload import in_heavy_lane, in_thread, is_heavy
from convolens.server.responses import JSONResponse
from convolens.server.scrubbing_process import scrubbed
from convolens.store.ingest import BatchOutcome, apply_batch
from convolens.timeutil import utcnow

router = APIRouter(tags=["ingest"], responses=ERROR_RESPONSES, route_class=OrjsonRoute)

# The fast path's contract with ``ingest`` below (server/asgi/fast_path.py checks it at start-up).
FAST_ROUTES = (
    FastRoute("/api/v1/ingest", IngestBatch, "batch", counted=Counted(("events",), "max_batch_events", "events")),
)


@router.post("/api/v1/ingest", status_code=202, response_model=IngestResponse)
async def ingest(request: Request, batch: IngestBatch, token: str = IngestBearer) -> JSONResponse:
    def store() -> BatchOutcome:
        info = authorize(request, token, "ingest")
        errors = check_batch(batch, app_limits(request))
        if errors:
            raise bound_violation(errors)
        # Before storage: raw values never reach the database (a heavy batch is scrubbed in a child process).
        clean = scrubbed(scrubbed_batch, batch, info.pii_names) if info.pii_scrubbing else batch
        return app_database(request).write(lambda conn: apply_batch(conn, info.project_pk, clean, utcnow()))

    heavy = is_heavy(getattr(event, "content", None) for event in batch.events)
    outcome = await (in_heavy_lane if heavy else in_thread)(store)
    count_ingested(request, outcome.created_messages)
    metrics = request.app.state.metrics
    if batch.client is not None:
        metrics.client_dropped.inc(batch.client.dropped)
        metrics.client_retries.inc(batch.client.retries)
    results = outcome.results
    accepted = sum(r.status != "not_found" for r in results)
    return JSONResponse({"accepted": accepted, "results": [r.as_dict() for r in results]}, status_code=202)
