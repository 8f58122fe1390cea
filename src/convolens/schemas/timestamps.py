"""The one type for "a timestamp we accept from outside": ingested event times, the read APIs'
``start_time``/``end_time`` and the dashboard's date range.

Aware or naive (naive is taken to be UTC), it is converted to naive UTC, the form the store keeps, and
must fall in [1970-01-01, 2200-01-01). Python's datetime stops at years 1 and 9999, so a value near
either end overflows when it is moved to UTC (``0001-01-01T00:00:00+01:00``) or when a query later
adds a day to a bucket edge; inside this range every such step has centuries to spare. Nothing an LLM
product logs happened before 1970, and no one plans analytics past 2200.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from convolens.timeutil import to_naive_utc

EARLIEST = datetime(1970, 1, 1)
LATEST = datetime(2200, 1, 1)  # exclusive
FIRST_DAY, LAST_DAY = EARLIEST.date(), date(2199, 12, 31)
RANGE_TEXT = f"from {FIRST_DAY.isoformat()} to {LAST_DAY.isoformat()} (UTC)"


def accepted_timestamp(value: datetime) -> datetime:
    """``value`` as naive UTC; a ``ValueError`` (which pydantic reports under the field's name) when
    it falls outside the range, or so far outside that converting it overflows."""
    try:
        utc = to_naive_utc(value)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise ValueError(f"must be a time {RANGE_TEXT}")
    return utc


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 date or time from a query string, as naive UTC; ``ValueError`` saying what is wrong.

    A ``+`` in an offset often arrives decoded as a space (an unencoded query string): it is read as ``+``."""
    try:
        value = datetime.fromisoformat(text.strip().replace(" ", "+"))
    except ValueError:
        raise ValueError(f"must be an ISO 8601 date or time, got {text[:40]!r}") from None
    return accepted_timestamp(value)


def parse_day(text: str) -> date:
    """A ``YYYY-MM-DD`` day of the dashboard's date range; ``ValueError`` saying what is wrong."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        day = None
    if day is None or not FIRST_DAY <= day <= LAST_DAY:
        raise ValueError(f"dates must look like 2026-11-30, {RANGE_TEXT}")
    return day


def _validated(value: datetime) -> datetime:
    try:
        return accepted_timestamp(value)
    except ValueError as exc:  # reported as the message alone, not pydantic's "Value error, …"
        raise PydanticCustomError("timestamp_range", str(exc)) from None


# For pydantic fields: parsed by pydantic (ISO 8601 or a Unix time), then held to the range above.
Timestamp = Annotated[datetime, AfterValidator(_validated)]
