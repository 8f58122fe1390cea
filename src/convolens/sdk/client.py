"""``convolens.Client``: log conversations from an app without ever slowing it down or breaking it.

Every ``log_*`` call validates its arguments and enqueues in O(1) on the caller's thread; a background
thread sends (see ``sender.py``). No call raises into app code: bad arguments are logged and counted
in ``Client.stats`` (``invalid``).
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

from convolens.sdk import events as ev
from convolens.sdk.sender import Deferred, Sender
from convolens.sdk.spool import Spool, default_spool_dir

log = logging.getLogger("convolens.sdk")

DEFAULT_URL = "http://127.0.0.1:8000"
T = TypeVar("T")


def _never_raises(method: Callable[..., T]) -> Callable[..., T | None]:
    @functools.wraps(method)
    def wrapper(self: Client, *args: Any, **kwargs: Any) -> T | None:
        try:
            return method(self, *args, **kwargs)
        except ev.InvalidEvent as exc:
            self._invalid(f"{method.__name__}: {exc}")
        except Exception:
            log.exception("convolens: %s failed; the event was dropped", method.__name__)
            self._invalid(None)
        return None

    return wrapper


class Client:
    """Send conversations to a convolens server.

    >>> client = Client("cl_…", base_url="https://analytics.example.com")
    >>> cid = client.log_conversation([{"role": "user", "content": "Hi"},
    ...                                {"role": "assistant", "content": "Hello!"}], user_id="u1")
    >>> client.rate(cid, 1)
    """

    def __init__(
        self,
        token: str | None = None,
        base_url: str | None = None,
        *,
        enabled: bool = True,
        max_queue_size: int = 100_000,
        batch_size: int = 1_000,
        flush_interval: float = 0.5,
        timeout: float = 10.0,
        max_retries: int = 3,
        spool: bool = True,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 100 * 1024 * 1024,
        compress: bool | None = None,
        atexit_timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.token = token or os.environ.get("CONVOLENS_TOKEN") or os.environ.get("CONTEXT_TOKEN") or ""
        self.base_url = (base_url or os.environ.get("CONVOLENS_URL") or DEFAULT_URL).rstrip("/")
        self.enabled = enabled and bool(self.token)
        if enabled and not self.token:
            log.warning("convolens: no token (pass token= or set CONVOLENS_TOKEN); logging is disabled")
        self.atexit_timeout = atexit_timeout
        self._counters: dict[str, int] = {}
        spool_store = None
        if spool and self.enabled:
            try:
                directory = Path(spool_dir) if spool_dir else default_spool_dir(self.base_url, self.token)
                spool_store = Spool(directory, spool_max_bytes)
            except OSError:
                log.warning("convolens: spool directory unusable; continuing without a disk spool")
        self._sender = Sender(
            self.base_url,
            self.token,
            max_queue_size=max_queue_size,
            batch_size=batch_size,
            flush_interval=flush_interval,
            timeout=timeout,
            max_retries=max_retries,
            spool=spool_store,
            compress=compress,
            transport=transport,
        )
        _live_clients.add(self)

    # -- logging ----------------------------------------------------------------------------------
    @_never_raises
    def log_conversation(
        self,
        messages: Iterable[Mapping[str, Any]],
        *,
        conversation_id: str | None = None,
        user_id: str | None = None,
        tenant_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        feedback: str | None = None,
    ) -> str:
        """Log messages (``{"role", "content", …}``) as one conversation; returns its id.

        With ``conversation_id`` of an existing conversation, the messages are appended to it.
        """
        cid = ev.clean_id(conversation_id, "conversation_id") if conversation_id else ev.new_id()
        batch = [ev.conversation_event(cid, user_id=user_id, tenant_id=tenant_id, metadata=metadata, feedback=feedback)]
        at = ev.now()
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping):
                raise ev.InvalidEvent(f"messages[{i}] must be a mapping with role and content")
            fields = dict(message)
            role = fields.pop("role", None)
            content = fields.pop("content", fields.pop("message", None))
            fields.setdefault("timestamp", at)
            batch.append(ev.message_event(cid, role, content, self._counters, **fields))
        self._put(batch)
        return cid

    @_never_raises
    def log_message(self, conversation_id: str, role: str, content: str, **fields: Any) -> str:
        """Append one message to a conversation (created if new); returns the message id.

        Fields: ``id``, ``kind``, ``name``, ``timestamp`` (epoch seconds), ``metadata``, ``rating``, ``model``,
        ``input_tokens``, ``output_tokens``, ``latency_ms``, ``error``, ``extra``, ``user_id``, ``tenant_id``.
        """
        event = ev.message_event(conversation_id, role, content, self._counters, **fields)
        self._put([event])
        return event["id"]

    append = log_message

    @_never_raises
    def conversation(
        self,
        conversation_id: str,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        feedback: str | None = None,
    ) -> str:
        """Create or update a conversation's properties (metadata is merged)."""
        self._put(
            [
                ev.conversation_event(
                    conversation_id, user_id=user_id, tenant_id=tenant_id, metadata=metadata, feedback=feedback
                )
            ]
        )
        return conversation_id

    @_never_raises
    def rate(self, conversation_id: str, rating: int, *, message_id: str | None = None) -> None:
        """Thumbs up (1), neutral (0) or down (-1) on a message, or on the conversation's last reply."""
        if rating not in (-1, 0, 1):
            raise ev.InvalidEvent(f"rating must be -1, 0 or 1, got {rating!r}")
        event: dict[str, Any] = {
            "type": "rating",
            "conversation_id": ev.clean_id(conversation_id, "conversation_id"),
            "rating": rating,
        }
        if message_id is not None:
            event["message_id"] = ev.clean_id(message_id, "message_id")
        self._put([event])

    @_never_raises
    def feedback(self, conversation_id: str, text: str) -> None:
        """Free-text feedback on a conversation."""
        self._put(
            [
                {
                    "type": "feedback",
                    "conversation_id": ev.clean_id(conversation_id, "conversation_id"),
                    "feedback": ev.clean_text(text, "feedback", self._counters),
                }
            ]
        )

    @_never_raises
    def event(
        self,
        conversation_id: str,
        name: str,
        properties: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        user_id: str | None = None,
        timestamp: float | None = None,
    ) -> str:
        """A product event inside a conversation (``"Checkout"``, ``"Escalated to human"``)."""
        event: dict[str, Any] = {
            "type": "event",
            "conversation_id": ev.clean_id(conversation_id, "conversation_id"),
            "id": ev.clean_id(id, "id") if id else ev.new_id(),
            "name": ev.clean_id(str(name), "name"),
            "timestamp": timestamp if timestamp is not None else ev.now(),
        }
        if properties:
            event["properties"] = ev.clean_metadata(properties, "properties")
        if user_id is not None:
            event["user_id"] = ev.clean_id(user_id, "user_id")
        self._put([event])
        return event["id"]

    def put_events(self, events: list[dict[str, Any]]) -> None:
        """Enqueue ready-made native events (for integrations)."""
        if self.enabled and events:
            self._sender.put(events)

    def put_deferred(self, size: int, build: Callable[[], list[dict[str, Any]]]) -> None:
        """Enqueue up to ``size`` events that ``build()`` makes later, on the sender thread."""
        if self.enabled:
            self._sender.put(Deferred(size, build))

    def _put(self, events: list[dict[str, Any]]) -> None:
        if self.enabled:
            self._sender.put(events)

    def _invalid(self, message: str | None) -> None:
        self._sender.stats.invalid += 1
        self._sender.stats.dropped += 1
        self._sender.stats.unreported["dropped"] += 1
        if message:
            log.warning("convolens: %s; the event was dropped", message)

    # -- lifecycle ----------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything logged so far is delivered (or spooled/dropped); False on timeout."""
        if not self.enabled:
            return True
        try:
            return self._sender.flush(timeout)
        except Exception:
            log.exception("convolens: flush failed")
            return False

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Flush within ``timeout`` seconds and stop; what is left is spooled for the next run."""
        _live_clients.discard(self)
        if not self.enabled:
            return True
        try:
            return self._sender.shutdown(timeout)
        except Exception:
            log.exception("convolens: shutdown failed")
            return False

    close = shutdown

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    @property
    def stats(self) -> dict[str, int]:
        """Counters: enqueued, sent, dropped, invalid, rejected, retries, spooled, replayed, truncated, queued."""
        stats = self._sender.stats.as_dict()
        stats["truncated"] = self._counters.get("truncated", 0)
        stats["queued"] = self._sender.queued
        return stats


_live_clients: weakref.WeakSet[Client] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for client in list(_live_clients):
        client.shutdown(client.atexit_timeout)
