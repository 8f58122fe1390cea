"""Rendering the dashboard's pages: one Jinja2 environment (autoescaped: everything a user typed is shown
as text), the security headers every page carries, the page errors, and the date-range controls."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from convolens.schemas.timestamps import parse_day
from convolens.store.outcome_fields import from_mask
from convolens.timeutil import utcnow

HERE = Path(__file__).parent
# No inline script or style, no third party: charts read their data from JSON blocks, not from code.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

environment = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


EMPTY = "\u2013"  # an en dash: no value


def _number(value: Any, digits: int = 0) -> str:
    if value is None:
        return EMPTY
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{round(value):,}" if isinstance(value, int | float) else str(value)


def _percent(value: float | None) -> str:
    return EMPTY if value is None else f"{100 * value:.0f}%"


def _when(value: datetime | None) -> str:
    return EMPTY if value is None else value.strftime("%Y-%m-%d %H:%M")


def segment(value: Any) -> str:
    """A value (an id) as one URL path segment: every character but letters, digits and ``_.-~`` escaped,
    ``/`` too. Jinja's ``urlencode`` keeps ``/``, which split a base64 id into two segments (its link
    404ed); the routes take the rest of the path (``{id:path}``) since the server decodes ``%2F``."""
    return quote(str(value), safe="")


environment.filters["segment"] = segment
environment.filters["number"] = _number
environment.filters["percent"] = _percent
environment.filters["when"] = _when
environment.filters["signals"] = from_mask  # a conversation's stored signal bits, as names
environment.globals["urlencode"] = urlencode


class WebError(Exception):
    """A page that cannot be shown: 400 (a bad query parameter), 403, 404 (also for another project's
    pages), 422 (a form to correct), each with a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LoginRequired(Exception):
    """No signed-in session: the browser goes to the login page, and back afterwards."""


class PasswordChangeRequired(Exception):
    """The session's password was chosen by someone else: the browser goes to the change-password page."""


def page_count(total: int, per_page: int) -> int:
    return max(1, (total + per_page - 1) // per_page)


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = environment.get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


@dataclass(frozen=True)
class DateRange:
    """The window a page shows: whole UTC days from ``first`` to ``last``, in buckets of ``period``."""

    first: date
    last: date
    period: str

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, datetime.min.time())

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last, datetime.max.time())

    def query(self) -> dict[str, str]:
        return {"start": self.first.isoformat(), "end": self.last.isoformat(), "period": self.period}


def date_range(start: str | None, end: str | None, period: str | None, default_days: int = 30) -> DateRange:
    """From the page's query string; bad or missing values fall back to the last ``default_days`` days."""
    today = utcnow().date()

    def parse(name: str, value: str | None) -> date | None:
        try:
            return parse_day(value) if value else None
        except ValueError as exc:
            # A malformed query string, not a form to correct: 400, naming the parameter.
            raise WebError(400, f"{name}: {exc}") from None

    given_first, given_last = parse("start", start), parse("end", end)
    last = given_last or today
    # Within the accepted days, a default start 30 days back (or a bucket edge a day on) cannot overflow.
    first = given_first or last - timedelta(days=default_days - 1)
    if first > last:
        raise WebError(422, "the start date must not be after the end date")
    if (last - first).days > 3700:
        raise WebError(422, "the range may span at most about ten years")
    return DateRange(first, last, period if period in ("day", "week", "month") else "day")
