"""API token authentication: ``Authorization: Bearer cl_…``; a token reaches only its own project."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

from fastapi import Depends, Request

from convolens.server.errors import ApiError
from convolens.server.ratelimit import RateLimiter
from convolens.store import projects
from convolens.store.db import Database
from convolens.store.projects import TokenInfo
from convolens.timeutil import utcnow

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="convolens"'}


def parse_bearer(header: str) -> str | None:
    """The token of an ``Authorization: Bearer …`` header's value; ``None`` if it carries none."""
    scheme, _, value = header.partition(" ")
    token = value.strip()
    return token if scheme.lower() == "bearer" and token else None


async def bearer_token(request: Request) -> str:
    """The token of ``Authorization: Bearer …``, not yet looked up: a 401 at once if there is none."""
    token = parse_bearer(request.headers.get("authorization", ""))
    if token is None:
        raise missing_token()
    return token


def missing_token() -> ApiError:
    return ApiError(401, "missing bearer token: send 'Authorization: Bearer cl_…'", headers=_CHALLENGE)


Bearer = Depends(bearer_token)


def scoped_bearer(scope: str) -> Callable[[Request], object]:
    """``bearer_token`` for a route that checks ``scope`` itself (the hot routes, inside their thread
    hop): the ``scope`` attribute tells server/asgi/write_admission.py which scope to check before the body."""

    async def dependency(request: Request) -> str:
        return await bearer_token(request)

    dependency.scope = scope  # type: ignore[attr-defined]
    dependency.__name__ = f"bearer_{scope}"
    return dependency


IngestBearer = Depends(scoped_bearer("ingest"))

# OTLP exporters set request headers from OTEL_EXPORTER_OTLP_HEADERS, where ``Authorization=Bearer cl_…``
# needs its space percent-encoded; ``x-convolens-token=cl_…`` does not.
TOKEN_HEADER = "x-convolens-token"


async def otlp_token(request: Request) -> str:
    """The token of ``Authorization: Bearer …`` or of an ``x-convolens-token`` header (the OpenTelemetry
    door, server/api/otlp.py): a 401 at once if there is neither."""
    token = parse_bearer(request.headers.get("authorization", "")) or request.headers.get(TOKEN_HEADER, "").strip()
    if not token:
        raise ApiError(
            401,
            f"missing token: send 'Authorization: Bearer cl_…' or '{TOKEN_HEADER}: cl_…'",
            headers=_CHALLENGE,
        )
    return token


otlp_token.scope = "ingest"  # type: ignore[attr-defined]  # read by server/asgi/write_admission.py, as the alternative header
otlp_token.token_header = TOKEN_HEADER.encode()  # type: ignore[attr-defined]
OtlpToken = Depends(otlp_token)


class RecentTokens:
    """Tokens found live in the last ``ttl`` seconds, for the check made before a request's body is read
    (server/asgi/write_admission.py). Only a gate: the write itself still looks its token up (``authorize``), so a
    revoked token is refused from its next request on; the cache only lets such a request's body be
    read for up to ``ttl`` seconds more. Unknown and revoked tokens are never cached: a token just
    created works at once, and a wrong one costs one index probe, never a body."""

    def __init__(self, ttl: float = 5.0, max_tracked: int = 10_000) -> None:
        self.ttl = ttl
        self.max_tracked = max_tracked
        self._found: dict[str, tuple[TokenInfo, float]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> TokenInfo | None:
        found = self._found.get(token)
        if found is None or time.monotonic() - found[1] > self.ttl:
            return None
        return found[0]

    def look_up(self, db: Database, token: str) -> TokenInfo | None:
        """The token's info from the database (blocking: call it on a worker thread), remembered if live."""
        info = db.read_held(lambda conn: projects.authenticate(conn, token), share=("token", token))
        if info is not None:
            with self._lock:
                if len(self._found) >= self.max_tracked:
                    self._found.clear()  # crude, bounded: tokens cycled by a client cannot grow memory
                self._found[token] = (info, time.monotonic())
        return info


def invalid_token() -> ApiError:
    return ApiError(401, "invalid or revoked token", headers=_CHALLENGE)


def missing_scope(scope: str) -> ApiError:
    return ApiError(403, f"this token lacks the '{scope}' scope")


class TokenLookups:
    """Tokens looked up once each for a batch of requests that had all arrived before the batch was
    taken (store/writer/batches.py): each look-up still starts after its requests arrived, so a revoked
    token is refused from the next request on, as with a look-up of its own."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._found: dict[str, TokenInfo | None] = {}

    def __call__(self, token: str) -> TokenInfo | None:
        if token not in self._found:
            self._found[token] = self._db.read_held(lambda conn: projects.authenticate(conn, token))
        return self._found[token]

    def touched(self, token: str, info: TokenInfo) -> None:
        self._found[token] = dataclasses.replace(info, last_used_at=utcnow())


def authorize(request: Request, token: str, scope: str, lookups: TokenLookups | None = None) -> TokenInfo:
    """Look the token up (blocking: call it on a worker thread), apply its rate limit and check that it
    has ``scope``. Hot routes call it inside their one thread hop (server/offload.py), or on the thread
    that writes their batch, with the batch's ``lookups``."""
    info = _authenticate(request, token, lookups)
    if scope not in info.scopes:
        raise missing_scope(scope)
    return info


def _authenticate(request: Request, token: str, lookups: TokenLookups | None) -> TokenInfo:
    db: Database = request.app.state.db
    if lookups is not None:
        info = lookups(token)
    else:
        # Concurrent requests with one token share a look-up that started after each arrived (store/shared_reads.py).
        info = db.read_held(lambda conn: projects.authenticate(conn, token), share=("token", token))
    if info is None:
        raise invalid_token()
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
        if lookups is not None:  # the batch's other requests with this token need not touch it again
            lookups.touched(token, info)
    return info


def require(scope: str) -> Callable[..., TokenInfo]:
    """A dependency for the routes that are not hot: FastAPI runs it on its thread pool."""

    def dependency(request: Request, token: str = Bearer) -> TokenInfo:
        return authorize(request, token, scope)

    dependency.scope = scope  # type: ignore[attr-defined]  # read by server/asgi/write_admission.py
    dependency.__name__ = f"require_{scope}"
    return dependency


IngestToken = Depends(require("ingest"))
ReadToken = Depends(require("read"))
AdminToken = Depends(require("admin"))
