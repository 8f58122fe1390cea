"""One span's LLM call: its messages, model, token usage, latency and error, from whichever attribute
convention the instrumentation used. In order (the first that gives messages wins):

1. the GenAI semantic conventions: ``gen_ai.input.messages``, ``gen_ai.output.messages`` and
   ``gen_ai.system_instructions`` (a JSON string on a span, structured values on an event), as span
   attributes or in a ``gen_ai.client.inference.operation.details`` event; also the older per-message
   events (``gen_ai.user.message``, ``gen_ai.choice``…) that reach /v1/logs;
2. the older indexed ``gen_ai.prompt.{i}.*`` / ``gen_ai.completion.{i}.*``;
3. OpenLLMetry's ``traceloop.entity.input`` / ``traceloop.entity.output`` (workflow and task spans);
4. OpenInference's ``llm.input_messages.{i}.message.*`` / ``llm.output_messages.{i}.message.*``, and the
   Vercel AI SDK's ``ai.prompt.messages`` / ``ai.response.text`` (its own names, on its model-call spans);
5. ``input.value`` / ``output.value``.

1, 2 and 4 are model calls (``strong``); 3 and 5 wrap a whole step of an app, so a trace's turn is
taken from them only when it has no model call with messages (server/otlp turn choice: turns.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from convolens.otlp.wire import Attributes, Span, SpanEvent

OPERATION_DETAILS = "gen_ai.client.inference.operation.details"
_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "tool": "tool",
    "function": "tool",
    "ipython": "tool",
}
# The per-message events of the GenAI conventions before 1.37 (content in the event's body).
_LEGACY_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
_INDEX = re.compile(r"(\d{1,6})\.(.+)")
# OpenInference kinds whose input.value/output.value are not a conversation (a tool's arguments, a
# retriever's query and documents…).
_NOT_CONVERSATIONS = frozenset({"TOOL", "RETRIEVER", "EMBEDDING", "RERANKER", "GUARDRAIL", "EVALUATOR", "PROMPT"})
_INPUT_TOKENS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.usage.prompt_tokens",
    "llm.token_count.prompt",
)
_OUTPUT_TOKENS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.usage.completion_tokens",
    "llm.token_count.completion",
)
_TEXT_KEYS = ("content", "text", "input", "query", "question", "prompt", "message", "output", "answer", "response")


@dataclass(slots=True)
class Message:
    role: str
    content: str
    name: str | None = None
    extra: dict[str, Any] | None = None

    def key(self) -> tuple[str, str]:
        return (self.role, self.content)


@dataclass(slots=True)
class LlmCall:
    """What one span says about a model call. ``strong``: the span is a model call (not a workflow
    step whose input and output happen to be text)."""

    inputs: list[Message]
    outputs: list[Message]
    strong: bool
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None
    truncated: bool = False  # more messages than the limit: the turn is refused, not cut
    extras: dict[str, Any] = field(default_factory=dict)


def _json_value(value: Any) -> Any:
    """A JSON string's value (attributes on spans carry structures as JSON text); other values as they are."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


def _role(value: Any, default: str) -> str:
    return _ROLES.get(value.lower(), default) if isinstance(value, str) else default


class _Limit:
    def __init__(self, max_messages: int) -> None:
        self.max_messages = max_messages
        self.truncated = False

    def cut(self, items: list) -> list:
        if len(items) > self.max_messages:
            self.truncated = True
            return items[: self.max_messages]
        return items


# -- 1. the GenAI semantic conventions --------------------------------------------------------------


