"""An ASGI middleware that bounds request bodies before any route sees them.

It refuses (413) a body over ``max_body_bytes`` as soon as the limit is crossed, and inflates
``Content-Encoding: gzip`` in bounded steps, refusing a body that would inflate past
``max_decompressed_bytes`` without ever holding it whole: a gzip bomb costs us at most the limit, and
past ``ON_LOOP_BYTES`` that cost is paid on a worker thread, not the event loop. A write request
reaches this guard only once its token is checked (server/asgi/write_admission.py).
The routes then read an ordinary JSON body and FastAPI validates it against the pydantic schemas.
"""

from __future__ import annotations

import asyncio
import zlib

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from convolens.config import Limits
from convolens.server.offload import in_thread

_CHUNK = 64 * 1024
# Bodies up to this size (inflated) are handled on the event loop; larger ones on a worker thread.
ON_LOOP_BYTES = 256 * 1024


class BodyTooLarge(Exception):
    pass


class BadEncoding(Exception):
    pass


class BodyTimeout(Exception):
    pass


class Inflation:
    """A compressed body inflated in bounded steps, which may be taken on different threads (one at a
    time): the first on the event loop, up to a budget; the rest, if any, on a worker thread."""

    def __init__(self, data: bytes, max_bytes: int, *, gzip: bool = True) -> None:
        self._inflater = zlib.decompressobj(wbits=(16 + zlib.MAX_WBITS) if gzip else zlib.MAX_WBITS)
        self._pending = data
        self._out = bytearray()
        self._max_bytes = max_bytes
        self._kind = "gzip" if gzip else "deflate"

    def run(self, budget: int | None = None) -> bool:
        """Inflate on, up to about ``budget`` more bytes of output if given: True when the whole body
        is inflated (``result``), False when the budget ran out first."""
        stop = len(self._out) + budget if budget is not None else None
        try:
            while self._pending:
                if stop is not None and len(self._out) >= stop:
                    return False
                self._out += self._inflater.decompress(self._pending, _CHUNK)
                if len(self._out) > self._max_bytes:
                    raise BodyTooLarge(f"decompressed request body is larger than the limit of {self._max_bytes} bytes")
                self._pending = self._inflater.unconsumed_tail
            self._out += self._inflater.flush()
        except zlib.error as exc:
            raise BadEncoding(f"request body is not valid {self._kind}: {exc}") from None
        if len(self._out) > self._max_bytes:
            raise BodyTooLarge(f"decompressed request body is larger than the limit of {self._max_bytes} bytes")
        if not self._inflater.eof:
            raise BadEncoding("request body is truncated")
        return True

    def result(self) -> bytes:
        return bytes(self._out)


def inflate(data: bytes, max_bytes: int, *, gzip: bool = True) -> bytes:
    inflation = Inflation(data, max_bytes, gzip=gzip)
    inflation.run()
    return inflation.result()


async def inflate_off_loop(data: bytes, max_bytes: int, *, gzip: bool = True) -> bytes:
    """``inflate``, the first ``ON_LOOP_BYTES`` of output on the event loop (a small body, the common
    case, makes no thread hop) and the rest on a worker thread, so that a large body, or a bomb on its
    way to the limit, does not hold up every other request of the process."""
    inflation = Inflation(data, max_bytes, gzip=gzip)
    if not inflation.run(ON_LOOP_BYTES):
        await in_thread(inflation.run)
    return inflation.result()


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
                body = await inflate_off_loop(body, self.limits.max_decompressed_bytes, gzip=encoding != "deflate")
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
