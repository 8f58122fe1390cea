"""Configurable size bounds, checked after the shape is valid. Each violation names its field."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from convolens.config import Limits
from convolens.schemas.ingest import ConversationEvent, CustomEvent, IngestBatch, MessageEvent

# The path segments "." and "..": an id that is exactly one of them cannot travel in a URL path.
DOT_SEGMENTS = frozenset({".", ".."})


def field_name(loc: Sequence[str | int]) -> str:
    """``("events", 3, "content")`` as ``events[3].content``: how every error names its field."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass(frozen=True)
class FieldError:
    loc: tuple[str | int, ...]
    msg: str

    @property
    def field(self) -> str:
        return field_name(self.loc)

    def as_dict(self) -> dict:
        return {"loc": list(self.loc), "field": self.field, "msg": self.msg}


_CONTROL_CHAR = re.compile("[\x00-\x1f\x7f]")


def has_control_chars(value: str) -> bool:
    return _CONTROL_CHAR.search(value) is not None


# JSON may spell half a UTF-16 pair ("\ud800"); such a string has no UTF-8 form and no database takes it.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _label(key: str) -> str:
    """A metadata key as it may appear in an error message (which must itself be valid UTF-8)."""
    return key[:40].encode("utf-8", "replace").decode("utf-8")


def has_lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return not value.isascii() and _LONE_SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    return False


# What orjson (the store's JSON writer) and both databases hold as a JSON integer.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def _scalar_problem(value: object) -> str | None:
    """What is wrong with one number or string inside free-form JSON, or ``None``."""
    if isinstance(value, str):
        if "\x00" in value:
            return "must not contain NUL characters"
        if not value.isascii() and _LONE_SURROGATE.search(value):
            return "must not contain unpaired UTF-16 surrogates"
    elif isinstance(value, float):
        # 1e400, NaN and Infinity reach here from the standard JSON parser (orjson refuses them).
        if not math.isfinite(value):
            return "must be a finite number"
    elif isinstance(value, int) and not isinstance(value, bool) and not _INT_MIN <= value <= _INT_MAX:
        return "must be an integer that fits in 64 bits"
    return None


