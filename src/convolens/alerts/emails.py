"""What alert and digest e-mails say: a subject, a plain-text body and an HTML body, from templates in
``alerts/templates`` (the HTML autoescaped: rule names, topic names and filter values are user text)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape

from convolens.alerts import words
from convolens.alerts.digest import shown, text_line
from convolens.alerts.webhook import summary

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"], default_for_string=False, default=False),
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


EMPTY = "\u2013"  # an en dash: no value


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return EMPTY
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.{digits}g}"
    return f"{int(value):,}"


def _percent(value: float | None) -> str:
    return EMPTY if value is None else f"{100 * value:.0f}%"


def _change(value: float | None) -> str:
    return EMPTY if value is None else f"{value:+.0f}%"


_env.filters.update(number=_number, percent=_percent, change=_change, shown=shown, kpi_line=text_line)


def project_url(public_url: str, project: str, path: str = "") -> str:
    return f"{public_url.rstrip('/')}/p/{quote(project, safe='')}{path}"


def alert_email(
    project: str, rule_name: str, rule_pk: int, definition: dict, event: dict, public_url: str
) -> tuple[str, str, str]:
    """(subject, text, html) of an alert event (fired or resolved)."""
    link = project_url(public_url, project, f"/alerts/{rule_pk}")
    context = {
        "project": project,
        "rule_name": rule_name,
        "definition": definition,
        "event": event,
        "line": summary(rule_name, definition, event),
        "what": words.describe(definition),
        "value": words.value_text(definition["metric"], event["value"]),
        "link": link,
        "firing": event["event"] == "fired",
    }
    state = "Firing" if context["firing"] else "Resolved"
    subject = f"[convolens · {project}] {state}: {rule_name}"
    return subject, _env.get_template("alert.txt").render(context), _env.get_template("alert.html").render(context)


def digest_email(digest: dict, public_url: str) -> tuple[str, str, str]:
    """(subject, text, html) of a weekly digest (worker/digest.py ``build`` made ``digest``)."""
    context = {"d": digest, "url": lambda path="": project_url(public_url, digest["project"], path)}
    subject = f"[convolens · {digest['project']}] Your week: {digest['week']['label']}"
    return subject, _env.get_template("digest.txt").render(context), _env.get_template("digest.html").render(context)
