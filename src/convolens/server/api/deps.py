"""What routes get from the app: the database and the limits, set once by the app factory."""

from __future__ import annotations

from fastapi import Request

from convolens.config import Limits
from convolens.server.errors import query_error
from convolens.store.db import Database

# Plain look-ups are ``async def``: FastAPI runs a sync dependency on its thread pool, a hand-off that
# cost more than the look-up (a one-conversation request had five of them).


async def database(request: Request) -> Database:
    return app_database(request)


async def limits(request: Request) -> Limits:
    return app_limits(request)


def app_database(request: Request) -> Database:
    return request.app.state.db


def app_limits(request: Request) -> Limits:
    return request.app.state.settings.limits


def count_ingested(request: Request, created_messages: int) -> None:
    request.app.state.metrics.ingested_messages.inc(created_messages)


def tenant_filter(tenant_id: str | None = None) -> str | None:
    """The ``tenant_id`` query parameter of the read endpoints: a plain value, never a NUL (which
    PostgreSQL cannot even compare) or a control character."""
    if tenant_id is not None and (len(tenant_id) > 1000 or not tenant_id.isprintable()):
        raise query_error("tenant_id", "must be printable text of at most 1000 characters")
    return tenant_id
