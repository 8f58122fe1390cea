"""Context's conversation as the native batch: the Context door's whole translation (server/pipeline.py
runs the rest), and the native field paths named back in Context's terms for its 422s.

A Context conversation becomes one ``ConversationEvent`` (its id, tenant, ``metadata.user_id`` as the
user, metadata, feedback) and a ``MessageEvent`` per message, in order; ``thought``, ``observation``
and ``input`` keep their names (the native message has them typed), so bounds and scrubbing treat them
as they treat the native fields and nothing is lost.
"""

from __future__ import annotations

from typing import Any

from convolens.config import Limits
from convolens.schemas.bounds import FieldError
from convolens.schemas.context import ContextConversation, ContextMessage
from convolens.schemas.ingest import ConversationEvent, IngestBatch, MessageEvent, construct_complete
from convolens.server.errors import ApiError
from convolens.server.offload import is_heavy
from convolens.server.pipeline import Loc, Store, Translation, apply
from convolens.store.ingest import new_id

# Native fields of the conversation event, by Context's name for them.
_CONVERSATION_FIELDS: dict[str, Loc] = {
    "id": ("conversation", "id"),
    "tenant_id": ("tenant_id",),
    "user_id": ("conversation", "metadata", "user_id"),
    "metadata": ("conversation", "metadata"),
    "feedback": ("conversation", "feedback"),
}
# A message's native fields that Context's message names otherwise, or that the server made or derived
# from a field checked in its own right (its id, its model from metadata): dropped.
_MESSAGE_FIELDS: dict[str, str | None] = {"content": "message", "id": None, "model": None, "tenant_id": None}


def locate(loc: Loc) -> Loc | None:
    """A native batch's field path as Context names it: ``events[0]`` is the conversation,
    ``events[i]`` its message ``i - 1``."""
    if len(loc) < 3:
        return None  # the number of events: Context's own count is checked in ``translate``
    _, index, field, *inside = loc
    if index == 0:
        return (*_CONVERSATION_FIELDS[str(field)], *inside) if field in _CONVERSATION_FIELDS else None
    if field == "conversation_id":
        return ("conversation", "id")
    name = _MESSAGE_FIELDS.get(str(field), str(field))
    return None if name is None else ("conversation", "messages", int(index) - 1, name, *inside)


def tenant(query_value: str | None, body_value: str | None) -> str | None:
    if query_value is not None and body_value is not None and query_value != body_value:
        raise ApiError(
            422,
            "tenant_id in the query and in the body disagree",
            [{"field": "tenant_id", "loc": ["tenant_id"], "msg": "query and body disagree"}],
        )
    return body_value if body_value is not None else query_value


def translate(
    conversation: ContextConversation,
    conversation_id: str,
    tenant_id: str | None,
    limits: Limits,
    *,
    min_messages: int = 1,
    store: Store = apply,
) -> Translation:
    """The native batch of ``conversation``, stored as ``conversation_id``; Context's own shape checked
    (at least ``min_messages``, at most ``max_messages_per_conversation``, ``role`` and ``message``
    where Context's SDK leaves them optional)."""
    messages = conversation.messages
    if len(messages) < min_messages:
        raise ApiError(
            422,
            f"conversation.messages must hold at least {min_messages} message(s)",
            [
                {
                    "field": "conversation.messages",
                    "loc": ["conversation", "messages"],
                    "msg": f"at least {min_messages} required",
                }
            ],
        )
    errors: list[FieldError] = []
    if len(messages) > limits.max_messages_per_conversation:
        errors.append(
            FieldError(
                ("conversation", "messages"),
                f"has {len(messages)} messages; the limit is {limits.max_messages_per_conversation}",
            )
        )
        messages = []  # nothing of them is looked at (as a native batch over its bound)
    for i, message in enumerate(messages):
        _required(errors, ("conversation", "messages", i), message)
    return Translation(
        batch=_batch(conversation, messages, conversation_id, tenant_id),
        locate=locate,
        errors=tuple(errors),
        max_events=limits.max_messages_per_conversation + 1,
        store=store,
    )


def _required(errors: list[FieldError], loc: Loc, message: ContextMessage) -> None:
    """The SDK makes ``role`` and ``message`` optional: a message or tool call needs both, a custom
    event (``type: "event"``) only a name or a message to show."""
    if message.type == "event":
        if not message.name and not message.message:
            errors.append(FieldError((*loc, "name"), "an event needs a name or a message"))
        return
    if message.role is None:
        errors.append(FieldError((*loc, "role"), f"is required unless type is event (type is {message.type})"))
    if message.message is None:
        errors.append(FieldError((*loc, "message"), f"is required unless type is event (type is {message.type})"))


def _batch(
    conversation: ContextConversation, messages: list[ContextMessage], conversation_id: str, tenant_id: str | None
) -> IngestBatch:
    metadata = conversation.metadata or {}
    user_id = metadata.get("user_id")
    conversation_model = metadata.get("model")
    events: list[Any] = [
        construct_complete(
            ConversationEvent,
            {
                "type": "conversation",
                "id": conversation_id,
                "tenant_id": tenant_id,
                "user_id": str(user_id)[:128] if user_id not in (None, "") else None,
                "metadata": conversation.metadata,
                "feedback": conversation.feedback,
                "timestamp": None,
            },
        )
    ]
    for m in messages:
        model = (m.metadata or {}).get("model", conversation_model) if m.role == "assistant" else None
        events.append(
            construct_complete(
                MessageEvent,
                {
                    "type": "message",
                    "conversation_id": conversation_id,
                    "id": new_id(),
                    "role": m.stored_role,
                    "content": m.stored_content,
                    "kind": m.type,
                    "name": m.name,
                    "timestamp": m.event_timestamp,
                    "metadata": m.metadata,
                    "rating": m.rating,
                    "model": str(model)[:128] if model is not None else None,
                    "input_tokens": None,
                    "output_tokens": None,
                    "latency_ms": None,
                    "error": None,
                    "extra": None,
                    "thought": m.thought,
                    "observation": m.observation,
                    "input": m.input,
                    "user_id": None,
                    "tenant_id": None,
                },
            )
        )
    return IngestBatch.model_construct(events=events, client=None)


def heavy(conversation: ContextConversation) -> bool:
    """Whether the conversation takes the heavy lane (server/offload.py), told from its body before any
    thread hop, as the native batch's texts would tell it."""
    texts = (t for m in conversation.messages for t in (m.message, m.thought, m.observation))
    return is_heavy(texts) or is_heavy((conversation.feedback,))
