"""API token authentication: ``Authorization: Bearer cl_…``; a token reaches only its own project."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request

from convolens.server.errors import ApiError
from convolens.server.ratelimit import RateLimiter
from convolens.store import projects
from convolens.store.db import Database
from convolens.store.projects import TokenInfo

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="convolens"'}


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, "missing bearer token: send 'Authorization: Bearer cl_…'", headers=_CHALLENGE)
    return value.strip()


def authenticate(request: Request) -> TokenInfo:
    db: Database = request.app.state.db
    token = _bearer(request)
    with db.reader() as conn:
        info = projects.authenticate(conn, token)
    if info is None:
        raise ApiError(401, "invalid or revoked token", headers=_CHALLENGE)
    wait = request.app.state.rate_limiter.acquire(info.token_pk)
    if wait:
        request.app.state.metrics.rate_limited.inc()
        raise ApiError(
            429,
            "rate limit exceeded for this token; slow down",
            headers={"Retry-After": RateLimiter.retry_after_header(wait)},
        )
    if projects.needs_last_used_update(info):
        with db.writer() as conn:
            projects.touch_token(conn, info.token_pk)
    return info


def require(scope: str) -> Callable[..., TokenInfo]:
    async def dependency(info: TokenInfo = Depends(authenticate)) -> TokenInfo:  # noqa: B008
        if scope not in info.scopes:
            raise ApiError(403, f"this token lacks the '{scope}' scope")
        return info

    dependency.__name__ = f"require_{scope}"
    return dependency


IngestToken = Depends(require("ingest"))
ReadToken = Depends(require("read"))
AdminToken = Depends(require("admin"))