def _parts_message(raw: Any, default_role: str) -> Message | None:
    """One message of ``gen_ai.input.messages``/``gen_ai.output.messages``: {role, parts[, name]}; an
    older {role, content} is taken too."""
    if not isinstance(raw, dict):
        return None
    role = _role(raw.get("role"), default_role)
    texts: list[str] = []
    extra: dict[str, Any] = {}
    parts = raw.get("parts")
    if parts is None and "content" in raw:
        parts = raw["content"] if isinstance(raw["content"], list) else [{"type": "text", "content": raw["content"]}]
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            texts.append(_as_text(part.get("content", part.get("text"))))
        elif kind in ("tool_call", "tool-call"):  # the second: the Vercel AI SDK's
            call = {
                "id": part.get("id", part.get("toolCallId")),
                "name": part.get("name", part.get("toolName")),
                "arguments": part.get("arguments", part.get("input", part.get("args"))),
            }
            extra.setdefault("tool_calls", []).append({k: v for k, v in call.items() if v is not None})
        elif kind in ("tool_call_response", "tool-result"):
            texts.append(_as_text(part.get("response", part.get("result", part.get("output")))))
            call_id = part.get("id", part.get("toolCallId"))
            if call_id is not None:
                extra["tool_call_id"] = _as_text(call_id)
            role = "tool"
        elif kind in ("reasoning", "thinking"):
            continue  # the model's scratch pad is not what the user read
        elif isinstance(kind, str):
            texts.append(f"[{kind}]")  # image, audio, file, blob, uri: named, not stored
    name = raw.get("name")
    return Message(
        role,
        "\n".join(t for t in texts if t),
        name if isinstance(name, str) and name else None,
        extra or None,
    )


def _semconv_messages(value: Any, default_role: str, limit: _Limit) -> list[Message]:
    value = _json_value(value)
    if not isinstance(value, list):
        return []
    out = [_parts_message(m, default_role) for m in limit.cut(value)]
    return [m for m in out if m is not None]


def _system_instructions(value: Any) -> list[Message]:
    value = _json_value(value)
    if isinstance(value, str):
        return [Message("system", value)] if value else []
    if not isinstance(value, list):
        return []
    texts = [_as_text(p.get("content")) for p in value if isinstance(p, dict) and p.get("type", "text") == "text"]
    text = "\n".join(t for t in texts if t)
    return [Message("system", text)] if text else []


def _from_semconv(attributes: Attributes, limit: _Limit) -> tuple[list[Message], list[Message]] | None:
    inputs = _semconv_messages(attributes.get("gen_ai.input.messages"), "user", limit)
    outputs = _semconv_messages(attributes.get("gen_ai.output.messages"), "assistant", limit)
    if not inputs and not outputs:
        return None
    system = _system_instructions(attributes.get("gen_ai.system_instructions"))
    if system and not (inputs and inputs[0].role == "system" and inputs[0].content == system[0].content):
        inputs = system + inputs
    return inputs, outputs[:1]  # n > 1 choices: the first is the one an app shows


def _from_legacy_events(events: list[SpanEvent], limit: _Limit) -> tuple[list[Message], list[Message]] | None:
    """``gen_ai.user.message`` … and ``gen_ai.choice`` events: the content in the body (logs) or in
    attributes (span events of some instrumentations)."""
    inputs: list[Message] = []
    outputs: list[Message] = []
    for event in events:
        role = _LEGACY_EVENTS.get(event.name)
        if role is None and event.name != "gen_ai.choice":
            continue
        body = event.body if isinstance(event.body, dict) else {}
        if role is not None:
            content = body.get("content", event.attributes.get("content"))
            message = Message(role, _as_text(_json_value(content)) if not isinstance(content, str) else content)
            calls = body.get("tool_calls")
            if isinstance(calls, list) and calls:
                message.extra = {"tool_calls": calls[:100]}
            if role == "tool" and body.get("id") is not None:
                message.extra = {"tool_call_id": _as_text(body.get("id"))}
            inputs.append(message)
        else:
            index = body.get("index", 0)
            reply = body.get("message") if isinstance(body.get("message"), dict) else {}
            if index in (0, None):
                content = reply.get("content")
                message = Message("assistant", content if isinstance(content, str) else _as_text(content))
                calls = reply.get("tool_calls")
                if isinstance(calls, list) and calls:
                    message.extra = {"tool_calls": calls[:100]}
                outputs.append(message)
    if not inputs and not outputs:
        return None
    return limit.cut(inputs), outputs[:1]


# -- 2. indexed gen_ai.prompt.{i}.* / gen_ai.completion.{i}.* ----------------------------------------


def _indexed(attributes: Attributes, prefix: str, limit: _Limit) -> list[dict[str, Any]]:
    """{i: {rest of the key: value}} of keys ``prefix{i}.rest``, as a list in index order."""
    found: dict[int, dict[str, Any]] = {}
    for rest, value in attributes.with_prefix(prefix):
        matched = _INDEX.fullmatch(rest)
        if matched is None:
            continue
        index = int(matched.group(1))
        if index >= limit.max_messages:
            limit.truncated = True
            continue
        found.setdefault(index, {})[matched.group(2)] = value
    return [found[i] for i in sorted(found)]


