"""OTLP/HTTP bodies (protobuf or the OTLP JSON mapping) → plain ``Span`` and ``LogEvent`` records, and
the export responses in the request's own encoding.

Nothing here trusts the body. Protobuf is parsed by upb (a truncated body or one nested past its
recursion limit is a ``DecodeError``), JSON by orjson (its own depth limit). Attribute values are
converted only when the translation asks for one (``Attributes.get``), at most ``MAX_DEPTH`` levels
deep and ``MAX_ITEMS`` entries per array or map: an attribute nobody reads costs nothing, one that is
read costs a bounded amount, and a deeper or longer value is cut there, never a recursion error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_DEPTH = 16
MAX_ITEMS = 10_000
_STATUS_ERROR = 2
_HEX_TRACE = re.compile(r"[0-9a-fA-F]{32}")
_HEX_SPAN = re.compile(r"[0-9a-fA-F]{16}")
_INT64 = 2**63


class OtlpError(Exception):
    """The body is not a valid OTLP request: a 400 naming ``field``."""

    def __init__(self, field: str, msg: str) -> None:
        super().__init__(f"{field}: {msg}")
        self.field = field
        self.msg = msg


def media_type(content_type: str | None) -> str | None:
    """``PROTOBUF`` or ``JSON`` for a Content-Type header (parameters ignored), else None."""
    if not content_type:
        return None
    base = content_type.split(";", 1)[0].strip().lower()
    if base == "application/protobuf":  # what some clients send; OTLP/HTTP names the x- form
        return PROTOBUF
    return base if base in (PROTOBUF, JSON) else None


# -- attribute values ------------------------------------------------------------------------------


def _from_pb(value: Any, depth: int) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return value.double_value if math.isfinite(value.double_value) else None
    if depth >= MAX_DEPTH:
        return None
    if kind == "array_value":
        return [_from_pb(v, depth + 1) for v in value.array_value.values[:MAX_ITEMS]]
    if kind == "kvlist_value":
        return {kv.key: _from_pb(kv.value, depth + 1) for kv in value.kvlist_value.values[:MAX_ITEMS]}
    return None  # bytes, or no value


def _pick(d: dict, camel: str, snake: str) -> Any:
    """A field of the JSON mapping: lowerCamelCase as OTLP writes it, or the proto name, as protobuf's
    JSON parsers also accept."""
    value = d.get(camel)
    return d.get(snake) if value is None else value


def _from_json(value: Any, depth: int) -> Any:
    if not isinstance(value, dict):
        return None
    for camel, snake in (("stringValue", "string_value"), ("boolValue", "bool_value")):
        found = _pick(value, camel, snake)
        if found is not None:
            return found if isinstance(found, str | bool) else None
    found = _pick(value, "intValue", "int_value")
    if found is not None:  # int64 travels as a string in JSON; a number is accepted too
        try:
            number = int(found) if isinstance(found, str) and len(found) <= 20 else found
        except ValueError:
            return None
        return (
            number if isinstance(number, int) and not isinstance(number, bool) and -_INT64 <= number < _INT64 else None
        )
    found = _pick(value, "doubleValue", "double_value")
    if found is not None:
        return float(found) if isinstance(found, int | float) and math.isfinite(found) else None
    if depth >= MAX_DEPTH:
        return None
    found = _pick(value, "arrayValue", "array_value")
    if isinstance(found, dict):
        values = found.get("values")
        return [_from_json(v, depth + 1) for v in values[:MAX_ITEMS]] if isinstance(values, list) else []
    found = _pick(value, "kvlistValue", "kvlist_value")
    if isinstance(found, dict):
        values = found.get("values")
        if not isinstance(values, list):
            return {}
        return {
            kv["key"]: _from_json(kv.get("value"), depth + 1)
            for kv in values[:MAX_ITEMS]
            if isinstance(kv, dict) and isinstance(kv.get("key"), str)
        }
    return None


@dataclass(slots=True)
class Attributes:
    """A span's (or event's, resource's) attributes: raw values by key, converted when read."""

    raw: dict[str, Any]
    convert: Callable[[Any, int], Any]

    def get(self, key: str) -> Any:
        value = self.raw.get(key)
        return None if value is None else self.convert(value, 0)

    def first(self, *keys: str) -> Any:
        for key in keys:
            value = self.get(key)
            if value is not None and value != "":
                return value
        return None

    def with_prefix(self, prefix: str) -> Iterator[tuple[str, Any]]:
        """(the key after ``prefix``, value) for each key that starts with it."""
        for key, value in self.raw.items():
            if key.startswith(prefix):
                yield key[len(prefix) :], self.convert(value, 0)

    def has_prefix(self, prefix: str) -> bool:
        return any(key.startswith(prefix) for key in self.raw)


def _pb_attributes(attributes: Any) -> Attributes:
    return Attributes({kv.key: kv.value for kv in attributes}, _from_pb)


