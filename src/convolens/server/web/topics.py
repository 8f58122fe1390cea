"""``/p/{project}/topics``: define keyword, semantic and LLM topics, review suggestions, and see one topic's
volume, sentiment and ratings over time with sample conversations. Changing topics needs the member role."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import Connection

from convolens.evaluations.coverage import coverage_of
from convolens.schemas.topics import TopicDefinition
from convolens.server.web import map_layout
from convolens.server.web.render import WebError, date_range, render
from convolens.server.web.session import access, check_csrf, redirect
from convolens.store import categories, explore, metrics, topic_figures, topics
from convolens.store.accounts import Membership
from convolens.store.conversation_reads import bucket_starts
from convolens.store.explore import ConversationFilter
from convolens.timeutil import utcnow

router = APIRouter(include_in_schema=False)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]


def topic_form(
    name: str = Form(""),
    kind: str = Form("keyword"),
    keywords: str = Form(""),
    description: str = Form(""),
    examples: str = Form(""),
    prompt: str = Form(""),
    category_id: str = Form(""),
) -> TopicDefinition:
    """The topic form's fields as a validated definition; a 422 page naming the first bad field."""
    try:
        return TopicDefinition.model_validate(
            {
                "name": name,
                "kind": kind,
                "keywords": _lines(keywords) if kind == "keyword" else [],
                "description": description.strip() or None if kind != "keyword" else None,
                "examples": [e.strip() for e in examples.splitlines() if e.strip()] if kind == "semantic" else [],
                "prompt": prompt.strip() or None if kind == "llm" else None,
                "category_id": category_id.strip() or None,
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "definition"
        raise WebError(422, f"{field}: {first['msg']}") from None


def _within_limits(
    request: Request, conn: Connection, project_pk: int, kind: str, definition: dict, except_pk: int | None = None
) -> None:
    over = topics.over_limit(conn, project_pk, kind, definition, request.app.state.settings.limits, except_pk)
    if over is not None:
        raise WebError(over.status, f"{over.field}: {over.message}")


def _category_pk(conn: Connection, project_pk: int, category_id: str | None) -> int | None:
    if category_id is None:
        return None
    if categories.get(conn, project_pk, int(category_id)) is None:
        raise WebError(422, "category_id: no such category in this project")
    return int(category_id)


def _topic_url(project: str, suffix: str = "") -> str:
    from urllib.parse import quote

    return f"/p/{quote(project, safe='')}/topics{suffix}"


@router.get("/p/{project}/topics")
def topic_list(request: Request, project: str, start: str | None = None, end: str | None = None) -> Response:
    session, membership = access(request, project)
    window = date_range(start, end, None, default_days=30)
    with request.app.state.db.reader() as conn:
        defined = topics.list_topics(conn, membership.project_pk)
        suggested = topics.list_topics(conn, membership.project_pk, ("suggested",))
        suggested.sort(key=lambda r: -int(r.definition.get("size", 0)))
        rows = topic_figures.figures(
            conn, membership.project_pk, defined + suggested, first=window.first, last=window.last
        )
        found = categories.list_categories(conn, membership.project_pk)
        volumes = categories.volumes(conn, membership.project_pk, window.start, window.end)
        covered = coverage_of(conn, membership.project_pk, defined + suggested, {r.pk: r.messages for r in rows})
    figures = {r.pk: r for r in rows}
    groups = category_groups(found, defined + suggested, figures, volumes)
    return render(
        request,
        "topics.html",
        title="Topics",
        active="topics",
        session=session,
        membership=membership,
        defined=defined,
        suggested=suggested,
        figures=figures,
        bubbles=topic_map(rows, _topic_url(project), {t.pk: g.colour for g in groups for t in g.topics}),
        groups=groups,
        category_choices=found,
        trend_rule=topic_figures.TREND_RULE,
        emerging_rule=topic_figures.EMERGING_RULE,
        window=window,
        can_edit=membership.can("member"),
        coverage=covered,  # templates/topic_coverage.html
    )


# One ring colour a category on the map (at most 12 categories, and "Uncategorised" in grey).
# Tableau's 10 categorical colours (told apart at a glance, also by most colour-blind readers), then two.
CATEGORY_COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
                    "#b07aa1", "#ff9da7", "#9c755f", "#1f3a93", "#17becf", "#000000")  # fmt: skip
UNCATEGORISED_COLOUR = "#9ca3af"


@dataclass
class CategoryGroup:
    """A category on the topics page: its volume, its topics (largest first) and its colour on the map."""

    pk: int | None  # None: the topics in no category
    name: str
    messages: int
    topics: list[topics.TopicRow]
    colour: str

    @property
    def description(self) -> str:
        """What is in it, in words: "2 suggested topics", "3 topics: 1 defined, 2 suggested"."""
        suggested = sum(1 for t in self.topics if t.status != "active")
        defined = len(self.topics) - suggested
        plural = "" if len(self.topics) == 1 else "s"
        if not suggested or not defined:
            return f"{len(self.topics)} {'suggested' if suggested else 'defined'} topic{plural}"
        return f"{len(self.topics)} topics: {defined} defined, {suggested} suggested"


def category_groups(
    found: list[categories.CategoryRow],
    rows: list[topics.TopicRow],
    figures: dict[int, topic_figures.TopicFigures],
    volumes: dict[int, int],
) -> list[CategoryGroup]:
    """The categories with topics, largest first, and "Uncategorised" last; none at all when no topic has
    a category (a project before its first clustering run shows its topics as before)."""
    if not any(r.category_pk is not None for r in rows):
        return []
    members: dict[int | None, list[topics.TopicRow]] = {}
    named = {c.pk: c.name for c in found}
    for r in rows:
        members.setdefault(r.category_pk if r.category_pk in named else None, []).append(r)
    groups = [
        CategoryGroup(pk, named[pk], volumes.get(pk, 0), listed, "") for pk, listed in members.items() if pk is not None
    ]
    groups.sort(key=lambda g: (-g.messages, g.name.casefold()))
    if None in members:
        groups.append(CategoryGroup(None, categories.UNCATEGORISED, volumes.get(0, 0), members[None], ""))
    for i, g in enumerate(groups):
        g.colour = UNCATEGORISED_COLOUR if g.pk is None else CATEGORY_COLOURS[i % len(CATEGORY_COLOURS)]
        g.topics.sort(key=lambda t: (-figures[t.pk].messages, t.name.casefold()))
    return groups


MAP_WIDTH, MAP_HEIGHT = 860, 280  # the SVG's viewBox in topics.html
MIN_RADIUS, MAX_RADIUS = 7, 40
LABEL_HALF_WIDTH = 100  # about half a 28-character label at 12 px: labels at the edges stay inside


def sentiment_colour(value: float | None) -> str:
    """Red (-1) through grey (0) to green (+1); grey when nothing is scored."""
    grey, red, green = (156, 163, 175), (220, 38, 38), (22, 163, 74)
    end = grey if value is None else red if value < 0 else green
    share = 0.0 if value is None else min(1.0, abs(value) / 0.6)  # ±0.6 is already clearly unhappy / happy
    return "#" + "".join(f"{round(g + (e - g) * share):02x}" for g, e in zip(grey, end, strict=True))


def topic_map(rows: list[topic_figures.TopicFigures], base_url: str, rings: dict[int, str] | None = None) -> list[dict]:
    """Bubbles for the topic map: area for volume, colour for sentiment, ring for the category (``rings``:
    a colour by topic pk), position for what the topic is about (a 2-D projection of the topics'
    centres, so neighbours are alike). Topics with no messages in the range are left out."""
    shown = [r for r in rows if r.messages > 0]
    positions = topic_figures.map_positions(shown)
    largest = max((r.messages for r in shown), default=1)
    bubbles = []
    for r in shown:
        if r.pk not in positions:
            continue
        x, y = positions[r.pk]
        radius = MIN_RADIUS + (MAX_RADIUS - MIN_RADIUS) * (r.messages / largest) ** 0.5
        bubbles.append({
            "pk": r.pk, "name": r.name if len(r.name) <= 28 else r.name[:27] + "…", "full_name": r.name,
            # Room for the largest bubble above and its label below, and for labels at the sides.
            "x": round(LABEL_HALF_WIDTH + x * (MAP_WIDTH - 2 * LABEL_HALF_WIDTH), 1),
            "y": round(MAX_RADIUS + 4 + y * (MAP_HEIGHT - 2 * MAX_RADIUS - 24), 1),
            "r": round(radius, 1), "colour": sentiment_colour(r.avg_sentiment), "messages": r.messages,
            "sentiment": r.avg_sentiment, "suggested": r.status != "active", "href": f"{base_url}/{r.pk}",
            "ring": (rings or {}).get(r.pk),
        })  # fmt: skip
    # Alike topics project onto one spot: part the bubbles, then give each label a free place, the
    # largest topics first (map_layout); a label with no room stays in the bubble's tooltip.
    bubbles.sort(key=lambda b: -b["messages"])
    moved = map_layout.spread([(b["x"], b["y"], b["r"]) for b in bubbles], MAP_WIDTH, MAP_HEIGHT)
    for b, (x, y) in zip(bubbles, moved, strict=True):
        b["x"], b["y"] = x, y
    places = map_layout.place_labels(
        [(b["x"], b["y"], b["r"]) for b in bubbles], [b["name"] for b in bubbles], MAP_WIDTH, MAP_HEIGHT
    )
    for b, place in zip(bubbles, places, strict=True):
        b["label"] = place
    bubbles.sort(key=lambda b: -b["r"])  # small bubbles drawn last, on top, so they stay clickable
    return bubbles


@router.post("/p/{project}/topics")
def create_topic(
    request: Request,
    project: str,
    csrf_token: str = Form(""),
    body: TopicDefinition = Depends(topic_form),  # noqa: B008
) -> Response:
    session, membership = access(request, project, "member")
    check_csrf(session, csrf_token)
    with request.app.state.db.writer() as conn:
        if topics.name_taken(conn, membership.project_pk, body.name):
            raise WebError(409, f"a topic named {body.name!r} exists already")
        _within_limits(request, conn, membership.project_pk, body.kind, body.stored())
        category_pk = _category_pk(conn, membership.project_pk, body.category_id)
        pk = topics.create(
            conn, membership.project_pk, name=body.name, kind=body.kind, definition=body.stored(), now=utcnow()
        )
        categories.assign(conn, membership.project_pk, pk, category_pk)
    return redirect(_topic_url(project, f"/{pk}"))


def _topic(request: Request, project_pk: int, topic_id: str) -> topics.TopicRow:
    row = None
    if topic_id.isdigit() and len(topic_id) < 19:
        with request.app.state.db.reader() as conn:
            row = topics.get(conn, project_pk, int(topic_id))
    if row is None:
        raise WebError(404, "no such topic in this project")
    return row


def _changing(request: Request, project: str, topic_id: str, csrf_token: str) -> tuple[Membership, topics.TopicRow]:
    """A form that changes a topic: a member's, with its CSRF token, about a topic of this project."""
    session, membership = access(request, project, "member")
    check_csrf(session, csrf_token)
    return membership, _topic(request, membership.project_pk, topic_id)


@router.get("/p/{project}/topics/{topic_id}")
def topic_page(
    request: Request, project: str, topic_id: str, start: str | None = None, end: str | None = None,
    period: str | None = None,
) -> Response:  # fmt: skip
    session, membership = access(request, project)
    row = _topic(request, membership.project_pk, topic_id)
    window = date_range(start, end, period, default_days=30)
    labels = bucket_starts(window.start, window.end, window.period)  # type: ignore[arg-type]
    with request.app.state.db.reader() as conn:
        by_topic = metrics.metrics(
            conn, membership.project_pk, start=window.start, end=window.end, period=window.period,  # type: ignore[arg-type]
            grouping=metrics.Grouping("topic"), prices=request.app.state.prices, max_groups=10_000,
        )  # fmt: skip
        found = categories.list_categories(conn, membership.project_pk)
        category = next((c for c in found if c.pk == row.category_pk), None)
        samples, total = explore.page(
            conn,
            membership.project_pk,
            ConversationFilter(start=window.start, end=window.end + timedelta(days=1), topic=row.pk),
            1,
            10,
        )
    series = by_topic.get(row.name, {}) if row.status == "active" else {}

    def values(key: str, default: object = 0) -> list:
        return [series.get(b, {}).get(key, default) for b in labels]

    charts = {
        "volume": {"labels": labels, "kind": "line", "series": [
            {"label": "Messages", "values": values("messages")},
            {"label": "Conversations", "values": values("conversations")}]},
        "sentiment": {"labels": labels, "kind": "line", "series": [
            {"label": "Average user sentiment", "values": values("avg_sentiment", None)}]},
        "rating": {"labels": labels, "kind": "line", "series": [
            {"label": "Thumbs up", "color": "#16a34a", "values": values("ratings_up")},
            {"label": "Thumbs down", "color": "#dc2626", "values": values("ratings_down")}]},
    }  # fmt: skip
    return render(
        request,
        "topic.html",
        title=f"Topic {row.name}",
        active="topics",
        session=session,
        membership=membership,
        t=row,
        charts=charts,
        samples=samples,
        total=total,
        window=window,
        can_edit=membership.can("member") and row.kind != "suggested",
        category_name=category.name if category else None,
        category_choices=found,
        messages=sum(series.get(b, {}).get("messages", 0) for b in labels),
    )


@router.post("/p/{project}/topics/{topic_id}")
def edit_topic(
    request: Request,
    project: str,
    topic_id: str,
    csrf_token: str = Form(""),
    body: TopicDefinition = Depends(topic_form),  # noqa: B008
) -> Response:
    membership, row = _changing(request, project, topic_id, csrf_token)
    with request.app.state.db.writer() as conn:
        if topics.name_taken(conn, membership.project_pk, body.name, except_pk=row.pk):
            raise WebError(409, f"a topic named {body.name!r} exists already")
        _within_limits(request, conn, membership.project_pk, body.kind, body.stored(), except_pk=row.pk)
        category_pk = _category_pk(conn, membership.project_pk, body.category_id)
        if topics.same_definition(row, body.name, body.kind, body.stored()):
            # Only moved to another category: its matches stay (a redefinition would recompute them all).
            categories.assign(conn, membership.project_pk, row.pk, category_pk)
        else:
            topics.redefine(
                conn, membership.project_pk, row.pk, utcnow(), name=body.name, kind=body.kind,
                definition=body.stored(), status="active", category_pk=category_pk,
            )  # fmt: skip
    return redirect(_topic_url(project, f"/{row.pk}"))


@router.post("/p/{project}/topics/{topic_id}/delete")
def delete_topic(request: Request, project: str, topic_id: str, csrf_token: str = Form("")) -> Response:
    membership, row = _changing(request, project, topic_id, csrf_token)
    with request.app.state.db.writer() as conn:
        topics.remove(conn, membership.project_pk, row.pk, utcnow())
    return redirect(_topic_url(project))


@router.post("/p/{project}/topics/{topic_id}/accept")
def accept_suggestion(
    request: Request, project: str, topic_id: str, csrf_token: str = Form(""), name: str = Form("")
) -> Response:
    membership, row = _changing(request, project, topic_id, csrf_token)
    if row.kind != "suggested":
        raise WebError(409, "only a suggested topic can be accepted")
    new_name = (name.strip() or row.name)[:128]
    if not new_name.isprintable():
        raise WebError(422, "name: must not contain control characters")
    with request.app.state.db.writer() as conn:
        if topics.name_taken(conn, membership.project_pk, new_name, except_pk=row.pk):
            raise WebError(409, f"a topic named {new_name!r} exists already")
        _within_limits(request, conn, membership.project_pk, "semantic", {}, except_pk=row.pk)
        topics.accept(conn, row, new_name, utcnow())
    return redirect(_topic_url(project, f"/{row.pk}"))


@router.post("/p/{project}/topics/{topic_id}/dismiss")
def dismiss_suggestion(request: Request, project: str, topic_id: str, csrf_token: str = Form("")) -> Response:
    membership, row = _changing(request, project, topic_id, csrf_token)
    if row.kind != "suggested":
        raise WebError(409, "only a suggested topic can be dismissed")
    with request.app.state.db.writer() as conn:
        topics.set_status(conn, membership.project_pk, row.pk, "dismissed", utcnow())
    return redirect(_topic_url(project))
