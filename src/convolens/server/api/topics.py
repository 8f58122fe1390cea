"""``/api/v1/topics``: define keyword, semantic and LLM topics; review suggested ones.

Reading needs the ``read`` scope; defining, changing, accepting and dismissing need ``admin``.
A new or changed topic applies to new messages at once and to stored ones in the background.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from sqlalchemy import Connection

from convolens.config import Limits
from convolens.schemas.topics import TopicDefinition
from convolens.server.api.context_read import MAX_BUCKETED_DAYS, time_window
from convolens.server.api.deps import database, limits
from convolens.server.auth import AdminToken, ReadToken
from convolens.server.errors import ERROR_RESPONSES, ApiError, query_error
from convolens.server.responses import JSONResponse
from convolens.store import categories, suggestions, topic_figures, topics
from convolens.store.db import Database
from convolens.store.projects import TokenInfo
from convolens.timeutil import iso, utcnow

router = APIRouter(tags=["topics"], responses=ERROR_RESPONSES)


def topic_response(row: topics.TopicRow, named: dict[int, str]) -> dict[str, Any]:
    """A topic as the API shows it; ``named``: the project's category names by pk."""
    in_category = row.category_pk is not None and row.category_pk in named
    return {
        "id": str(row.pk),
        "name": row.name,
        "kind": row.kind,
        "status": row.status,
        # null: uncategorised
        "category": {"id": str(row.category_pk), "name": named[row.category_pk]} if in_category else None,
        **{k: v for k, v in row.definition.items() if v not in (None, [])},
        "conversations_sample": row.samples or [],
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "backfill": {
            "done": row.backfill_cursor >= row.backfill_until,
            "through_message": row.backfill_cursor,
            "until_message": row.backfill_until,
        },
    }


def _category_names(conn: Connection, project_pk: int) -> dict[int, str]:
    return {c.pk: c.name for c in categories.list_categories(conn, project_pk)}


def _respond(db: Database, project_pk: int, topic_id: str, status_code: int = 200) -> JSONResponse:
    row = _found(db, project_pk, topic_id)
    with db.reader() as conn:
        named = _category_names(conn, project_pk)
    return JSONResponse(topic_response(row, named), status_code=status_code)


def _category_pk(conn: Connection, project_pk: int, category_id: str | None) -> int | None:
    """The pk of the category a topic is put in; a 422 naming ``category_id`` if the project has none such."""
    if category_id is None:
        return None
    if categories.get(conn, project_pk, int(category_id)) is None:
        raise ApiError(
            422, "category_id: no such category in this project", [{"field": "category_id", "msg": "no such category"}]
        )
    return int(category_id)


def _topic_pk(topic_id: str) -> int:
    if not topic_id.isdigit() or len(topic_id) > 18:
        raise ApiError(404, "no such topic in this project")
    return int(topic_id)


def _found(db: Database, project_pk: int, topic_id: str) -> topics.TopicRow:
    with db.reader() as conn:
        row = topics.get(conn, project_pk, _topic_pk(topic_id))
    if row is None:
        raise ApiError(404, "no such topic in this project")
    return row


def _within_limits(
    conn: Connection,
    project_pk: int,
    kind: str,
    definition: dict[str, Any],
    bounds: Limits,
    except_pk: int | None = None,
) -> None:
    over = topics.over_limit(conn, project_pk, kind, definition, bounds, except_pk)
    if over is not None:
        raise ApiError(over.status, f"{over.field}: {over.message}", [{"field": over.field, "msg": over.message}])


def _name_conflict(name: str) -> ApiError:
    return ApiError(409, f"name: a topic named {name!r} already exists", [{"field": "name", "msg": "already used"}])