def _json_attributes(attributes: Any, where: str) -> Attributes:
    if attributes is None:
        return Attributes({}, _from_json)
    if not isinstance(attributes, list):
        raise OtlpError(where, "must be a list of {key, value}")
    raw = {}
    for kv in attributes:
        if isinstance(kv, dict) and isinstance(kv.get("key"), str):
            raw[kv["key"]] = kv.get("value")
    return Attributes(raw, _from_json)


EMPTY = Attributes({}, _from_pb)


# -- records ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class SpanEvent:
    name: str
    attributes: Attributes
    time_ns: int = 0
    body: Any = None  # a log record's body (converted), for events that came through /v1/logs


@dataclass(slots=True)
class Span:
    """One span as the translation needs it. ``trace_id``/``span_id``: lower-case hex, or "" if the
    request's were not valid ids (the translation rejects such a span)."""

    trace_id: str
    span_id: str
    name: str
    start_ns: int
    end_ns: int
    attributes: Attributes
    resource: Attributes
    events: list[SpanEvent] = field(default_factory=list)
    error: str | None = None  # the status message of a span whose status is ERROR ("" if it gave none)
    records: int = 1  # what it counts for in a partial_success: 1 span, or the log records it was made of


def _hex_id(raw: bytes, size: int) -> str:
    return raw.hex() if len(raw) == size and any(raw) else ""


def _json_id(value: Any, pattern: re.Pattern[str]) -> str:
    if isinstance(value, str) and pattern.fullmatch(value) and value.strip("0"):
        return value.lower()
    return ""


def _json_nanos(value: Any) -> int:
    try:
        number = int(value) if isinstance(value, str) and len(value) <= 20 else value
    except ValueError:
        return 0
    return number if isinstance(number, int) and not isinstance(number, bool) and 0 <= number < 2**64 else 0


