"""``/p/{project}/overview``: the product's vital signs for a date range, each chart with its numbers."""

from __future__ import annotations

from datetime import date, timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from convolens.server.web.render import DateRange, date_range, render, segment
from convolens.server.web.session import access, redirect
from convolens.store import end_users, metrics, topic_figures, topics
from convolens.store.conversation_reads import bucket_starts

router = APIRouter(include_in_schema=False)
TOP_TOPICS = 8
UNHAPPY_TOPICS = 5
# The outcomes charted, in the order of the stack, with the colours the page's legend and table use.
CHARTED_OUTCOMES = (("resolved", "#16a34a"), ("unresolved", "#dc2626"), ("abandoned", "#f59e0b"))


def bucket_days(labels: list[str], window: DateRange) -> dict[str, tuple[date, date]]:
    """Each bucket's first and last day inside the window (a week or month is cut at the window's edges)."""
    out = {}
    for i, label in enumerate(labels):
        first = max(date.fromisoformat(label), window.first)
        following = date.fromisoformat(labels[i + 1]) if i + 1 < len(labels) else window.last + timedelta(days=1)
        out[label] = (first, min(following - timedelta(days=1), window.last))
    return out


def outcome_link(base: str, first: date, last: date, outcome: str) -> str:
    """The conversation list of one outcome among the conversations that started in [first, last]: the
    conversations an outcome count on this page is made of."""
    query = {"start": first.isoformat(), "end": last.isoformat(), "outcome": outcome, "started": "1"}
    return f"{base}/conversations?{urlencode(query)}"


def _trend(values: list[int]) -> str:
    """up / down / flat: the later half of the range against the earlier half (±10%)."""
    half = len(values) // 2
    if half == 0:
        return "flat"
    earlier, later = sum(values[:half]), sum(values[-half:])
    if later > earlier * 1.1:
        return "up"
    if later < earlier * 0.9:
        return "down"
    return "flat"


@router.get("/p/{project}")
@router.get("/p/{project}/")
def project_home(request: Request, project: str) -> Response:
    """A project's own address opens its overview (once the member is checked: no hint of other projects)."""
    access(request, project)
    return redirect(f"/p/{segment(project)}/overview")


@router.get("/p/{project}/overview")
def overview(
    request: Request, project: str, start: str | None = None, end: str | None = None, period: str | None = None
) -> Response:
    session, membership = access(request, project)
    window = date_range(start, end, period)
    labels = bucket_starts(window.start, window.end, window.period)  # type: ignore[arg-type]
    prices = request.app.state.prices
    query = {"start": window.start, "end": window.end, "prices": prices}
    with request.app.state.db.reader() as conn:
        series = metrics.metrics(
            conn,
            membership.project_pk,
            period=window.period,
            grouping=metrics.Grouping("none"),
            **query,  # type: ignore[arg-type]
        ).get("all", {})
        totals = metrics.window_totals(conn, membership.project_pk, grouping=metrics.Grouping("none"), **query)
        languages = metrics.window_totals(conn, membership.project_pk, grouping=metrics.Grouping("language"), **query)
        by_topic = metrics.metrics(
            conn,
            membership.project_pk,
            period=window.period,
            grouping=metrics.Grouping("topic"),
            **query,  # type: ignore[arg-type]
        )
        # Suggestions too: users unhappy about something no topic covers yet is the first thing to see.
        matched = topics.list_topics(conn, membership.project_pk, ("active", "suggested"))
        unhappy = topic_figures.unhappiest(
            topic_figures.figures(conn, membership.project_pk, matched, first=window.first, last=window.last),
            UNHAPPY_TOPICS,
        )
        new = end_users.new_users(conn, membership.project_pk, window.start, window.end, window.period)  # type: ignore[arg-type]
    base = f"/p/{segment(membership.project)}"
    spans = bucket_days(labels, window)
    rows = [
        {
            "bucket": label,
            **series.get(label, {}),
            "new_users": new.get(label, 0),
            "empty": label not in series,
            "outcome_links": {o: outcome_link(base, *spans[label], o) for o, _ in CHARTED_OUTCOMES},
        }
        for label in labels
    ]
    top_topics = []
    for name, buckets in list(by_topic.items())[:TOP_TOPICS]:
        volume = [buckets.get(label, {}).get("messages", 0) for label in labels]
        top_topics.append({"name": name, "messages": sum(volume), "trend": _trend(volume), "values": volume})
    total = totals.get("all", {})
    charts = {
        "activity": {
            "labels": labels,
            "kind": "line",
            "series": [
                {"label": "Conversations", "values": [r.get("conversations", 0) for r in rows]},
                {"label": "Active users", "values": [r.get("users", 0) for r in rows]},
                {"label": "New users", "values": [r["new_users"] for r in rows]},
            ],
        },
        "messages": {
            "labels": labels,
            "kind": "bars",
            "series": [{"label": "Messages", "values": [r.get("messages", 0) for r in rows]}],
        },
        "sentiment": {
            "labels": labels,
            "kind": "line",
            "series": [{"label": "Average user sentiment", "values": [r.get("avg_sentiment") for r in rows]}],
        },
        "ratings": {
            "labels": labels,
            "kind": "line",
            "series": [
                {"label": "Thumbs up", "color": "#16a34a", "values": [r.get("ratings_up", 0) for r in rows]},
                {"label": "Thumbs down", "color": "#dc2626", "values": [r.get("ratings_down", 0) for r in rows]},
            ],
        },
        "outcomes": {
            "labels": labels,
            "kind": "bars",
            "stacked": True,
            "series": [
                {
                    "label": outcome.capitalize(),
                    "color": colour,
                    "values": [r.get("outcomes", {}).get(outcome, 0) for r in rows],
                }
                for outcome, colour in CHARTED_OUTCOMES
            ],
        },
        "topics": {
            "labels": labels,
            "kind": "line",
            "series": [{"label": t["name"], "values": t["values"]} for t in top_topics],
        },
    }
    return render(
        request,
        "overview.html",
        title="Overview",
        active="overview",
        session=session,
        membership=membership,
        window=window,
        rows=rows,
        total=total,
        new_users=sum(new.values()),
        languages=languages,
        topics=top_topics,
        unhappy=unhappy,
        trend_rule=topic_figures.TREND_RULE,
        emerging_rule=topic_figures.EMERGING_RULE,
        charts=charts,
        outcome_links={o: outcome_link(base, window.first, window.last, o) for o, _ in CHARTED_OUTCOMES},
        charted_outcomes=CHARTED_OUTCOMES,
    )
