"""The weekly digest of one project: last week's figures against the week before, the topics that grew or
shrank most, where users were least happy, and new topics, each with a link into the dashboard. Built
from the same reads as the pages (store/metrics.py ``window_totals``, store/topic_figures.py), as plain
JSON: it is stored with the week it was sent for, and rendered as e-mail (alerts/emails.py) or posted to
the project's digest webhook."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from convolens.alerts.measure import measure
from convolens.enrich.prices import price_table
from convolens.store import topic_figures, topics
from convolens.store.metrics import Grouping, window_totals

WEEK = timedelta(days=7)
TOP = 3  # topics listed in each section
MIN_LABELLED = 5  # a topic's negative share is shown from this many labelled messages: 1 of 2 is not "50%"

# (key, label, how to show it, whether a rise is good: None when neither)
KPIS = (
    ("conversations", "Conversations", "count", None),
    ("users", "Active users", "count", None),
    ("messages", "Messages", "count", None),
    ("avg_sentiment", "Average user sentiment", "signed", True),
    ("negative_share", "Negative user messages", "share", False),
    ("thumbs_down_share", "Thumbs down", "share", False),
    ("resolved_share", "Resolved conversations", "share", True),
    ("cost_usd", "Estimated cost", "usd", None),
)


def week_of(at: datetime) -> datetime:
    """The Monday 00:00 (UTC) starting the week ``at`` falls in."""
    day = at.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    return day - timedelta(days=day.weekday())


def _totals(conn: Connection, project_pk: int, start: datetime) -> dict[str, Any]:
    end = start + WEEK - timedelta(microseconds=1)
    found = window_totals(conn, project_pk, start=start, end=end, grouping=Grouping("none"), prices=price_table())
    figures = dict(found.get("all") or {})
    rated = figures.get("ratings_up", 0) + figures.get("ratings_down", 0)
    figures["thumbs_down_share"] = figures.get("ratings_down", 0) / rated if rated else None
    negative = measure(conn, project_pk, {"metric": "negative_share", "filter": {}}, start, start + WEEK)
    figures["negative_share"] = negative.value
    return figures


def _change(now: float | None, before: float | None) -> float | None:
    if now is None or before is None or before == 0:
        return None
    return (now - before) / abs(before) * 100.0


def build(conn: Connection, project_pk: int, project: str, week_start: datetime) -> dict[str, Any]:
    """The digest of the week from ``week_start`` (a Monday), as JSON-ready values; links are paths under
    the project (``/overview?...``), made absolute when rendered."""
    this, before = _totals(conn, project_pk, week_start), _totals(conn, project_pk, week_start - WEEK)
    first, last = week_start.date(), (week_start + WEEK - timedelta(days=1)).date()
    span = f"start={first.isoformat()}&end={last.isoformat()}"
    kpis = []
    for key, label, shown, rise_is_good in KPIS:
        now, earlier = this.get(key), before.get(key)
        change = _change(now, earlier)
        # A share or a sentiment changes by points (35% from 0% is "+35 pts", not a % of zero), a count
        # or a cost by a percentage.
        delta = None if now is None or earlier is None else now - earlier
        if shown == "share":
            said = None if delta is None else f"{100 * delta:+.1f} pts"
        elif shown == "signed":
            said = None if delta is None else f"{delta:+.2f}"
        else:
            said = None if change is None else f"{change:+.0f}%"
        moved = delta is not None and (abs(change) >= 1 if change is not None else abs(delta) > 1e-9)
        kpis.append({
            "key": key, "label": label, "shown": shown, "this": now, "previous": earlier, "change": change,
            "change_text": said,
            # good / bad / neutral, for the colour of the change
            "tone": "neutral" if not moved or rise_is_good is None or delta is None
            else ("good" if (delta > 0) == rise_is_good else "bad"),
        })  # fmt: skip
    rows = topics.list_topics(conn, project_pk, ("active", "suggested"))
    figures = topic_figures.figures(conn, project_pk, rows, first=first, last=last)

    def topic(f: topic_figures.TopicFigures, **extra: Any) -> dict[str, Any]:
        return {"pk": f.pk, "name": f.name, "suggested": f.status != "active", "messages": f.messages,
                "previous": f.previous_messages, "link": f"/topics/{f.pk}?{span}", **extra}  # fmt: skip

    moved = [f for f in figures if f.messages != f.previous_messages and f.previous_messages > 0]
    grew = sorted(
        (f for f in moved if f.messages > f.previous_messages), key=lambda f: f.previous_messages - f.messages
    )
    shrank = sorted(
        (f for f in moved if f.messages < f.previous_messages), key=lambda f: f.messages - f.previous_messages
    )
    unhappy = sorted(
        (f for f in figures if f.labelled >= MIN_LABELLED and (f.negative_share or 0) > 0),
        key=lambda f: (-(f.negative_share or 0), -f.messages),
    )
    new = [f for f in figures if f.messages > 0 and f.trend == "new"]  # none the week before
    new.sort(key=lambda f: -f.messages)
    return {
        "project": project,
        "week": {"start": first.isoformat(), "end": last.isoformat(),
                 "label": f"{first:%d %b} \u2013 {last:%d %b %Y}"},
        "kpis": kpis,
        "grew": [topic(f, change=_change(f.messages, f.previous_messages)) for f in grew[:TOP]],
        "shrank": [topic(f, change=_change(f.messages, f.previous_messages)) for f in shrank[:TOP]],
        "unhappy": [topic(f, negative_share=f.negative_share, unresolved_share=f.unresolved_share)
                    for f in unhappy[:TOP]],
        "new_topics": [topic(f, emerging=f.emerging) for f in new[:TOP]],
        "links": {"overview": f"/overview?{span}", "topics": f"/topics?{span}", "alerts": "/alerts"},
    }  # fmt: skip


def text_line(kpi: dict[str, Any]) -> str:
    """A KPI as people read it: "Negative user messages: 12% (was 8%, +50%)"."""
    return f"{kpi['label']}: {shown(kpi['this'], kpi['shown'])} (was {shown(kpi['previous'], kpi['shown'])}" + (
        f", {kpi['change_text']})" if kpi["change_text"] else ")"
    )


def shown(value: float | None, how: str) -> str:
    if value is None:
        return "\u2013"
    if how == "share":
        return f"{100 * value:.1f}%"
    if how == "signed":
        return f"{value:+.2f}"
    if how == "usd":
        return f"${value:,.2f}"
    return f"{round(value):,}"
