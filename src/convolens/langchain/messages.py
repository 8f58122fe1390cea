"""Turning LangChain's inputs and outputs into transcript messages: ``{"role", "content", …}`` dicts.

Only duck typing on LangChain objects (``.type``, ``.content``), so this module imports nothing from
LangChain and stays cheap on the callback's hot path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

_ROLE_BY_TYPE = {
    "human": "user",
    "HumanMessageChunk": "user",
    "ai": "assistant",
    "AIMessageChunk": "assistant",
    "system": "system",
    "SystemMessageChunk": "system",
    "tool": "tool",
    "ToolMessageChunk": "tool",
    "function": "tool",
    "developer": "system",
}
_CHAT_ROLES = {"user", "assistant", "system", "tool"}
# Where chains usually keep the user's words and the answer, in order of preference.
INPUT_KEYS = ("input", "question", "query", "text", "message", "prompt", "human_input", "user_input", "content")
OUTPUT_KEYS = ("output", "text", "answer", "result", "content", "response", "generation")


def content_text(content: Any) -> str:
    """Text of a message's content; multimodal parts other than text become a short ``[kind]`` marker."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping):
                kind = part.get("type", "part")
                if kind == "text":
                    parts.append(str(part.get("text", "")))
                else:
                    parts.append(f"[{kind}]")
            else:
                parts.append(f"[{type(part).__name__}]")
        return "\n".join(p for p in parts if p)
    return "" if content is None else str(content)


def from_message(message: Any) -> dict[str, Any]:
    """A LangChain ``BaseMessage`` (or a ``(role, text)`` tuple, or a dict) as a transcript message."""
    if isinstance(message, tuple) and len(message) == 2:
        role = {"human": "user", "ai": "assistant"}.get(message[0], message[0])
        return {"role": role if role in _CHAT_ROLES else "user", "content": content_text(message[1])}
    if isinstance(message, Mapping):
        role = message.get("role", "user")
        role = {"human": "user", "ai": "assistant"}.get(role, role)
        return {"role": role if role in _CHAT_ROLES else "user", "content": content_text(message.get("content", ""))}
    kind = getattr(message, "type", None)
    role = _ROLE_BY_TYPE.get(kind)
    if role is None:
        role = getattr(message, "role", "user")  # ChatMessage carries its own role
        role = role if role in _CHAT_ROLES else "user"
    content = getattr(message, "content", message)
    out: dict[str, Any] = {"role": role, "content": content_text(content)}
    name = getattr(message, "name", None)  # every BaseMessage has the field
    if name:
        out["name"] = name
    extra: dict[str, Any] = {}
    # Only ask for the attributes the message's type has: a miss on a pydantic model raises internally.
    if role == "assistant":
        tool_calls = getattr(message, "tool_calls", None)
        if tool_calls:
            extra["tool_calls"] = [
                {"name": call.get("name"), "args": call.get("args"), "id": call.get("id")} for call in tool_calls
            ]
    elif role == "tool":
        tool_call_id = getattr(message, "tool_call_id", None)
        if tool_call_id:
            extra["tool_call_id"] = tool_call_id
    if not isinstance(content, str):
        extra["multimodal"] = True
    if extra:
        out["extra"] = extra
    return out


def _is_message(value: Any) -> bool:
    return hasattr(value, "type") and hasattr(value, "content")


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return str(value)


def from_input(value: Any) -> list[dict[str, Any]]:
    """A chain's starting input as the user's side of the transcript."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if _is_message(value):
        return [from_message(value)]
    to_messages = getattr(value, "to_messages", None)
    if callable(to_messages):  # a PromptValue
        return [from_message(m) for m in to_messages()]
    if isinstance(value, Mapping):
        if len(value) == 1:
            return from_input(next(iter(value.values())))
        messages = value.get("messages")
        if isinstance(messages, Sequence) and not isinstance(messages, str):
            return [from_message(m) for m in messages]
        for key in INPUT_KEYS:
            if key in value:
                found = from_input(value[key])
                others = {k: v for k, v in value.items() if k != key and isinstance(v, str | int | float | bool)}
                if others and found:
                    found[-1].setdefault("extra", {})["inputs"] = others
                return found
        return [{"role": "user", "content": _json(value)}]
    if isinstance(value, Sequence) and value and all(_is_message(m) or isinstance(m, tuple) for m in value):
        return [from_message(m) for m in value]
    return [{"role": "user", "content": _json(value)}]


def from_output(value: Any) -> dict[str, Any]:
    """A chain's final output as the assistant's reply."""
    if isinstance(value, str):
        return {"role": "assistant", "content": value}
    if _is_message(value):
        message = from_message(value)
        message["role"] = "assistant" if message["role"] == "user" else message["role"]
        return message
    if isinstance(value, Mapping):
        if len(value) == 1:
            return from_output(next(iter(value.values())))
        messages = value.get("messages")
        if isinstance(messages, Sequence) and messages and _is_message(messages[-1]):
            return from_output(messages[-1])
        for key in OUTPUT_KEYS:
            if key in value:
                return from_output(value[key])
        return {"role": "assistant", "content": _json(value)}
    if isinstance(value, Sequence) and value and _is_message(value[-1]):
        return from_output(value[-1])
    return {"role": "assistant", "content": _json(value)}
