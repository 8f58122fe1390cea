"""Who may send a write request's body, decided from its headers before a byte of the body is read.

For every ``POST``/``PUT``/``PATCH`` API route (and OpenTelemetry's ``/v1/traces``, ``/v1/logs``, whose
token may also come in ``x-convolens-token``), in this order: a declared ``Content-Length`` over
``max_body_bytes`` (413); the bearer token, looked up, and the scope its route needs (401/403); the
token's own rate limit if the operator set one (429); the process's bound on write requests in flight
(server/asgi/load_shedding.py, 503). Only then does the body guard (server/asgi/body_limits.py) read and inflate the
body, and the fast path (server/asgi/fast_path.py) parses, count and validate it. A request without a
valid token costs its headers and one index probe, never its body: a gzip bomb sent with a made-up
token used to be inflated, parsed and validated on the event loop before its 401.

A route's scope comes from its token dependency (``auth.require`` or ``auth.scoped_bearer``, which
carry it as ``.scope``); an API write route without one is a bug, and ``create_app`` fails on it.
The write still looks its token up itself (``auth.authorize``); the look-up made here is remembered a
few seconds (``auth.RecentTokens``), so the hot path makes no extra thread hop for a token in use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from convolens.config import Limits
from convolens.server.asgi.load_shedding import RETRY_AFTER_SECONDS, WritesInFlight
from convolens.server.asgi.observability import Metrics
from convolens.server.auth import RecentTokens, invalid_token, missing_scope, missing_token, parse_bearer
from convolens.server.errors import ApiError, error_response
from convolens.server.offload import in_thread
from convolens.server.ratelimit import RateLimiter
from convolens.store.db import Database

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class _WriteRoute:
    route: APIRoute
    scope: str
    # A header that may carry the token instead of Authorization (OTLP exporters set headers from
    # OTEL_EXPORTER_OTLP_HEADERS: ``x-convolens-token``), if the route's token dependency takes one.
    token_header: bytes | None = None


def _token_dependency(route: APIRoute) -> object | None:
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        if isinstance(getattr(dependant.call, "scope", None), str):
            return dependant.call
        pending.extend(dependant.dependencies)
    return None


# The API's write routes, and OpenTelemetry's OTLP/HTTP paths (server/api/otlp.py).
_WRITE_PREFIXES = ("/api/", "/v1/")


class WriteRoutes:
    """The API write routes by method and path: exact paths in a dict (the ingest routes), the few with
    path parameters matched by their patterns."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self._exact: dict[tuple[str, str], _WriteRoute] = {}
        self._patterns: list[tuple[frozenset[str], re.Pattern[str], _WriteRoute]] = []
        for route in routes:
            if not isinstance(route, APIRoute) or not route.path.startswith(_WRITE_PREFIXES):
                continue
            methods = frozenset(route.methods or ()) & WRITE_METHODS
            if not methods:
                continue
            dependency = _token_dependency(route)
            if dependency is None:
                raise RuntimeError(f"API write route {sorted(methods)} {route.path} declares no token scope")
            entry = _WriteRoute(route, dependency.scope, getattr(dependency, "token_header", None))  # type: ignore[attr-defined]
            if "{" in route.path:
                self._patterns.append((methods, route.path_regex, entry))
            else:
                for method in methods:
                    self._exact[(method, route.path)] = entry

    def match(self, method: str, path: str) -> _WriteRoute | None:
        found = self._exact.get((method, path))
        if found is not None:
            return found
        for methods, pattern, entry in self._patterns:
            if method in methods and pattern.match(path):
                return entry
        return None


class WriteAdmission:
    """ASGI middleware, outside the body guard: admits a write request, or answers it from its headers."""

    def __init__(
        self,
        app: ASGIApp,
        routes: WriteRoutes,
        *,
        db: Database,
        limits: Limits,
        tokens: RecentTokens,
        rate_limiter: RateLimiter,
        in_flight: WritesInFlight,
        metrics: Metrics,
    ) -> None:
        self.app = app
        self.routes = routes
        self.db = db
        self.limits = limits
        self.tokens = tokens
        self.rate_limiter = rate_limiter
        self.in_flight = in_flight
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        write = self.routes.match(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if write is None:
            await self.app(scope, receive, send)
            return
        try:
            await self._admit(scope, write)
        except ApiError as exc:
            await _refuse(exc, write, scope, receive, send)
            return
        except Exception as exc:  # the look-up's database is down: its 503
            if error_response(exc) is None:
                raise
            await _refuse(exc, write, scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight.leave()

    async def _admit(self, scope: Scope, write: _WriteRoute) -> None:
        """Returns with the request counted in flight, or raises the error that refuses it."""
        authorization = declared = alternative = None
        for name, value in scope["headers"]:  # the first of each, as Starlette's headers.get takes
            if name == b"authorization" and authorization is None:
                authorization = value
            elif name == b"content-length" and declared is None:
                declared = value
            elif name == write.token_header and alternative is None:
                alternative = value
        limit = self.limits.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            detail = f"request body is larger than the limit of {limit} bytes"
            # Closed, as server/asgi/body_limits.py does: what the client still sends is not worth reading.
            raise ApiError(413, detail, [{"field": "body", "loc": ["body"], "msg": detail}], {"Connection": "close"})
        token = parse_bearer(authorization.decode("latin-1")) if authorization is not None else None
        if token is None and alternative is not None:
            token = alternative.decode("latin-1").strip() or None
        if token is None:
            raise missing_token()
        info = self.tokens.get(token)
        if info is None:
            info = await in_thread(lambda: self.tokens.look_up(self.db, token))
            if info is None:
                raise invalid_token()
        if write.scope not in info.scopes:
            raise missing_scope(write.scope)
        wait = self.rate_limiter.blocked(info.token_pk)  # taken by the write's own check (auth.authorize)
        if wait:
            self.metrics.rate_limited.inc()
            raise ApiError(
                429,
                "rate limit exceeded for this token; slow down",
                headers={"Retry-After": RateLimiter.retry_after_header(wait)},
            )
        if not self.in_flight.enter():
            raise ApiError(
                503,
                "the server is at its bound of write requests in flight; retry later",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )


async def _refuse(exc: Exception, write: _WriteRoute, scope: Scope, receive: Receive, send: Send) -> None:
    scope["route"] = write.route  # the access log and metrics name the route template
    response = error_response(exc)
    assert response is not None
    await response(scope, receive, send)
