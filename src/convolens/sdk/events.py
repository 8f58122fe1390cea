"""Building native ingest events on the caller's thread: cheap checks, never an exception out.

Bounds mirror the server's defaults (``convolens.config.Limits``) so that one oversized field does not
get a whole batch refused later: long text is truncated (and counted), odd metadata coerced.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Mapping
from typing import Any

ROLES = frozenset({"system", "user", "assistant", "tool"})
KINDS = frozenset({"message", "tool", "event"})
MAX_CONTENT_CHARS = 100_000
MAX_ID_CHARS = 128
MAX_METADATA_KEYS = 64
MAX_METADATA_KEY_CHARS = 128
MAX_METADATA_VALUE_CHARS = 2048
_SCALARS = (str, int, float, bool, type(None))
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class InvalidEvent(ValueError):
    """An argument that cannot become an event; the client logs it and counts a drop."""


class IdFactory:
    """Unique ids without uuid4's cost on the hot path: a random per-process prefix and a counter.

    The prefix is drawn again after a fork, so parent and child never hand out the same id.
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = os.urandom(8).hex()
        # next() on itertools.count is atomic under the GIL: no lock needed between threads.
        self._counter = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):012x}"


new_id = IdFactory()


def now() -> float:
    return time.time()


def clean_id(value: Any, field: str) -> str:
    if not isinstance(value, str):
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        else:
            raise InvalidEvent(f"{field} must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_ID_CHARS:
        raise InvalidEvent(f"{field} must be 1 to {MAX_ID_CHARS} characters")
    if _CONTROL_CHARS.search(value):
        raise InvalidEvent(f"{field} must not contain control characters")
    return value


def clean_text(value: Any, field: str, counters: dict[str, int]) -> str:
    if not isinstance(value, str):
        if value is None:
            raise InvalidEvent(f"{field} is required")
        value = str(value)
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if len(value) > MAX_CONTENT_CHARS:
        counters["truncated"] = counters.get("truncated", 0) + 1
        value = value[:MAX_CONTENT_CHARS]
    return value


def clean_metadata(value: Mapping[str, Any] | None, field: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidEvent(f"{field} must be a mapping")
    out: dict[str, Any] = {}
    for key, item in itertools.islice(value.items(), MAX_METADATA_KEYS):
        key = str(key)[:MAX_METADATA_KEY_CHARS].replace("\x00", "") or "_"
        if not isinstance(item, _SCALARS):
            item = str(item)
        if isinstance(item, str):
            item = item[:MAX_METADATA_VALUE_CHARS].replace("\x00", "\ufffd")
        out[key] = item
    return out


def message_event(
    conversation_id: str,
    role: str,
    content: Any,
    counters: dict[str, int],
    *,
    id: str | None = None,
    kind: str = "message",
    name: str | None = None,
    timestamp: float | str | None = None,
    metadata: Mapping[str, Any] | None = None,
    rating: int | None = None,
    model: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    latency_ms: float | None = None,
    error: str | None = None,
    extra: Mapping[str, Any] | None = None,
    user_id: str | None = None,
    tenant_id: str | None = None,
) -> dict[str, Any]:
    if role not in ROLES:
        raise InvalidEvent(f"role must be one of {sorted(ROLES)}, got {role!r}")
    if kind not in KINDS:
        raise InvalidEvent(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if rating not in (None, -1, 0, 1):
        raise InvalidEvent(f"rating must be -1, 0 or 1, got {rating!r}")
    event: dict[str, Any] = {
        "type": "message",
        "conversation_id": clean_id(conversation_id, "conversation_id"),
        "id": clean_id(id, "id") if id is not None else new_id(),
        "role": role,
        "content": clean_text(content, "content", counters),
        "timestamp": timestamp if timestamp is not None else now(),
    }
    if kind != "message":
        event["kind"] = kind
    if name is not None:
        # A label, not a key: cleaned rather than refused (the server refuses control characters and an
        # empty name for the whole batch), so an odd tool name never costs the message.
        label = _CONTROL_CHARS.sub("", str(name))[:MAX_ID_CHARS]
        if label:
            event["name"] = label
    if metadata:
        event["metadata"] = clean_metadata(metadata, "metadata")
    if rating is not None:
        event["rating"] = rating
    if model is not None:
        event["model"] = str(model)[:MAX_ID_CHARS]
    if input_tokens is not None and input_tokens >= 0:
        event["input_tokens"] = int(input_tokens)
    if output_tokens is not None and output_tokens >= 0:
        event["output_tokens"] = int(output_tokens)
    if latency_ms is not None and latency_ms >= 0:
        event["latency_ms"] = float(latency_ms)
    if error is not None:
        event["error"] = clean_text(error, "error", counters)
    if extra:
        event["extra"] = dict(extra)
    if user_id is not None:
        event["user_id"] = clean_id(user_id, "user_id")
    if tenant_id is not None:
        event["tenant_id"] = clean_id(tenant_id, "tenant_id")
    return event


def conversation_event(
    conversation_id: str,
    *,
    user_id: str | None = None,
    tenant_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    feedback: str | None = None,
    timestamp: float | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "conversation", "id": clean_id(conversation_id, "conversation_id")}
    if user_id is not None:
        event["user_id"] = clean_id(user_id, "user_id")
    if tenant_id is not None:
        event["tenant_id"] = clean_id(tenant_id, "tenant_id")
    if metadata:
        event["metadata"] = clean_metadata(metadata, "metadata")
    if feedback is not None:
        event["feedback"] = clean_text(feedback, "feedback", {})
    if timestamp is not None:
        event["timestamp"] = timestamp
    return event
