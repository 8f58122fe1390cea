"""The FastAPI app factory: ``create_app(settings)``. Where a URL goes:

- ``/api/v1/ingest``                    → server/api/ingest.py (native batches)
- ``/api/v1/log/…``                     → server/api/context_log.py (Context-compatible writes)
- ``/api/v1/conversations…``, ``/api/v1/suggested_topics`` → server/api/context_read.py
- ``/api/v1/metrics``                  → server/api/metrics.py (metrics by topic, language, model, tenant, metadata)
- ``/api/v1/topics…``                  → server/api/topics.py (define topics, review suggestions)
- ``DELETE /api/v1/users/{user_id}``   → server/api/users.py (erasure)
- ``/healthz``, ``/readyz``, ``/metrics`` → server/api/health.py
- ``/``, ``/login``, ``/p/{project}/…``, ``/static/…`` → server/web/ (the dashboard; its __init__ lists the pages)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from convolens import __version__
from convolens.config import Settings
from convolens.enrich.prices import price_table
from convolens.server import errors, web
from convolens.server.api import context_log, context_read, health, ingest, metrics, topics, users
from convolens.server.body import BoundedBodyMiddleware
from convolens.server.observability import Metrics, RequestContextMiddleware
from convolens.server.ratelimit import RateLimiter
from convolens.store import migrate
from convolens.store.db import Database
from convolens.worker.runner import Worker


def create_app(settings: Settings | None = None, *, run_migrations: bool = True) -> FastAPI:
    settings = settings or Settings.from_env()
    db = Database(settings.database_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_migrations:
            migrate.upgrade(db)
        worker = Worker(db, llm=settings.llm) if settings.embedded_worker else None
        thread = worker.start_thread() if worker else None
        yield
        if worker and thread:
            worker.stop()
            thread.join(10)
        db.dispose()

    app = FastAPI(
        title="convolens",
        version=__version__,
        description="Self-hosted user analytics for LLM-powered products. Context.ai-compatible API.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.metrics = Metrics()
    app.state.prices = price_table()
    app.state.rate_limiter = RateLimiter(settings.limits.rate_limit_per_second, settings.limits.rate_limit_burst)
    errors.install(app)
    app.add_middleware(BoundedBodyMiddleware, limits=settings.limits)
    # Outermost: every response, even a 413 from the body guard, gets a request id and a log line.
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    for module in (health, ingest, context_log, context_read, metrics, topics, users):
        app.include_router(module.router)
    web.install(app)
    return app


def api_process_app() -> FastAPI:
    """One of ``convolens serve --workers N``'s processes: the parent migrated the schema and set up
    the environment (``cli._serve_processes``)."""
    import os

    from convolens.server.observability import configure_logging

    configure_logging(
        os.environ.get("CONVOLENS_SERVE_LOG_LEVEL", "info"),
        json=os.environ.get("CONVOLENS_SERVE_LOG_FORMAT", "json") == "json",
    )
    return create_app(run_migrations=False)
