"""The webhook channel: the body an event is sent as, its signature, and one attempt to send it.

Every request carries

- ``X-Convolens-Timestamp``: the Unix time of the attempt (seconds);
- ``X-Convolens-Signature``: ``sha256=`` and the hex HMAC-SHA256, keyed with the rule's secret (shown
  once, when the rule is created), of the timestamp, a ``.`` and the raw body bytes;
- ``X-Convolens-Delivery``: the delivery's id, the same on each retry (a receiver can drop repeats).

A receiver verifies by recomputing the HMAC over ``timestamp + "." + body`` exactly as received,
comparing in constant time, and refusing a timestamp more than a few minutes old (a replayed request).

Formats: ``json`` (the event's fields), ``slack`` (``{"text": ...}``, what a Slack incoming webhook,
and Mattermost's or Rocket.Chat's, accept) and ``teams`` (a message with one Adaptive Card, what a
Microsoft Teams "incoming webhook" workflow accepts; Office 365 connectors' MessageCard is retired).
The URL went through the outbound guard when the rule was saved, and the request goes through the
guarded transport again (DNS may have changed since).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta
from typing import Any

import httpx

from convolens.outbound import OutboundPolicy, RefusedUrl, guarded_client, validate_url
from convolens.timeutil import iso

SIGNATURE_HEADER = "X-Convolens-Signature"
TIMESTAMP_HEADER = "X-Convolens-Timestamp"
DELIVERY_HEADER = "X-Convolens-Delivery"
MAX_ATTEMPTS = 6
FIRST_RETRY = timedelta(seconds=30)


def retry_after(attempts: int) -> timedelta | None:
    """The wait before the next attempt after ``attempts`` failed ones (30 s, 2 min, 8 min, 32 min,
    about 2 h), or None when they are used up."""
    return FIRST_RETRY * 4 ** (attempts - 1) if attempts < MAX_ATTEMPTS else None


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """What a receiver does (and the tests do): recompute and compare in constant time."""
    if not timestamp.isdigit():
        return False
    return hmac.compare_digest(signature(secret, int(timestamp), body), header)


def summary(rule_name: str, definition: dict, event: dict[str, Any]) -> str:
    """One line a person reads: which rule, what happened, the value and the window."""
    value = event["value"]
    shown = "no data" if value is None else f"{value:.4g}"
    what = "FIRING" if event["event"] == "fired" else "resolved"
    condition = definition["condition"]
    line = (
        f"[{what}] {rule_name}: {definition['metric']} = {shown} "
        f"({condition['kind']} {condition['op']} {condition['threshold']:g}) "
        f"for the {definition['window']} from {iso(event['window_start'])}"
    )
    named = topic_names(event)
    return f"{line}: {', '.join(named)}" if named else line


def topic_names(event: dict[str, Any]) -> list[str]:
    """The topics an emerging-topics event was about (kept on the event)."""
    return [t["name"] for t in ((event.get("detail") or {}).get("topics") or [])]


def chat_body(text: str, channel_format: str, link: str | None = None) -> bytes | None:
    """The body of a chat-format webhook (``slack``, ``teams``); None for ``json``."""
    if channel_format == "slack":
        return json.dumps({"text": text + (f" <{link}|Open>" if link else "")}).encode()
    if channel_format == "teams":
        card: dict[str, Any] = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [{"type": "TextBlock", "text": text, "wrap": True}],
        }
        if link:
            card["actions"] = [{"type": "Action.OpenUrl", "title": "Open in convolens", "url": link}]
        attachment = {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        return json.dumps({"type": "message", "attachments": [attachment]}).encode()
    return None


def body(rule_name: str, rule_id: int, definition: dict, event: dict[str, Any], link: str | None = None) -> bytes:
    text = summary(rule_name, definition, event)
    channel = definition.get("channel") or {}
    chat = chat_body(text, channel.get("format", "json"), link)
    if chat is not None:
        return chat
    payload = {
        "type": f"alert.{event['event']}",
        "rule": {"id": str(rule_id), "name": rule_name, "metric": definition["metric"],
                 "filter": definition.get("filter"), "condition": definition["condition"],
                 "window": definition["window"]},
        "window": {"start": iso(event["window_start"]), "end": iso(event["window_end"])},
        "value": event["value"],
        "volume": event["volume"],
        "topics": (event.get("detail") or {}).get("topics"),
        "text": text,
        "url": link,
    }  # fmt: skip
    return json.dumps(payload, separators=(",", ":")).encode()


def send(
    url: str,
    secret: str,
    delivery_id: int,
    payload: bytes,
    now: datetime,
    policy: OutboundPolicy,
    timeout: float = 10.0,
) -> tuple[int | None, str | None]:
    """One attempt: (HTTP status or None, None when delivered or else what went wrong)."""
    timestamp = int(now.timestamp()) if now.tzinfo else int((now - datetime(1970, 1, 1)).total_seconds())
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, payload),
        DELIVERY_HEADER: str(delivery_id),
    }
    try:
        checked = validate_url(url)
        with guarded_client(checked, policy, timeout=timeout) as client:
            response = client.post(checked.url, content=payload, headers=headers)
    except RefusedUrl as exc:
        return None, f"refused: {exc}"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, refusal(response.status_code, response.reason_phrase, response.text)


# How much of a refusing receiver's body the settings page shows: enough for its own error message.
REFUSAL_BODY_CHARS = 200


def refusal(status: int, reason: str, body: str) -> str:
    """What went wrong, as the settings page shows it: the status with its reason phrase, then what the
    receiver said, quoted and on one line ("HTTP 500 Internal Server Error; the receiver said: "ok""), so
    that its words never read as ours ("HTTP 500: ok" did)."""
    said = " ".join(body[: REFUSAL_BODY_CHARS * 4].split())[:REFUSAL_BODY_CHARS]
    head = f"HTTP {status} {reason}".rstrip()
    return f'{head}; the receiver said: "{said}"' if said else f"{head}; the receiver sent no body"
