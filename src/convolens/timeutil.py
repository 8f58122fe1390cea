"""UTC helpers: the store keeps naive UTC datetimes; the API speaks ISO 8601 with a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def to_naive_utc(value: datetime) -> datetime:
    """A client's timestamp as naive UTC; a timestamp without an offset is taken to be UTC already."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return to_naive_utc(value).isoformat(timespec="microseconds") + "Z"
