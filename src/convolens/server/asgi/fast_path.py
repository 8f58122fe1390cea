"""The fast path: declared ingest routes served without FastAPI's per-request machinery.

``POST /api/v1/ingest`` and Context's three log POSTs are ordinary FastAPI routes (their OpenAPI
description, their endpoint functions); each also declares a ``FastRoute`` beside it: its path, its
body model, the name of the endpoint's body parameter, whether it takes ``tenant_id`` from the query,
and the list in its body that a ``Limits`` bound caps. ``FastPath`` checks every declaration against
the endpoint's signature when the app is made (``FastPathMismatch`` at ``create_app``, never a wrong
call at request time), then, for those POSTs, calls the same endpoint functions itself: it parses the
body with orjson, refuses a list over its bound before validating any of it, validates it with a
pydantic ``TypeAdapter`` of the body model (a body over ``ON_LOOP_BYTES`` on a worker thread, so that
it does not hold up the event loop), then answers with the endpoint's response. The token was checked
before the body was read (server/asgi/write_admission.py).

py-spy on one-conversation Context requests put over half the event loop's time in FastAPI's exception
middleware, routing, dependency solving and response plumbing (bench/README.md); this path skips them.

A body that is not JSON or does not validate is answered here with the 422 FastAPI's route gives
(parsing it again there cost a large body twice on the event loop), and so is JSON nested past the
parsers' depth (a 422 naming where, which FastAPI's route answers with a bare 400). Anything unusual —
a content type other than JSON, a query parameter other than ``tenant_id`` — goes on to FastAPI
unchanged (the body replayed). Errors raised by the endpoint itself (token, bounds,
database) are answered with the API's one error shape (``errors.error_response``).
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from convolens.config import Limits
from convolens.schemas.bounds import FieldError, too_deep_path
from convolens.server.asgi.body_limits import ON_LOOP_BYTES, replay
from convolens.server.auth import parse_bearer
from convolens.server.errors import bound_violation, error_response
from convolens.server.offload import in_thread
from convolens.server.scrubbing_process import in_child


@dataclass(frozen=True)
class Counted:
    """The list in a body that a ``Limits`` bound caps: counted before the body is validated."""

    path: tuple[str, ...]
    limit: str  # the ``Limits`` attribute
    noun: str


@dataclass(frozen=True)
class FastRoute:
    """A route's contract with the fast path, declared beside its endpoint. The endpoint must be
    ``async def endpoint(request: Request, <body_parameter>: <body>, [tenant_id: str | None,] token: str)``
    and return a response; ``FastPath`` checks that when the app is made."""

    path: str
    body: type[BaseModel]
    body_parameter: str
    takes_tenant: bool = False
    counted: Counted | None = None


class FastPathMismatch(RuntimeError):
    """A ``FastRoute`` that does not match its endpoint: raised by ``create_app``, before serving."""


@dataclass(frozen=True)
class _Bound:
    """A declaration checked against its route: what a request calls."""

    declared: FastRoute
    route: APIRoute
    endpoint: Callable[..., Awaitable[Any]]
    body: TypeAdapter


def _bind(declared: FastRoute, routes: dict[str, APIRoute]) -> _Bound:
    route = routes.get(declared.path)
    if route is None:
        raise FastPathMismatch(f"fast path: no POST route {declared.path} for its declaration")
    endpoint = route.endpoint
    where = f"fast path {declared.path} ({endpoint.__module__}.{endpoint.__qualname__})"
    if not inspect.iscoroutinefunction(endpoint):
        raise FastPathMismatch(f"{where}: the endpoint must be async def")
    parameters = inspect.signature(endpoint).parameters
    hints = typing.get_type_hints(endpoint)
    expected = {"request", declared.body_parameter, "token"} | ({"tenant_id"} if declared.takes_tenant else set())
    if set(parameters) != expected:
        raise FastPathMismatch(
            f"{where}: declared parameters {sorted(expected)}, the endpoint has {sorted(parameters)}"
        )
    if hints.get(declared.body_parameter) is not declared.body:
        raise FastPathMismatch(
            f"{where}: declared body {declared.body.__name__} as {declared.body_parameter!r}, "
            f"the endpoint takes {hints.get(declared.body_parameter)!r}"
        )
    if hints.get("request") is not Request:
        raise FastPathMismatch(f"{where}: the endpoint's 'request' must be a starlette Request")
    if declared.counted is not None and not hasattr(Limits, declared.counted.limit):
        raise FastPathMismatch(f"{where}: no limit {declared.counted.limit!r} in Limits")
    return _Bound(declared, route, endpoint, TypeAdapter(declared.body))


class FastPath:
    """ASGI middleware: the POSTs to the declared routes that it can take, it answers; the rest go to ``app``.
    Raises ``FastPathMismatch`` if a declaration does not match its route's endpoint."""

    def __init__(
        self, app: ASGIApp, declared: Iterable[FastRoute], routes: Iterable[BaseRoute], limits: Limits
    ) -> None:
        self.app = app
        posts = {r.path: r for r in routes if isinstance(r, APIRoute) and "POST" in (r.methods or ())}
        self.routes = {d.path: _bind(d, posts) for d in declared}
        self.limits = limits

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
        arguments = self._query_arguments(hot, scope) if token is not None and json_body else None
        try:
            if arguments is not None:
                if len(body) <= ON_LOOP_BYTES:
                    parsed = self._parse(hot, body)
                else:  # a large body is parsed and validated on a worker thread, not the event loop
                    parsed = await in_thread(lambda: self._parse(hot, body, off_loop=True))
                if parsed is None:
                    arguments = None
                else:
                    arguments[hot.declared.body_parameter] = parsed
            if arguments is not None:
                scope["route"] = hot.route  # the access log and metrics name the route template
                response = await hot.endpoint(Request(scope, receive), token=token, **arguments)
        except Exception as exc:
            response = error_response(exc)
            if response is None:
                raise
            scope["route"] = hot.route
        else:
            if arguments is None:
                await self.app(scope, replay(body, receive), send)
                return
        await response(scope, receive, send)

    @staticmethod
    def _query_arguments(hot: _Bound, scope: Scope) -> dict[str, Any] | None:
        """The endpoint's arguments from the query string, or ``None`` where FastAPI's own route should
        answer (a parameter other than ``tenant_id``)."""
        arguments: dict[str, Any] = {}
        query = scope["query_string"]
        if query:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            if not hot.declared.takes_tenant or len(pairs) != 1 or pairs[0][0] != "tenant_id":
                return None
            arguments["tenant_id"] = pairs[0][1]
        elif hot.declared.takes_tenant:
            arguments["tenant_id"] = None
        return arguments

    def _parse(self, hot: _Bound, body: bytes, off_loop: bool = False) -> Any:
        """The body parsed, counted and validated; raises the error that answers a body that is not
        JSON, nests too deep, carries too many items or does not validate (the 422 FastAPI's route would
        give, or one naming the field); ``None`` for the rare body FastAPI's route should answer.
        ``off_loop``: on a worker thread, which may wait for the API's child process."""
        counted = hot.declared.counted
        if off_loop and counted is not None and _many_objects(body, counted, self.limits):
            length = in_child(count_items, body, counted.path)
            if isinstance(length, Unreadable):
                return self._unreadable(hot, body, length)
            _check_length(length, counted, self.limits)
        data = decode(body)
        if isinstance(data, Unreadable):
            return self._unreadable(hot, body, data)
        if counted is not None:
            _check_count(data, counted, self.limits)
        try:
            return hot.body.validate_python(data)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        except RecursionError:
            return None

    @staticmethod
    def _unreadable(hot: _Bound, body: bytes, why: Unreadable) -> None:
        """Raises the answer to a body that does not decode; ``None`` (FastAPI's route answers) when it is
        not UTF-8."""
        if why.too_deep:
            raise _too_deep(hot, body)
        if why.position is not None:
            raise _json_invalid(why.position, why.message)
        return None