@router.get("/api/v1/topics")
def list_topics(
    status: Literal["active", "suggested", "dismissed"] = "active",
    figures: bool = False,
    start_time: str | None = None,
    end_time: str | None = None,
    token: TokenInfo = ReadToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """The project's topics. With ``figures=true``, each also has its ``figures`` for the whole UTC days
    from ``start_time`` to ``end_time`` (default: the last 30 days): messages, previous_messages (the
    period of equal length before) and trend (new, growing, shrinking, steady, quiet), this_week,
    last_week and emerging, avg_sentiment, ratings and thumbs_down_share, negative_share,
    unhappy_messages, languages and three representative samples; ``outcomes`` (the topic's
    conversations that started in those days, per outcome, each once in its latest) and
    ``unresolved_share`` (unresolved among resolved + unresolved + abandoned; null without any)."""
    with db.reader() as conn:
        rows = topics.list_topics(conn, token.project_pk, (status,))
        named = _category_names(conn, token.project_pk)
        if not figures:
            return JSONResponse({"count": len(rows), "topics": [topic_response(r, named) for r in rows]})
        start, end = time_window(start_time, end_time, max_days=MAX_BUCKETED_DAYS)
        found = topic_figures.figures(conn, token.project_pk, rows, first=start.date(), last=end.date())
    listed = [topic_response(r, named) | {"figures": f.as_json()} for r, f in zip(rows, found, strict=True)]
    return JSONResponse({"count": len(rows), "start_time": iso(start), "end_time": iso(end), "topics": listed})


@router.post("/api/v1/topics", status_code=201)
def create_topic(
    body: TopicDefinition,
    token: TokenInfo = AdminToken,
    db: Database = Depends(database),  # noqa: B008
    bounds: Limits = Depends(limits),  # noqa: B008
) -> JSONResponse:
    with db.writer() as conn:
        if topics.name_taken(conn, token.project_pk, body.name):
            raise _name_conflict(body.name)
        _within_limits(conn, token.project_pk, body.kind, body.stored(), bounds)
        category_pk = _category_pk(conn, token.project_pk, body.category_id)
        pk = topics.create(
            conn, token.project_pk, name=body.name, kind=body.kind, definition=body.stored(), now=utcnow()
        )
        categories.assign(conn, token.project_pk, pk, category_pk)
    return _respond(db, token.project_pk, str(pk), status_code=201)


@router.get("/api/v1/topics/{topic_id}")
def get_topic(topic_id: str, token: TokenInfo = ReadToken, db: Database = Depends(database)) -> JSONResponse:  # noqa: B008
    return _respond(db, token.project_pk, topic_id)


@router.get("/api/v1/topic_categories")
def list_categories(token: TokenInfo = ReadToken, db: Database = Depends(database)) -> JSONResponse:  # noqa: B008
    """The upper level of the topic map: the project's categories, largest first, each with the ids of
    its active and suggested topics. The clustering of suggestions makes them (an id stays while most
    of its topics stay); a defined topic is put in one with ``category_id``."""
    with db.reader() as conn:
        rows = topics.list_topics(conn, token.project_pk, ("active", "suggested"))
        found = categories.list_categories(conn, token.project_pk)
    members: dict[int, list[str]] = {c.pk: [] for c in found}
    for r in rows:
        if r.category_pk in members:
            members[r.category_pk].append(str(r.pk))
    listed = [{"id": str(c.pk), "name": c.name, "topics": members[c.pk]} for c in found]
    listed.sort(key=lambda c: -len(c["topics"]))
    return JSONResponse({"count": len(listed), "categories": listed})


@router.put("/api/v1/topics/{topic_id}")
def redefine_topic(
    topic_id: str,
    body: TopicDefinition,
    token: TokenInfo = AdminToken,
    db: Database = Depends(database),  # noqa: B008
    bounds: Limits = Depends(limits),  # noqa: B008
) -> JSONResponse:
    """Replace a topic's definition; its matches are recomputed in the background."""
    current = _found(db, token.project_pk, topic_id)
    with db.writer() as conn:
        if topics.name_taken(conn, token.project_pk, body.name, except_pk=current.pk):
            raise _name_conflict(body.name)
        _within_limits(conn, token.project_pk, body.kind, body.stored(), bounds, except_pk=current.pk)
        category_pk = _category_pk(conn, token.project_pk, body.category_id)
        if topics.same_definition(current, body.name, body.kind, body.stored()):
            # Only moved to another category: its matches stay (a redefinition would recompute them all).
            categories.assign(conn, token.project_pk, current.pk, category_pk)
        else:
            topics.redefine(
                conn,
                token.project_pk,
                current.pk,
                utcnow(),
                name=body.name,
                kind=body.kind,
                definition=body.stored(),
                status="active",
                category_pk=category_pk,
            )
    return _respond(db, token.project_pk, topic_id)


@router.delete("/api/v1/topics/{topic_id}")
def delete_topic(topic_id: str, token: TokenInfo = AdminToken, db: Database = Depends(database)) -> JSONResponse:  # noqa: B008
    with db.writer() as conn:
        if not topics.remove(conn, token.project_pk, _topic_pk(topic_id), utcnow()):
            raise ApiError(404, "no such topic in this project")
    return JSONResponse({"status": "deleted", "id": topic_id})


@router.post("/api/v1/topics/{topic_id}/accept")
def accept_suggestion(
    topic_id: str,
    name: str | None = None,
    token: TokenInfo = AdminToken,
    db: Database = Depends(database),  # noqa: B008
    bounds: Limits = Depends(limits),  # noqa: B008
) -> JSONResponse:
    """A suggested topic becomes a semantic topic: its cluster centre and sample phrases define it."""
    row = _found(db, token.project_pk, topic_id)
    if row.kind != "suggested":
        raise ApiError(409, "only a suggested topic can be accepted")
    new_name = (name or row.name).strip()[:128] or row.name
    if not new_name.isprintable():
        raise query_error("name", "must not contain control characters")
    with db.writer() as conn:
        if topics.name_taken(conn, token.project_pk, new_name, except_pk=row.pk):
            raise _name_conflict(new_name)
        _within_limits(conn, token.project_pk, "semantic", {}, bounds, except_pk=row.pk)
        topics.accept(conn, row, new_name, utcnow())
    return _respond(db, token.project_pk, topic_id)


@router.post("/api/v1/topics/{topic_id}/dismiss")
def dismiss_suggestion(
    topic_id: str,
    token: TokenInfo = AdminToken,
    db: Database = Depends(database),  # noqa: B008
) -> JSONResponse:
    """Hide a suggested topic; the clustering remembers it and does not suggest it again."""
    row = _found(db, token.project_pk, topic_id)
    if row.kind != "suggested":
        raise ApiError(409, "only a suggested topic can be dismissed (delete a defined topic instead)")
    with db.writer() as conn:
        topics.set_status(conn, token.project_pk, row.pk, "dismissed", utcnow())
    return _respond(db, token.project_pk, topic_id)


@router.post("/api/v1/suggested_topics/refresh", status_code=202)
def refresh_suggestions(token: TokenInfo = AdminToken, db: Database = Depends(database)) -> JSONResponse:  # noqa: B008
    """Ask the workers to recompute suggested topics now rather than when the pool of uncovered messages
    has grown enough (store/suggestions.py)."""
    with db.writer() as conn:
        suggestions.request_run(conn, token.project_pk, utcnow())
    return JSONResponse({"status": "requested"}, status_code=202)
