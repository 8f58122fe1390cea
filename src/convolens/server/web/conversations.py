"""``/p/{project}/conversations``: the filterable list (filters live in the URL, so a view can be shared),
one transcript, and the filtered list exported as CSV or JSONL, streamed."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from convolens.server.api.context_format import conversation_response
from convolens.server.web.render import SECURITY_HEADERS, WebError, date_range, page_count, render
from convolens.server.web.session import access
from convolens.store import conversation_reads as queries
from convolens.store import explore, projects, search, topics, translations
from convolens.store.explore import ConversationFilter
from convolens.store.outcome_fields import OUTCOMES, SIGNALS, from_mask

router = APIRouter(include_in_schema=False)
PER_PAGE = 50
FILTER_FIELDS = (
    "user",
    "tenant",
    "topic",
    "sentiment",
    "rating",
    "outcome",
    "signal",
    "started",
    "language",
    "model",
    "meta",
    "q",
    "order",
)
MAX_FILTER_CHARS = 500


def _filters(request: Request) -> tuple[ConversationFilter, dict[str, str]]:
    """The filter of the URL's query string, and the query string's own values (to keep in links)."""
    params = request.query_params
    values = {k: params[k].strip()[:MAX_FILTER_CHARS] for k in (*FILTER_FIELDS, "start", "end") if params.get(k)}
    for key, value in values.items():
        if not value.isprintable():
            raise WebError(422, f"the {key} filter must be printable text")
    window = date_range(values.get("start"), values.get("end"), None, default_days=30)
    topic_pk = None
    if "topic" in values:
        if not values["topic"].isdigit():
            raise WebError(422, "the topic filter must be a topic id")
        topic_pk = int(values["topic"])
    if values.get("sentiment") not in (None, *explore.SENTIMENTS):
        raise WebError(422, f"sentiment must be one of {', '.join(explore.SENTIMENTS)}")
    if values.get("rating") not in (None, *explore.RATINGS):
        raise WebError(422, f"rating must be one of {', '.join(explore.RATINGS)}")
    if values.get("outcome") not in (None, *OUTCOMES):
        raise WebError(422, f"outcome must be one of {', '.join(OUTCOMES)}")
    if values.get("order") not in (None, *search.ORDERS):
        raise WebError(422, f"order must be one of {', '.join(search.ORDERS)}")
    if values.get("signal") not in (None, *SIGNALS):
        raise WebError(422, f"signal must be one of {', '.join(SIGNALS)}")
    if values.get("started") not in (None, "1"):
        raise WebError(422, "the started filter must be 1 (only conversations that started in the range)")
    meta_key = meta_value = None
    if "meta" in values:
        meta_key, sep, meta_value = values["meta"].partition("=")
        meta_key = meta_key.strip()
        if not sep or not meta_key or '"' in meta_key or "\\" in meta_key:
            raise WebError(422, "the metadata filter must look like key=value")
    f = ConversationFilter(
        start=window.start,
        end=window.end,
        user=values.get("user"),
        tenant=values.get("tenant"),
        topic=topic_pk,
        sentiment=values.get("sentiment"),
        rating=values.get("rating"),
        language=values.get("language"),
        model=values.get("model"),
        metadata_key=meta_key,
        metadata_value=meta_value.strip() if meta_value is not None else None,
        text=values.get("q"),
        outcome=values.get("outcome"),
        signal=values.get("signal"),
        started_in_range=values.get("started") == "1",
        order=values.get("order", "time"),
    )
    values.setdefault("start", window.first.isoformat())
    values.setdefault("end", window.last.isoformat())
    return f, values


@router.get("/p/{project}/conversations")
def conversation_list(request: Request, project: str, page: int = 1) -> Response:
    session, membership = access(request, project)
    f, values = _filters(request)
    page = max(1, min(page, 100_000))
    db = request.app.state.db
    with db.reader() as conn:
        rows, total = explore.page(conn, membership.project_pk, f, page, PER_PAGE)
        options = {
            "language": explore.known_values(conn, membership.project_pk, "language"),
            "model": explore.known_values(conn, membership.project_pk, "model"),
            "tenant": explore.known_values(conn, membership.project_pk, "tenant"),
            "topic": [(t.pk, t.name) for t in topics.list_topics(conn, membership.project_pk)],
        }
    return render(
        request,
        "conversations.html",
        title="Conversations",
        active="conversations",
        session=session,
        membership=membership,
        rows=rows,
        total=total,
        count_cap=search.COUNT_CAP if f.text else total,
        page=page,
        pages=page_count(total, PER_PAGE),
        values=values,
        options=options,
        sentiments=explore.SENTIMENTS,
        ratings=explore.RATINGS,
        outcomes=OUTCOMES,
        signals=SIGNALS,
    )


# ``:path``: an id may hold ``/`` (base64), which arrives decoded from ``%2F``; the rest of the path is the id.
@router.get("/p/{project}/conversations/{conversation_id:path}")
def transcript(request: Request, project: str, conversation_id: str) -> Response:
    session, membership = access(request, project)
    with request.app.state.db.snapshot() as conn:  # row and messages from one snapshot (api/context_read.py)
        view = queries.get_conversation(conn, membership.project_pk, conversation_id)
        language = translations.settings_from(projects.settings_of(conn, membership.project_pk)).language
    if view is None:
        raise WebError(404, "no such conversation in this project")
    return render(
        request,
        "transcript.html",
        title=f"Conversation {conversation_id[:40]}",
        active="conversations",
        session=session,
        membership=membership,
        c=view,
        project_language=language,
    )


CSV_COLUMNS = (
    "id", "user_id", "tenant_id", "started_at", "last_message_at", "message_count", "sentiment_trend",
    "languages", "topics", "first_user_message", "metadata", "first_user_message_translation",
    "outcome", "outcome_signals",
)  # fmt: skip


def _csv_rows(views: Iterator[queries.ConversationView]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for view in views:
        first_message = next((m for m in view.messages if m.role == "user" and m.kind == "message"), None)
        first = first_message.content if first_message is not None else ""
        cells = [
            view.id,
            view.user_id or "",
            view.tenant_id or "",
            view.started_at.isoformat(),
            view.last_message_at.isoformat(),
            view.message_count,
            view.sentiment_trend or "",
            " ".join(view.languages),
            "; ".join(t["name"] for t in view.topics),
            first,
            orjson.dumps(view.metadata).decode() if view.metadata else "",
            # Added at the end, so that readers of the columns before them are undisturbed.
            (first_message.translation or "") if first_message is not None else "",
            view.outcome or "",
            "; ".join(from_mask(view.outcome_signals)),
        ]
        writer.writerow([_defuse(str(cell)) for cell in cells])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.getvalue():
        yield buffer.getvalue()


# What a spreadsheet may take for the start of a formula (OWASP's CSV injection list). Every cell comes
# from ingested data (ids, user ids, tenants, topic names, metadata, text), so every cell is defused.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _defuse(text: str) -> str:
    """A cell a spreadsheet would run as a formula is made plain text by a leading apostrophe."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _jsonl_rows(views: Iterator[queries.ConversationView]) -> Iterator[bytes]:
    for view in views:
        yield orjson.dumps(conversation_response(view)) + b"\n"


@router.get("/p/{project}/export.{fmt}")
def export(request: Request, project: str, fmt: str) -> Response:
    _session, membership = access(request, project)
    if fmt not in ("csv", "jsonl"):
        raise WebError(404, "exports are .csv or .jsonl")
    f, _values = _filters(request)
    db = request.app.state.db

    def views() -> Iterator[queries.ConversationView]:
        # One read snapshot for the whole export, released when the download ends or is dropped.
        with db.snapshot() as conn:
            yield from explore.stream(conn, membership.project_pk, f)

    body: Iterator[Any] = _csv_rows(views()) if fmt == "csv" else _jsonl_rows(views())
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    filename = "conversations-" + re.sub(r"[^A-Za-z0-9._-]", "_", membership.project) + f".{fmt}"
    headers = {**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'}
    return StreamingResponse(body, media_type=media, headers=headers)