def _json_chars(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def too_deep_path(text: str, components: int = 8, siblings: int = 10_000) -> tuple[str | int, ...] | None:
    """Where a JSON text that the parsers refuse for its depth (past ~1,000 levels) nests too deep: the
    keys and indexes down to the value that does, at most ``components`` of them, so that the 422 can
    name the field (``events[0].extra.a[0]…``); ``None`` if the text is not otherwise valid JSON there.

    At C speed: at each level the siblings are skipped by the standard parser (``raw_decode``), and the
    one it refuses for depth is the one to step into; the descent stops after ``components`` steps,
    each re-reading at most the ~1,000 levels the parser reaches. Skipping a sibling is a Python step,
    so past ``siblings`` of them the path found so far is the answer (a flat array of millions of
    numbers before the deep part would otherwise cost seconds)."""
    path: list[str | int] = []
    at = _SPACE.match(text, 0).end()  # type: ignore[union-attr]
    try:
        while len(path) < components and at < len(text) and text[at] in "[{":
            opening = text[at]
            at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
            index = 0
            while True:
                if opening == "{":
                    if text[at] != '"':
                        return None
                    key, at = json.decoder.scanstring(text, at + 1)
                    at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
                    if text[at] != ":":
                        return None
                    at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
                step: str | int = key if opening == "{" else index
                try:
                    _, end = _DECODER.raw_decode(text, at)
                except RecursionError:
                    path.append(step)  # this value is the one nested too deep: step into it
                    break
                at = _SPACE.match(text, end).end()  # type: ignore[union-attr]
                if text[at] != ",":
                    return None  # the container closed with nothing too deep in it
                siblings -= 1
                if siblings <= 0:
                    return tuple(path) if path else None
                at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
                index += 1
    except (ValueError, IndexError):
        return None  # malformed before the deep part: the parsers' own error answers it
    return tuple(path) if path else None


def json_problem(value: object, max_depth: int, max_bytes: int) -> tuple[tuple[str | int, ...], str] | None:
    """The first problem of a free-form JSON value, as (path inside it, message), or ``None``.

    Iterative, so a value nested 10**5 deep costs no stack, and it stops at the first container past
    ``max_depth`` or as soon as the JSON text would pass ``max_bytes`` (counted as it goes, about the
    length ``json.dumps`` would write). Every item queued adds at least a byte to that count, so the
    walk does O(``max_bytes``) work whatever the value's size."""
    size = 0
    stack: list[tuple[tuple[str | int, ...], object, int]] = [((), value, 1)]
    while stack:
        path, item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                return path, f"nests deeper than {max_depth} levels"
            size += 2 + len(item)  # brackets, and a comma or colon per item
            if size > max_bytes:  # before its items are queued: a million-item list stops here
                return (), f"is over {max_bytes} bytes as JSON"
            if isinstance(item, dict):
                for key, child in item.items():
                    problem = _scalar_problem(key)
                    if problem:
                        return (*path, _label(key)), f"key {problem}"
                    size += _json_chars(key) + 2
                    stack.append(((*path, _label(key)), child, depth + 1))
            else:
                stack.extend(((*path, i), child, depth + 1) for i, child in enumerate(item))
        else:
            problem = _scalar_problem(item)
            if problem:
                return path, problem
            size += _json_chars(item) + 2 if isinstance(item, str) else len(repr(item))
        if size > max_bytes:
            return (), f"is over {max_bytes} bytes as JSON"
    return None


class _Checker:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.errors: list[FieldError] = []

    def text(self, loc: tuple, value: str | None, max_chars: int) -> None:
        if value is None:
            return
        if len(value) > max_chars:
            self.errors.append(FieldError(loc, f"is {len(value)} characters long; the limit is {max_chars}"))
        elif "\x00" in value:
            # PostgreSQL text cannot hold NUL; refusing it keeps both backends storing the same bytes.
            self.errors.append(FieldError(loc, "must not contain NUL characters"))
        elif not value.isascii() and _LONE_SURROGATE.search(value):
            self.errors.append(FieldError(loc, "must not contain unpaired UTF-16 surrogates"))

    def identifier(self, loc: tuple, value: str | None, max_chars: int | None = None) -> None:
        if value is None:
            return
        max_chars = max_chars or self.limits.max_id_chars
        if not value:
            self.errors.append(FieldError(loc, "must not be empty"))
        elif len(value) > max_chars:
            self.errors.append(FieldError(loc, f"is {len(value)} characters long; the limit is {max_chars}"))
        elif has_control_chars(value):
            self.errors.append(FieldError(loc, "must not contain control characters"))
        elif not value.isascii() and _LONE_SURROGATE.search(value):
            self.errors.append(FieldError(loc, "must not contain unpaired UTF-16 surrogates"))

    def path_id(self, loc: tuple, value: str | None) -> None:
        """An id that a URL path carries (conversations, users, threads): an identifier that is not a
        dot segment, which browsers and HTTP clients resolve away (RFC 3986), so no link reaches it."""
        self.identifier(loc, value)
        if value in DOT_SEGMENTS:
            self.errors.append(FieldError(loc, f"must not be {value!r}: a URL path cannot carry it"))

    def json(self, loc: tuple, value: object) -> None:
        """Free-form JSON (``extra``, Context's ``input``): depth, size, no NUL, finite numbers."""
        if value is None:
            return
        found = json_problem(value, self.limits.max_extra_depth, self.limits.max_extra_bytes)
        if found:
            path, msg = found
            self.errors.append(FieldError((*loc, *path), msg))

    def metadata(self, loc: tuple, metadata: Mapping | None) -> None:
        if not metadata:
            return
        lim = self.limits
        if len(metadata) > lim.max_metadata_keys:
            self.errors.append(FieldError(loc, f"has {len(metadata)} keys; the limit is {lim.max_metadata_keys}"))
            return
        for key, value in metadata.items():
            if not key or len(key) > lim.max_metadata_key_chars:
                self.errors.append(
                    FieldError((*loc, _label(key)), f"key must be 1 to {lim.max_metadata_key_chars} characters")
                )
            if has_control_chars(key):
                self.errors.append(FieldError((*loc, _label(key)), "key must not contain control characters"))
            if has_lone_surrogate(key) or has_lone_surrogate(value):
                self.errors.append(FieldError((*loc, _label(key)), "must not contain unpaired UTF-16 surrogates"))
            if isinstance(value, str) and "\x00" in value:
                self.errors.append(FieldError((*loc, _label(key)), "value must not contain NUL characters"))
            elif isinstance(value, int | float) and (problem := _scalar_problem(value)):
                self.errors.append(FieldError((*loc, _label(key)), f"value {problem}"))
            if isinstance(value, str) and len(value) > lim.max_metadata_value_chars:
                self.errors.append(
                    FieldError(
                        (*loc, _label(key)),
                        f"value is {len(value)} characters long; the limit is {lim.max_metadata_value_chars}",
                    )
                )


def check_batch(batch: IngestBatch, limits: Limits, *, max_events: int | None = None) -> list[FieldError]:
    """Every bound of a native batch, each violation naming its field. ``max_events``: the bound on the
    number of events, when a door's own bound differs (``Limits.max_batch_events`` otherwise)."""
    c = _Checker(limits)
    max_events = limits.max_batch_events if max_events is None else max_events
    if len(batch.events) > max_events:
        c.errors.append(FieldError(("events",), f"has {len(batch.events)} events; the limit is {max_events}"))
        return c.errors
    for i, event in enumerate(batch.events):
        if isinstance(event, MessageEvent) and _plain_message(event, limits):
            continue  # the common case, checked in one pass without building field paths
        loc = ("events", i)
        c.path_id((*loc, "conversation_id"), getattr(event, "conversation_id", None))
        if isinstance(event, ConversationEvent):
            c.path_id((*loc, "id"), event.id)
        else:
            c.identifier((*loc, "id"), getattr(event, "id", None))  # a message's id is not in any URL
        c.path_id((*loc, "user_id"), getattr(event, "user_id", None))
        c.identifier((*loc, "tenant_id"), getattr(event, "tenant_id", None), limits.max_tenant_chars)
        if isinstance(event, ConversationEvent):
            c.metadata((*loc, "metadata"), event.metadata)
            c.text((*loc, "feedback"), event.feedback, limits.max_content_chars)
        elif isinstance(event, MessageEvent):
            c.text((*loc, "content"), event.content, limits.max_content_chars)
            c.identifier((*loc, "name"), event.name)
            c.text((*loc, "model"), event.model, limits.max_id_chars)
            c.text((*loc, "error"), event.error, limits.max_content_chars)
            c.metadata((*loc, "metadata"), event.metadata)
            c.json((*loc, "extra"), event.extra)
            c.text((*loc, "thought"), event.thought, limits.max_content_chars)
            c.text((*loc, "observation"), event.observation, limits.max_content_chars)
            c.json((*loc, "input"), event.input)
        elif isinstance(event, CustomEvent):
            c.identifier((*loc, "name"), event.name)
            c.metadata((*loc, "properties"), event.properties)
        else:
            c.text((*loc, "feedback"), getattr(event, "feedback", None), limits.max_content_chars)
    return c.errors


def _plain_message(event: MessageEvent, limits: Limits) -> bool:
    """True when a message is certainly within bounds: short plain ids, ASCII or NUL-free text of an
    allowed length, a short ASCII model name (most replies carry one), and no optional fields that need a
    closer look. Anything else takes the full check, which names the field at fault."""
    if (
        event.metadata or event.extra or event.name or event.error or event.user_id or event.tenant_id
        or event.thought is not None or event.observation is not None or event.input is not None
    ):  # fmt: skip
        return False
    content, cid, mid, model = event.content, event.conversation_id, event.id, event.model
    return (
        (model is None or (len(model) <= limits.max_id_chars and model.isascii() and "\x00" not in model))
        and len(content) <= limits.max_content_chars
        and "\x00" not in content
        and (content.isascii() or not _LONE_SURROGATE.search(content))
        and 0 < len(cid) <= limits.max_id_chars
        and cid not in DOT_SEGMENTS
        and cid.isascii()
        and _CONTROL_CHAR.search(cid) is None
        and (
            mid is None or (0 < len(mid) <= limits.max_id_chars and mid.isascii() and _CONTROL_CHAR.search(mid) is None)
        )
    )
