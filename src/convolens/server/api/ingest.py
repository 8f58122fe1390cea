"""``POST /api/v1/ingest``: the native batch API, the door of the write pipeline (server/pipeline.py)
that has nothing to translate. One transaction per request; idempotent on ids.

A hot route: ``async``, the pipeline (token look-up, bounds, PII scrubbing, write) in one thread hop
(server/offload.py); the fast path (server/asgi/fast_path.py) or FastAPI only parses and validates the body.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from convolens.schemas.ingest import IngestBatch, IngestResponse
from convolens.server import pipeline
from convolens.server.api.deps import count_ingested
from convolens.server.asgi.fast_path import Counted, FastRoute
from convolens.server.asgi.orjson_route import OrjsonRoute
from convolens.server.auth import IngestBearer
from convolens.server.errors import ERROR_RESPONSES
from convolens.server.offload import is_heavy
from convolens.server.pipeline import Translation
from convolens.server.responses import JSONResponse
from convolens.store.ingest import BatchOutcome

router = APIRouter(tags=["ingest"], responses=ERROR_RESPONSES, route_class=OrjsonRoute)

# The fast path's contract with ``ingest`` below (server/asgi/fast_path.py checks it at start-up).
FAST_ROUTES = (
    FastRoute("/api/v1/ingest", IngestBatch, "batch", counted=Counted(("events",), "max_batch_events", "events")),
)


@router.post("/api/v1/ingest", status_code=202, response_model=IngestResponse)
async def ingest(request: Request, batch: IngestBatch, token: str = IngestBearer) -> JSONResponse:
    # The native batch is the pipeline's own language: nothing to translate, the fields keep their names.
    translation = Translation(batch)
    outcome: BatchOutcome = await pipeline.run(
        request, token, lambda _info: translation, heavy=is_heavy(pipeline.texts(batch))
    )
    count_ingested(request, outcome.created_messages)
    metrics = request.app.state.metrics
    if batch.client is not None:
        metrics.client_dropped.inc(batch.client.dropped)
        metrics.client_retries.inc(batch.client.retries)
    results = outcome.results
    accepted = sum(r.status != "not_found" for r in results)
    return JSONResponse({"accepted": accepted, "results": [r.as_dict() for r in results]}, status_code=202)