def _json_list(d: dict, camel: str, snake: str, where: str) -> list:
    value = _pick(d, camel, snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpError(where, "must be a list")
    return value


def _json_object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise OtlpError(where, "must be an object")
    return value


def _load_json(body: bytes) -> dict:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OtlpError("body", f"is not valid JSON: {exc}") from None
    return _json_object(data, "body")


def _load_pb(message_type: Any, body: bytes) -> Any:
    try:
        return message_type.FromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:  # upb raises DecodeError; a recursion limit too
        raise OtlpError("body", f"is not a valid {message_type.DESCRIPTOR.name} protobuf message: {exc}") from None


def spans_from_protobuf(body: bytes) -> list[Span]:
    request = _load_pb(ExportTraceServiceRequest, body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = _pb_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                spans.append(
                    Span(
                        trace_id=_hex_id(s.trace_id, 16),
                        span_id=_hex_id(s.span_id, 8),
                        name=s.name,
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        attributes=_pb_attributes(s.attributes),
                        resource=resource,
                        events=[SpanEvent(e.name, _pb_attributes(e.attributes), e.time_unix_nano) for e in s.events],
                        error=s.status.message if s.status.code == _STATUS_ERROR else None,
                    )
                )
    return spans


def _json_status_error(status: Any) -> str | None:
    if not isinstance(status, dict):
        return None
    code = status.get("code")
    if code in (_STATUS_ERROR, "STATUS_CODE_ERROR", "2"):
        message = status.get("message")
        return message if isinstance(message, str) else ""
    return None


def spans_from_json(body: bytes) -> list[Span]:
    data = _load_json(body)
    spans = []
    for r, resource_spans in enumerate(_json_list(data, "resourceSpans", "resource_spans", "resourceSpans")):
        where = f"resourceSpans[{r}]"
        resource_spans = _json_object(resource_spans, where)
        resource_obj = resource_spans.get("resource") or {}
        resource_attributes = _json_object(resource_obj, f"{where}.resource").get("attributes")
        resource = _json_attributes(resource_attributes, f"{where}.resource.attributes")
        for c, scope_spans in enumerate(_json_list(resource_spans, "scopeSpans", "scope_spans", f"{where}.scopeSpans")):
            scope_where = f"{where}.scopeSpans[{c}]"
            scope_spans = _json_object(scope_spans, scope_where)
            for i, s in enumerate(_json_list(scope_spans, "spans", "spans", f"{scope_where}.spans")):
                span_where = f"{scope_where}.spans[{i}]"
                s = _json_object(s, span_where)
                events = []
                for e, event in enumerate(_json_list(s, "events", "events", f"{span_where}.events")):
                    event = _json_object(event, f"{span_where}.events[{e}]")
                    name = event.get("name")
                    events.append(
                        SpanEvent(
                            name if isinstance(name, str) else "",
                            _json_attributes(event.get("attributes"), f"{span_where}.events[{e}].attributes"),
                            _json_nanos(_pick(event, "timeUnixNano", "time_unix_nano")),
                        )
                    )
                name = s.get("name")
                spans.append(
                    Span(
                        trace_id=_json_id(_pick(s, "traceId", "trace_id"), _HEX_TRACE),
                        span_id=_json_id(_pick(s, "spanId", "span_id"), _HEX_SPAN),
                        name=name if isinstance(name, str) else "",
                        start_ns=_json_nanos(_pick(s, "startTimeUnixNano", "start_time_unix_nano")),
                        end_ns=_json_nanos(_pick(s, "endTimeUnixNano", "end_time_unix_nano")),
                        attributes=_json_attributes(s.get("attributes"), f"{span_where}.attributes"),
                        resource=resource,
                        events=events,
                        error=_json_status_error(s.get("status")),
                    )
                )
    return spans


def decode_spans(body: bytes, kind: str) -> list[Span]:
    return spans_from_protobuf(body) if kind == PROTOBUF else spans_from_json(body)


# -- logs ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class LogEvent:
    """One log record (a GenAI event, if its name says so), with the span it was emitted in."""

    trace_id: str
    span_id: str
    name: str
    time_ns: int
    attributes: Attributes
    resource: Attributes
    body: Any


def logs_from_protobuf(body: bytes) -> list[LogEvent]:
    request = _load_pb(ExportLogsServiceRequest, body)
    events = []
    for resource_logs in request.resource_logs:
        resource = _pb_attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                attributes = _pb_attributes(record.attributes)
                name = record.event_name or attributes.get("event.name")
                events.append(
                    LogEvent(
                        trace_id=_hex_id(record.trace_id, 16),
                        span_id=_hex_id(record.span_id, 8),
                        name=name if isinstance(name, str) else "",
                        time_ns=record.time_unix_nano or record.observed_time_unix_nano,
                        attributes=attributes,
                        resource=resource,
                        body=_from_pb(record.body, 0) if record.HasField("body") else None,
                    )
                )
    return events


def logs_from_json(body: bytes) -> list[LogEvent]:
    data = _load_json(body)
    events = []
    for r, resource_logs in enumerate(_json_list(data, "resourceLogs", "resource_logs", "resourceLogs")):
        where = f"resourceLogs[{r}]"
        resource_logs = _json_object(resource_logs, where)
        resource_obj = resource_logs.get("resource") or {}
        resource_attributes = _json_object(resource_obj, f"{where}.resource").get("attributes")
        resource = _json_attributes(resource_attributes, f"{where}.resource.attributes")
        for c, scope_logs in enumerate(_json_list(resource_logs, "scopeLogs", "scope_logs", f"{where}.scopeLogs")):
            scope_where = f"{where}.scopeLogs[{c}]"
            scope_logs = _json_object(scope_logs, scope_where)
            for i, record in enumerate(
                _json_list(scope_logs, "logRecords", "log_records", f"{scope_where}.logRecords")
            ):
                record_where = f"{scope_where}.logRecords[{i}]"
                record = _json_object(record, record_where)
                attributes = _json_attributes(record.get("attributes"), f"{record_where}.attributes")
                name = _pick(record, "eventName", "event_name") or attributes.get("event.name")
                time_ns = _json_nanos(_pick(record, "timeUnixNano", "time_unix_nano")) or _json_nanos(
                    _pick(record, "observedTimeUnixNano", "observed_time_unix_nano")
                )
                events.append(
                    LogEvent(
                        trace_id=_json_id(_pick(record, "traceId", "trace_id"), _HEX_TRACE),
                        span_id=_json_id(_pick(record, "spanId", "span_id"), _HEX_SPAN),
                        name=name if isinstance(name, str) else "",
                        time_ns=time_ns,
                        attributes=attributes,
                        resource=resource,
                        body=_from_json(record.get("body"), 0),
                    )
                )
    return events


def decode_logs(body: bytes, kind: str) -> list[LogEvent]:
    return logs_from_protobuf(body) if kind == PROTOBUF else logs_from_json(body)


# -- responses -------------------------------------------------------------------------------------


def export_response(kind: str, rejected: int, message: str, *, logs: bool = False) -> bytes:
    """ExportTraceServiceResponse (or ExportLogsServiceResponse) in the request's encoding, with a
    partial_success only when something was rejected or there is something to say."""
    count_field = "rejected_log_records" if logs else "rejected_spans"
    if kind == PROTOBUF:
        response = ExportLogsServiceResponse() if logs else ExportTraceServiceResponse()
        if rejected or message:
            setattr(response.partial_success, count_field, rejected)
            response.partial_success.error_message = message
        return response.SerializeToString()
    if not (rejected or message):
        return b"{}"
    camel = "rejectedLogRecords" if logs else "rejectedSpans"
    return orjson.dumps({"partialSuccess": {camel: str(rejected), "errorMessage": message}})


def status_body(kind: str, message: str, code: int = 3) -> bytes:
    """A google.rpc.Status (code 3: INVALID_ARGUMENT) in the request's encoding, as OTLP/HTTP asks of a
    4xx answer. Written by hand (two fields) rather than bring in googleapis-common-protos for it."""
    if kind == PROTOBUF:
        text = message.encode()
        return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text
    return orjson.dumps({"code": code, "message": message})


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
