"""The hot write routes, served without FastAPI's per-request machinery.

``POST /api/v1/ingest`` and Context's three log POSTs are declared as ordinary FastAPI routes (their
OpenAPI description, their endpoint functions); this middleware, the innermost one, calls those same
endpoint functions itself for a well-formed request: it parses the body with orjson and validates it
with a pydantic ``TypeAdapter`` of the endpoint's body model, then answers with the endpoint's response.
py-spy on one-conversation Context requests put over half the event loop's time in FastAPI's exception
middleware, routing, dependency solving and response plumbing (bench/README.md); this path skips them.

Anything unusual — no bearer token, a body that is not JSON or does not validate, a query parameter
other than ``tenant_id`` — goes on to FastAPI unchanged (the body replayed), so every error a client
sees is the one FastAPI's route gives. Errors raised by the endpoint itself (token, bounds, database)
are answered with the API's one error shape (``errors.error_response``).
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from convolens.server.auth import parse_bearer
from convolens.server.body import replay
from convolens.server.errors import error_response


@dataclass(frozen=True)
class _HotRoute:
    route: APIRoute
    endpoint: Callable[..., Awaitable[Any]]
    body_parameter: str
    body: TypeAdapter
    takes_tenant: bool


def _hot_route(route: APIRoute) -> _HotRoute:
    hints = typing.get_type_hints(route.endpoint)
    parameters = inspect.signature(route.endpoint).parameters
    (body_parameter,) = (
        name for name in parameters if isinstance(hints.get(name), type) and issubclass(hints[name], BaseModel)
    )
    return _HotRoute(
        route=route,
        endpoint=route.endpoint,
        body_parameter=body_parameter,
        body=TypeAdapter(hints[body_parameter]),
        takes_tenant="tenant_id" in parameters,
    )


class HotRoutes:
    """ASGI middleware: the POSTs to ``routes`` that it can take, it answers; the rest go to ``app``."""

    def __init__(self, app: ASGIApp, routes: list[APIRoute]) -> None:
        self.app = app
        self.routes = {r.path: _hot_route(r) for r in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if hot is None:
            await self.app(scope, receive, send)
            return
        authorization = content_type = None
        for name, value in scope["headers"]:  # the first of each, as Starlette's headers.get takes
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"content-type" and content_type is None:
                content_type = value
        token = parse_bearer(authorization) if authorization is not None else None
        json_body = content_type is not None and content_type.split(b";", 1)[0].strip().lower() == b"application/json"
        body = await _read_body(receive)
        arguments = self._arguments(hot, scope, token, json_body, body)
        if arguments is None:
            await self.app(scope, replay(body, receive), send)
            return
        scope["route"] = hot.route  # the access log and metrics name the route template
        request = Request(scope, receive)
        try:
            response = await hot.endpoint(request, token=token, **arguments)
        except Exception as exc:
            response = error_response(exc)
            if response is None:
                raise
        await response(scope, receive, send)

    @staticmethod
    def _arguments(hot: _HotRoute, scope: Scope, token: str | None, json_body: bool, body: bytes) -> dict | None:
        """The endpoint's arguments, or ``None`` where FastAPI's own route should answer."""
        if token is None or not json_body:
            return None
        arguments: dict[str, Any] = {}
        query = scope["query_string"]
        if query:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            if not hot.takes_tenant or len(pairs) != 1 or pairs[0][0] != "tenant_id":
                return None
            arguments["tenant_id"] = pairs[0][1]
        elif hot.takes_tenant:
            arguments["tenant_id"] = None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            try:
                data = json.loads(body)  # valid JSON orjson refuses (lone surrogates): the bounds check names it
            except (ValueError, RecursionError):  # nested past either parser's depth: FastAPI's 400
                return None
        try:
            arguments[hot.body_parameter] = hot.body.validate_python(data)
        except (ValidationError, RecursionError):
            return None
        return arguments


async def _read_body(receive: Receive) -> bytes:
    # BoundedBodyMiddleware, outside this one, has read and bounded the body already: one message.
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
