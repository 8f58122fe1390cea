"""The FastAPI app factory: ``create_app(settings)``. Where a URL goes:

- ``/api/v1/ingest``                    → server/api/ingest.py (native batches)
- ``/api/v1/log/…``                     → server/api/context_log.py (Context-compatible writes)
  (these four POSTs are called by server/asgi/fast_path.py, past FastAPI's request machinery)
- ``/api/v1/conversations…``, ``/api/v1/suggested_topics`` → server/api/context_read.py
- ``/api/v1/metrics``                  → server/api/metrics.py (metrics by topic, language, model, tenant, metadata)
- ``/api/v1/topics…``                  → server/api/topics.py (define topics, review suggestions)
- ``/api/v1/alerts…``                  → server/api/alerts.py (alert rules, history, preview)
- ``/api/v1/test_sets…``, ``/api/v1/evaluations/…`` → server/api/evaluations.py (test sets, runs)
- ``DELETE /api/v1/users/{user_id}``   → server/api/users.py (erasure)
- ``POST /v1/traces``, ``POST /v1/logs`` → server/api/otlp.py (OpenTelemetry's OTLP/HTTP, translated by convolens/otlp/)
- ``/healthz``, ``/readyz``, ``/metrics`` → server/api/health.py
- ``/docs`` (Swagger UI, vendored), ``/openapi.json`` → server/web/api_docs.py, FastAPI
- ``/``, ``/login``, ``/p/{project}/…``, ``/static/…`` → server/web/ (the dashboard; its __init__ lists the pages)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from convolens import __version__
from convolens.config import Settings
from convolens.enrich.prices import price_table
from convolens.server import errors, scrubbing_process, web
from convolens.server.api import (
    alerts,
    context_log,
    context_read,
    evaluations,
    health,
    ingest,
    metrics,
    otlp,
    topics,
    users,
)
from convolens.server.asgi.body_limits import BoundedBodyMiddleware
from convolens.server.asgi.fast_path import FastPath
from convolens.server.asgi.load_shedding import WritesInFlight
from convolens.server.asgi.observability import Metrics, RequestContextMiddleware
from convolens.server.asgi.write_admission import WriteAdmission, WriteRoutes
from convolens.server.auth import RecentTokens, TokenLookups
from convolens.server.ratelimit import RateLimiter
from convolens.store import migrate
from convolens.store.db import Database
from convolens.store.writer.batches import WriteBatches
from convolens.worker.process import WorkerProcess


class ConvolensApp(FastAPI):
    """FastAPI, entered through convolens's own front: the request id and access log, a write's token
    checked before its body is read (server/asgi/write_admission.py), the body bounds, then the fast path
    (server/asgi/fast_path.py), all ahead of FastAPI's own middleware stack (error pages, telemetry,
    exception handlers, routing), which the fast path never needs."""

    front: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self  # as Starlette sets it: the fast path's endpoints read app.state
        await self.front(scope, receive, send)

    async def fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, *, run_migrations: bool = True) -> FastAPI:
    settings = settings or Settings.from_env()
    db = Database(settings.database_url)
    # The writer's batch thread; each batch looks each distinct token up once.
    write_batches = WriteBatches(db, per_batch=lambda: TokenLookups(db))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_migrations:
            migrate.upgrade(db)
        # Enrichment in a child process, not a thread: it would share this process's interpreter lock
        # with the requests (worker/process.py).
        worker = WorkerProcess(settings) if settings.embedded_worker else None
        if worker:
            worker.start()
        yield
        if worker:
            worker.stop()
        scrubbing_process.stop()
        write_batches.stop()
        db.dispose()

    app = ConvolensApp(
        title="convolens",
        version=__version__,
        description="Self-hosted user analytics for LLM-powered products. Context.ai-compatible API.",
        lifespan=lifespan,
        # /docs is served from the package under the dashboard's CSP (server/web/api_docs.py): FastAPI's
        # pages load Swagger UI and ReDoc from a CDN. /openapi.json stays.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.write_batches = write_batches
    app.state.metrics = Metrics()
    app.state.prices = price_table()
    app.state.rate_limiter = RateLimiter(settings.limits.rate_limit_per_second, settings.limits.rate_limit_burst)
    app.state.writes_in_flight = WritesInFlight(settings.limits.max_writes_in_flight)
    errors.install(app)
    api_modules = (health, ingest, context_log, context_read, metrics, topics, users, alerts, evaluations, otlp)
    for module in api_modules:
        app.include_router(module.router)  # no prefix: each route's path is the one WriteRoutes sees
    web.install(app)
    _build_routes_now(app)
    # The ingest routes' declared contracts, checked against their endpoints here (FastPathMismatch).
    fast_path = FastPath(
        app.fastapi,
        declared=(*ingest.FAST_ROUTES, *context_log.FAST_ROUTES),
        routes=(r for m in api_modules for r in m.router.routes),
        limits=settings.limits,
    )
    body = BoundedBodyMiddleware(fast_path, limits=settings.limits)
    admission = WriteAdmission(
        body,
        WriteRoutes(r for m in api_modules for r in m.router.routes),
        db=db,
        limits=settings.limits,
        tokens=RecentTokens(),
        rate_limiter=app.state.rate_limiter,
        in_flight=app.state.writes_in_flight,
        metrics=app.state.metrics,
    )
    # Outermost: every response, even a 401 from the admission or a 413 from the body guard, gets a
    # request id and a log line. Then a write's token is checked before its body is read.
    app.front = RequestContextMiddleware(admission, metrics=app.state.metrics)
    return app


def _build_routes_now(app: FastAPI) -> None:
    """FastAPI builds an included router's routes (their pydantic schemas) when a request first reaches
    it: 20-110 ms of the interpreter lock inside that request, which every other request waited for (the
    users router 112 ms; seen in bench/abuse.py's profile as 9 % of the API's lock in a hostile phase).
    One match per router at start-up builds them before the first request."""
    scope = {"type": "http", "path": "/", "root_path": "", "method": "GET", "headers": [], "query_string": b""}
    for route in app.router.routes:
        route.matches(scope)


def api_process_app() -> FastAPI:
    """One of ``convolens serve --workers N``'s processes: the parent migrated the schema and set up
    the environment (``cli._serve_processes``)."""
    import os

    from convolens.server import garbage_collection
    from convolens.server.asgi.observability import configure_logging

    configure_logging(
        os.environ.get("CONVOLENS_SERVE_LOG_LEVEL", "info"),
        json=os.environ.get("CONVOLENS_SERVE_LOG_FORMAT", "json") == "json",
    )
    app = create_app(run_migrations=False)
    garbage_collection.tune()  # a process of its own: its start-up is over once the app is built
    return app