@dataclass(frozen=True)
class Unreadable:
    """Why a body did not decode: not JSON (where and why), nested too deep, or (neither) not UTF-8."""

    position: int | None = None
    message: str = ""
    too_deep: bool = False


def decode(body: bytes) -> Any:
    """The JSON body's data, or ``Unreadable``: orjson first, then ``json`` for the valid JSON orjson
    refuses (lone surrogates: the bounds check names them afterwards)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            return json.loads(body)
        except json.JSONDecodeError as exc:
            return Unreadable(exc.pos, exc.msg)
        except RecursionError:  # nested past both parsers' depth
            return Unreadable(too_deep=True)
        except ValueError:  # not UTF-8
            return Unreadable()


# Bodies up to this size are searched for where they nest too deep (a re-parse a level, at most 8);
# a larger one is named by its list.
DEEP_SEARCH_BYTES = 1024 * 1024


def _too_deep(hot: _Bound, body: bytes) -> Exception:
    """The 422 for a body nested past the parsers' ~1,000 levels, naming where (or, for a large body,
    its list), as the bounds check names free-form JSON nested past its own bound."""
    path = None
    if len(body) <= DEEP_SEARCH_BYTES:
        path = too_deep_path(body.decode("utf-8", "replace"))
    if path is None:
        counted = hot.declared.counted
        path = counted.path if counted is not None else ()
    return bound_violation([FieldError(path, "nests deeper than the 1,000 levels a JSON body may have")])


def _json_invalid(position: int, message: str) -> RequestValidationError:
    # As FastAPI words it.
    return RequestValidationError(
        [{"type": "json_invalid", "loc": ("body", position), "msg": "JSON decode error",
          "input": {}, "ctx": {"error": message}}]
    )  # fmt: skip


def _items(data: Any, path: tuple[str, ...]) -> list | None:
    items = data
    for key in path:
        items = items.get(key) if isinstance(items, dict) else None
    return items if isinstance(items, list) else None


def _check_count(data: Any, counted: Counted, limits: Limits) -> None:
    """Refuse a body with more items than its bound before validating any of them: validation is the
    dear part, and the bound's 422 is what the bounds check (schemas/bounds.py) would give afterwards."""
    items = _items(data, counted.path)
    if items is not None:  # else validation names what is wrong
        _check_length(len(items), counted, limits)


