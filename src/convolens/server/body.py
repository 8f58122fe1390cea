"""An ASGI middleware that bounds request bodies before any route sees them.

It refuses (413) a body over ``max_body_bytes`` as soon as the limit is crossed, and inflates
``Content-Encoding: gzip`` in bounded steps, refusing a body that would inflate past
``max_decompressed_bytes`` without ever holding it whole: a gzip bomb costs us at most the limit.
The routes then read an ordinary JSON body and FastAPI validates it against the pydantic schemas.
"""

from __future__ import annotations

import asyncio
import zlib

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from convolens.config import Limits

_CHUNK = 64 * 1024


class BodyTooLarge(Exception):
    pass


class BadEncoding(Exception):
    pass


class BodyTimeout(Exception):
    pass


def inflate(data: bytes, max_bytes: int, *, gzip: bool = True) -> bytes:
    inflater = zlib.decompressobj(wbits=(16 + zlib.MAX_WBITS) if gzip else zlib.MAX_WBITS)
    out = bytearray()
    try:
        pending = data
        while pending:
            out += inflater.decompress(pending, _CHUNK)
            if len(out) > max_bytes:
                raise BodyTooLarge(f"decompressed request body is larger than the limit of {max_bytes} bytes")
            pending = inflater.unconsumed_tail
        out += inflater.flush()
    except zlib.error as exc:
        raise BadEncoding(f"request body is not valid {'gzip' if gzip else 'deflate'}: {exc}") from None
    if len(out) > max_bytes:
        raise BodyTooLarge(f"decompressed request body is larger than the limit of {max_bytes} bytes")
    if not inflater.eof:
        raise BadEncoding("request body is truncated")
    return bytes(out)


class BoundedBodyMiddleware:
    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        try:
            body = await self._read(headers, receive)
            encoding = headers.get(b"content-encoding", b"identity").decode("latin-1").strip().lower()
            if encoding in ("gzip", "x-gzip", "deflate"):
                body = inflate(body, self.limits.max_decompressed_bytes, gzip=encoding != "deflate")
            elif encoding not in ("", "identity"):
                await _reply(send, 415, f"Content-Encoding {encoding!r} is not supported; use gzip or none")
                return
        except BodyTooLarge as exc:
            await _reply(send, 413, str(exc))
            return
        except BadEncoding as exc:
            await _reply(send, 400, str(exc))
            return
        except BodyTimeout:
            await _reply(send, 408, f"the request body did not arrive within {self.limits.body_timeout_seconds} s")
            return

        new_headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-encoding", b"content-length")]
        new_headers.append((b"content-length", str(len(body)).encode()))
        # In place, not a copy: outer middleware reads what routing adds to the scope (the route template).
        scope["headers"] = new_headers
        await self.app(scope, replay(body, receive), send)

    async def _read(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        limit = self.limits.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"request body is larger than the limit of {limit} bytes")
        received = bytearray()
        # One deadline for the whole body (asyncio.wait_for per chunk made a task per chunk).
        try:
            async with asyncio.timeout(self.limits.body_timeout_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        break
                    received += message.get("body", b"")
                    if len(received) > limit:
                        raise BodyTooLarge(f"request body is larger than the limit of {limit} bytes")
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise BodyTimeout from None
        return bytes(received)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the whole ``body`` as one message, then defers to the real one (for the
    disconnect a streaming response waits on)."""
    delivered = False

    async def replay_body() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay_body


async def _reply(send: Send, status: int, detail: str) -> None:
    payload = orjson.dumps({"detail": detail, "errors": [{"field": "body", "loc": ["body"], "msg": detail}]})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
