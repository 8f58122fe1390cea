"""The native ingestion batch (``POST /api/v1/ingest``): the one internal command every writer speaks.

The Context-compatible endpoints translate their bodies into this same ``IngestBatch`` so that the store
has a single write path.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from convolens.schemas.timestamps import Timestamp

Role = Literal["system", "user", "assistant", "tool"]
MessageKind = Literal["message", "tool", "event"]
Rating = Literal[-1, 0, 1]
MetadataValue = str | int | float | bool | None
Metadata = dict[str, MetadataValue]
# A count that fits a 64-bit column, and its sums over billions of rows: larger is a 422, not a 500.
Count = Annotated[int, Field(ge=0, le=1_000_000_000)]
# Finite only: JSON parsers read 1e400 as infinity, which no column or average should hold.
Latency = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConversationEvent(_Event):
    """Create or update a conversation (a Context *thread*). Later values win; absent ones are kept."""

    type: Literal["conversation"]
    id: str
    tenant_id: str | None = None
    user_id: str | None = None
    metadata: Metadata | None = None
    feedback: str | None = None
    timestamp: Timestamp | None = None


class MessageEvent(_Event):
    """One message. ``id`` makes a retry idempotent; without it the server makes one."""

    type: Literal["message"]
    conversation_id: str
    id: str | None = None
    role: Role
    content: str
    kind: MessageKind = "message"
    name: str | None = None
    timestamp: Timestamp | None = None
    metadata: Metadata | None = None
    rating: Rating | None = None
    model: str | None = None
    input_tokens: Count | None = None
    output_tokens: Count | None = None
    latency_ms: Latency | None = None
    error: str | None = None
    extra: dict[str, Any] | None = None
    # What an agent's step carries beside its text (Context's messages have them): stored in ``extra``
    # under these names, but typed here so that they are bounded and scrubbed as text and tool input.
    thought: str | None = None
    observation: str | None = None
    input: Any = None
    # Convenience for SDKs that send messages before (or instead of) a conversation event.
    user_id: str | None = None
    tenant_id: str | None = None


def stored_extra(event: MessageEvent) -> dict[str, Any] | None:
    """The ``extra`` a message is stored with: its own, and its ``thought``, ``input`` and
    ``observation`` under those names (they win over the same keys in ``extra``)."""
    thought, step_input, observation = event.thought, event.input, event.observation
    if thought is None and step_input is None and observation is None:
        return event.extra
    steps = (("thought", thought), ("input", step_input), ("observation", observation))
    return {**(event.extra or {}), **{k: v for k, v in steps if v is not None}}


class RatingEvent(_Event):
    """Thumbs up/down on one message (``message_id``) or, without it, on the conversation's last reply."""

    type: Literal["rating"]
    conversation_id: str
    message_id: str | None = None
    rating: Rating


class FeedbackEvent(_Event):
    type: Literal["feedback"]
    conversation_id: str
    feedback: str


class CustomEvent(_Event):
    """A product event inside a conversation (``Checkout``, ``Escalated``…), shown inline in transcripts."""

    type: Literal["event"]
    conversation_id: str
    id: str | None = None
    name: str
    properties: Metadata | None = None
    timestamp: Timestamp | None = None
    user_id: str | None = None


IngestEvent = Annotated[
    ConversationEvent | MessageEvent | RatingEvent | FeedbackEvent | CustomEvent,
    Field(discriminator="type"),
]


class ClientStats(BaseModel):
    """What an SDK reports about itself (events it had to drop, retries)."""

    model_config = ConfigDict(extra="allow")
    sdk: str | None = None
    dropped: Count = 0
    retries: Count = 0


class IngestBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[IngestEvent]
    client: ClientStats | None = None


class ItemResult(BaseModel):
    index: int
    status: Literal["created", "duplicate", "updated", "not_found"]
    id: str | None = None
    detail: str | None = None


class IngestResponse(BaseModel):
    accepted: int
    results: list[ItemResult]


Model = TypeVar("Model", bound=BaseModel)
_set_attribute = object.__setattr__


def construct_complete(model: type[Model], values: dict[str, Any]) -> Model:
    """``model.model_construct(**values)`` for trusted values that name every field and nothing else.

    pydantic's ``model_construct`` walks the model's fields and their defaults on every call, ~15 µs
    for a ``MessageEvent``; Context's translation builds one event per message (server/api/
    context_batch.py), which made it a tenth of a request's CPU. This sets the same four attributes
    directly (a test compares the two)."""
    if values.keys() != model.__pydantic_fields__.keys():
        raise TypeError(f"{model.__name__} needs exactly {sorted(model.__pydantic_fields__)}, got {sorted(values)}")
    instance = model.__new__(model)
    _set_attribute(instance, "__dict__", values)
    _set_attribute(instance, "__pydantic_fields_set__", set(values))
    _set_attribute(instance, "__pydantic_extra__", None)
    _set_attribute(instance, "__pydantic_private__", None)
    return instance