def _check_length(length: int, counted: Counted, limits: Limits) -> None:
    limit = getattr(limits, counted.limit)
    if length > limit:
        raise bound_violation([FieldError(counted.path, f"has {length} {counted.noun}; the limit is {limit}")])


# A large body with more than this many ``{`` a counted item (an event with its metadata and extra holds
# a few) is counted in the API process's child before the API parses it. orjson holds the interpreter
# lock while it builds objects: 50,000 one-line events (3.4 MB) took 25-45 ms of it, in which no other
# request of the process moved (bench/abuse.py's over-count class was a third of the API's lock time
# under attack). ``{`` inside strings count too: a false alarm only costs the body a parse in the child.
OBJECTS_PER_ITEM = 8


def _many_objects(body: bytes, counted: Counted, limits: Limits) -> bool:
    return body.count(b"{") > OBJECTS_PER_ITEM * getattr(limits, counted.limit)


def count_items(body: bytes, path: tuple[str, ...]) -> int | Unreadable:
    """In the child: the length of the list at ``path`` (0 when there is none: validation names it), or
    why the body does not decode. The parse stays in the child; only this small answer comes back."""
    data = decode(body)
    if isinstance(data, Unreadable):
        return data
    items = _items(data, path)
    return 0 if items is None else len(items)


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