def _indexed_tool_calls(fields: dict[str, Any], prefix: str, name_key: str, args_key: str) -> list[dict[str, Any]]:
    calls: dict[int, dict[str, Any]] = {}
    for key, value in fields.items():
        if not key.startswith(prefix):
            continue
        matched = _INDEX.fullmatch(key[len(prefix) :])
        if matched is None or int(matched.group(1)) >= 100:
            continue
        sub = matched.group(2)
        call = calls.setdefault(int(matched.group(1)), {})
        if sub == name_key:
            call["name"] = value
        elif sub == args_key:
            call["arguments"] = value
        elif sub.endswith("id"):
            call["id"] = value
    return [calls[i] for i in sorted(calls)]


def _from_indexed(attributes: Attributes, limit: _Limit) -> tuple[list[Message], list[Message]] | None:
    if not (attributes.has_prefix("gen_ai.prompt.") or attributes.has_prefix("gen_ai.completion.")):
        return None

    def message(fields: dict[str, Any], default_role: str) -> Message:
        out = Message(_role(fields.get("role"), default_role), _as_text(fields.get("content")))
        calls = _indexed_tool_calls(fields, "tool_calls.", "name", "arguments")
        extra: dict[str, Any] = {}
        if calls:
            extra["tool_calls"] = calls
        if fields.get("tool_call_id") is not None:
            extra["tool_call_id"] = _as_text(fields["tool_call_id"])
        out.extra = extra or None
        return out

    inputs = [message(f, "user") for f in _indexed(attributes, "gen_ai.prompt.", limit)]
    outputs = [message(f, "assistant") for f in _indexed(attributes, "gen_ai.completion.", limit)]
    if not inputs and not outputs:
        return None
    return inputs, outputs[:1]


# -- 4. OpenInference llm.input_messages.{i}.message.* ----------------------------------------------


def _openinference_message(fields: dict[str, Any], default_role: str) -> Message:
    content = fields.get("message.content")
    if content is None:  # multimodal: message.contents.{j}.message_content.text
        texts = []
        for key, value in sorted(fields.items()):
            if key.startswith("message.contents.") and key.endswith(".message_content.text"):
                texts.append(_as_text(value))
        content = "\n".join(texts)
    out = Message(_role(fields.get("message.role"), default_role), _as_text(content))
    name = fields.get("message.name")
    out.name = name if isinstance(name, str) and name else None
    extra: dict[str, Any] = {}
    calls = _indexed_tool_calls(
        fields, "message.tool_calls.", "tool_call.function.name", "tool_call.function.arguments"
    )
    if calls:
        extra["tool_calls"] = calls
    if fields.get("message.tool_call_id") is not None:
        extra["tool_call_id"] = _as_text(fields["message.tool_call_id"])
    out.extra = extra or None
    return out


def _from_openinference(attributes: Attributes, limit: _Limit) -> tuple[list[Message], list[Message]] | None:
    inputs = [_openinference_message(f, "user") for f in _indexed(attributes, "llm.input_messages.", limit)]
    outputs = [_openinference_message(f, "assistant") for f in _indexed(attributes, "llm.output_messages.", limit)]
    if not inputs and not outputs:
        return None
    return inputs, outputs[:1]


# -- the Vercel AI SDK: ai.prompt.messages / ai.response.text on its doGenerate and doStream spans ------


def _from_vercel(attributes: Attributes, limit: _Limit) -> tuple[list[Message], list[Message]] | None:
    raw = attributes.get("ai.prompt.messages")
    if raw is None:
        return None
    inputs = _semconv_messages(raw, "user", limit)  # {role, content: text or parts}, as above
    text = attributes.get("ai.response.text")
    calls = _json_value(attributes.get("ai.response.toolCalls"))
    outputs = []
    if isinstance(text, str) or isinstance(calls, list):
        reply = Message("assistant", text if isinstance(text, str) else "")
        if isinstance(calls, list) and calls:
            parts = [{"type": "tool-call", **c} for c in calls[:100] if isinstance(c, dict)]
            reply.extra = (_parts_message({"role": "assistant", "parts": parts}, "assistant") or reply).extra
        outputs.append(reply)
    if not inputs and not outputs:
        return None
    return inputs, outputs


