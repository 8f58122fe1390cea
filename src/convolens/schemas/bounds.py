"""Configurable size bounds, checked after the shape is valid. Each violation names its field."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from convolens.config import Limits
from convolens.schemas.context import ContextConversation
from convolens.schemas.ingest import ConversationEvent, CustomEvent, IngestBatch, MessageEvent


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

    def json_text(self, loc: tuple, value: object, max_chars: int) -> None:
        """A string, or free-form JSON (tool inputs, ``extra``) whose strings, keys included, hold at most
        ``max_chars`` characters in all: scrubbing and storing one message costs bounded time."""
        total, stack = 0, [value]
        while stack and total <= max_chars:
            item = stack.pop()
            if isinstance(item, str):
                total += len(item)
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
        if total > max_chars:
            self.errors.append(
                FieldError(loc, f"holds more than {max_chars} characters of text; the limit is {max_chars}")
            )

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
            if isinstance(value, str) and len(value) > lim.max_metadata_value_chars:
                self.errors.append(
                    FieldError(
                        (*loc, _label(key)),
                        f"value is {len(value)} characters long; the limit is {lim.max_metadata_value_chars}",
                    )
                )


def check_batch(batch: IngestBatch, limits: Limits) -> list[FieldError]:
    c = _Checker(limits)
    if len(batch.events) > limits.max_batch_events:
        c.errors.append(
            FieldError(("events",), f"has {len(batch.events)} events; the limit is {limits.max_batch_events}")
        )
        return c.errors
    for i, event in enumerate(batch.events):
        if isinstance(event, MessageEvent) and _plain_message(event, limits):
            continue  # the common case, checked in one pass without building field paths
        loc = ("events", i)
        c.identifier((*loc, "conversation_id"), getattr(event, "conversation_id", None))
        c.identifier((*loc, "id"), getattr(event, "id", None))
        c.identifier((*loc, "user_id"), getattr(event, "user_id", None))
        c.identifier((*loc, "tenant_id"), getattr(event, "tenant_id", None), limits.max_tenant_chars)
        if isinstance(event, ConversationEvent):
            c.metadata((*loc, "metadata"), event.metadata)
            c.text((*loc, "feedback"), event.feedback, limits.max_content_chars)
        elif isinstance(event, MessageEvent):
            c.text((*loc, "content"), event.content, limits.max_content_chars)
            c.text((*loc, "name"), event.name, limits.max_id_chars)
            c.text((*loc, "model"), event.model, limits.max_id_chars)
            c.text((*loc, "error"), event.error, limits.max_content_chars)
            c.metadata((*loc, "metadata"), event.metadata)
            if event.extra and has_lone_surrogate(event.extra):
                c.errors.append(FieldError((*loc, "extra"), "must not contain unpaired UTF-16 surrogates"))
            if event.extra:
                c.json_text((*loc, "extra"), event.extra, limits.max_content_chars)
        elif isinstance(event, CustomEvent):
            c.text((*loc, "name"), event.name, limits.max_id_chars)
            c.metadata((*loc, "properties"), event.properties)
        else:
            c.text((*loc, "feedback"), getattr(event, "feedback", None), limits.max_content_chars)
    return c.errors


def _plain_message(event: MessageEvent, limits: Limits) -> bool:
    """True when a message is certainly within bounds: short plain ids, ASCII or NUL-free text of an
    allowed length, and no optional fields that need a closer look. Anything else takes the full check,
    which names the field at fault."""
    if event.metadata or event.extra or event.name or event.model or event.error or event.user_id or event.tenant_id:
        return False
    content, cid, mid = event.content, event.conversation_id, event.id
    return (
        len(content) <= limits.max_content_chars
        and "\x00" not in content
        and (content.isascii() or not _LONE_SURROGATE.search(content))
        and 0 < len(cid) <= limits.max_id_chars
        and cid.isascii()
        and _CONTROL_CHAR.search(cid) is None
        and (
            mid is None or (0 < len(mid) <= limits.max_id_chars and mid.isascii() and _CONTROL_CHAR.search(mid) is None)
        )
    )


def check_context_conversation(
    conversation: ContextConversation,
    limits: Limits,
    *,
    thread_id: str | None = None,
    tenant_id: str | None = None,
) -> list[FieldError]:
    c = _Checker(limits)
    loc = ("conversation",)
    c.identifier((*loc, "id"), thread_id)
    c.identifier(("tenant_id",), tenant_id, limits.max_tenant_chars)
    c.metadata((*loc, "metadata"), conversation.metadata)
    c.text((*loc, "feedback"), conversation.feedback, limits.max_content_chars)
    if len(conversation.messages) > limits.max_messages_per_conversation:
        c.errors.append(
            FieldError(
                (*loc, "messages"),
                f"has {len(conversation.messages)} messages; the limit is {limits.max_messages_per_conversation}",
            )
        )
        return c.errors
    for i, message in enumerate(conversation.messages):
        mloc = (*loc, "messages", i)
        c.text((*mloc, "message"), message.message, limits.max_content_chars)
        c.text((*mloc, "name"), message.name, limits.max_id_chars)
        c.metadata((*mloc, "metadata"), message.metadata)
        for extra in ("thought", "input", "observation"):
            if getattr(message, extra) is not None:
                c.json_text((*mloc, extra), getattr(message, extra), limits.max_content_chars)
            if has_lone_surrogate(getattr(message, extra)):
                c.errors.append(FieldError((*mloc, extra), "must not contain unpaired UTF-16 surrogates"))
    return c.errors
