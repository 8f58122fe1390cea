"""Context.ai's wire format (see shared/context-api.md), as read from the ``context-python`` SDK."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from convolens.schemas.ingest import Metadata, Rating
from convolens.schemas.timestamps import Timestamp


class _Lenient(BaseModel):
    # The SDK and older clients may send fields we do not know: ignore them rather than refuse the data.
    model_config = ConfigDict(extra="ignore")


class ContextMessage(_Lenient):
    # The SDK makes both optional: a custom event (``type: "event"``) often has neither. A message or
    # tool call without them is refused by the bounds (schemas/bounds.py), naming the missing field.
    role: Literal["system", "user", "assistant", "tool"] | None = None
    message: str | None = None
    type: Literal["message", "tool", "event"] = "message"
    event_timestamp: Timestamp | None = None
    metadata: Metadata | None = None
    rating: Rating | None = None
    name: str | None = None
    thought: str | None = None
    input: Any = None
    observation: str | None = None

    @property
    def stored_role(self) -> str:
        """The role it is stored with: an event without one is the system's, as a native custom event."""
        return self.role or "system"

    @property
    def stored_content(self) -> str:
        """The text it is stored with: an event without a message shows its name, as a native custom event."""
        if self.type == "event" and not self.message:
            return self.name or ""
        return self.message or ""


class ContextConversation(_Lenient):
    messages: list[ContextMessage] = Field(default_factory=list)
    metadata: Metadata | None = None
    feedback: str | None = None


class ContextThread(ContextConversation):
    id: str | None = None


class ConversationBody(_Lenient):
    conversation: ContextConversation
    tenant_id: str | None = None


class ThreadBody(_Lenient):
    conversation: ContextThread
    tenant_id: str | None = None


class ThreadRating(_Lenient):
    id: str | None = None
    rating: Rating | None = None


class ThreadRatingsBody(_Lenient):
    messages: list[ThreadRating]