# -- 3 and 5: a step's input and output as text --------------------------------------------------------


def _value_messages(value: Any, default_role: str, depth: int = 0) -> list[Message]:
    """A workflow step's input or output (a string, or JSON of the function's arguments or result) as
    messages: a list of {role, content} is a conversation; else the text under a usual key."""
    value = _json_value(value)
    if depth > 4 or value is None:
        return []
    if isinstance(value, str):
        return [Message(default_role, value)] if value else []
    if isinstance(value, list):
        if value and all(isinstance(m, dict) and "role" in m for m in value[:2000]):
            return [m for m in (_parts_message(m, default_role) for m in value[:2000]) if m is not None]
        if len(value) == 1:
            return _value_messages(value[0], default_role, depth + 1)
        return [Message(default_role, _as_text(value))]
    if isinstance(value, dict):
        if isinstance(value.get("messages"), list):
            return _value_messages(value["messages"], default_role, depth + 1)
        for key in ("inputs", "outputs", "kwargs", "args", *_TEXT_KEYS):
            if value.get(key) not in (None, "", [], {}):
                found = _value_messages(value[key], default_role, depth + 1)
                if found:
                    return found
        if len(value) == 1:
            return _value_messages(next(iter(value.values())), default_role, depth + 1)
        return [Message(default_role, _as_text(value))]
    return [Message(default_role, _as_text(value))]


def _from_values(attributes: Attributes, input_key: str, output_key: str) -> tuple[list[Message], list[Message]] | None:
    raw_in, raw_out = attributes.get(input_key), attributes.get(output_key)
    if raw_in is None and raw_out is None:
        return None
    inputs = _value_messages(raw_in, "user")
    outputs = [m for m in _value_messages(raw_out, "assistant") if m.role != "user"]
    if not inputs and not outputs:
        return None
    return inputs, outputs[-1:]


# -- the span -------------------------------------------------------------------------------------------


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and 0 <= value <= 1_000_000_000 else None


def _error(span: Span) -> str | None:
    if span.error is None:
        return None
    for event in span.events:
        if event.name == "exception":
            message = event.attributes.first("exception.message", "exception.type")
            if isinstance(message, str):
                return message
    error_type = span.attributes.get("error.type")
    return span.error or (error_type if isinstance(error_type, str) else None) or "error"


def llm_call(span: Span, max_messages: int) -> LlmCall | None:
    """The span's model call, or None if it carries no messages (a non-LLM span: ignored)."""
    limit = _Limit(max_messages)
    attributes = span.attributes
    strong = True
    found = _from_semconv(attributes, limit)
    if found is None:
        for event in span.events:
            if event.name == OPERATION_DETAILS:
                found = _from_semconv(event.attributes, limit)
                if found is not None:
                    break
    if found is None:
        found = _from_legacy_events(span.events, limit)
    if found is None:
        found = _from_indexed(attributes, limit)
    if found is None:
        found = _from_openinference(attributes, limit)
    if found is None:
        found = _from_vercel(attributes, limit)
    if found is None:
        strong = False
        if attributes.get("traceloop.span.kind") != "tool":
            found = _from_values(attributes, "traceloop.entity.input", "traceloop.entity.output")
    kind = attributes.get("openinference.span.kind")
    if found is None and not (isinstance(kind, str) and kind in _NOT_CONVERSATIONS):
        found = _from_values(attributes, "input.value", "output.value")
    if found is None:
        return None
    inputs, outputs = found
    details = next((e.attributes for e in span.events if e.name == OPERATION_DETAILS), None)
    sources = (attributes, details) if details is not None else (attributes,)

    def first(*keys: str) -> Any:
        for source in sources:
            value = source.first(*keys)
            if value is not None:
                return value
        return None

    model = first(
        "gen_ai.response.model",
        "gen_ai.request.model",
        "llm.response.model",
        "llm.request.model",
        "llm.model_name",
        "ai.response.model",
        "ai.model.id",
    )
    return LlmCall(
        inputs=inputs,
        outputs=outputs,
        strong=strong,
        model=model if isinstance(model, str) and model else None,
        input_tokens=_int(first(*_INPUT_TOKENS)),
        output_tokens=_int(first(*_OUTPUT_TOKENS)),
        error=_error(span),
        truncated=limit.truncated,
    )
