"""``/p/{project}/users``: who the users are and whether they come back; ``/users/{id}``: one user."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response

from convolens.server.web.render import WebError, date_range, page_count, render
from convolens.server.web.session import access
from convolens.store import end_users, explore
from convolens.store.conversation_reads import bucket_starts
from convolens.store.explore import ConversationFilter
from convolens.timeutil import utcnow

router = APIRouter(include_in_schema=False)
PER_PAGE = 50
COHORT_WEEKS = 8


@router.get("/p/{project}/users")
def users(
    request: Request,
    project: str,
    q: str | None = None,
    sort: str = "last_seen",
    order: str = "desc",
    page: int = 1,
    start: str | None = None,
    end: str | None = None,
) -> Response:
    session, membership = access(request, project)
    if sort not in end_users.SORTS:
        raise WebError(422, f"sort must be one of {', '.join(end_users.SORTS)}")
    search = (q or "").strip()[:200] or None
    if search and not search.isprintable():
        raise WebError(422, "the search must be printable text")
    window = date_range(start, end, None, default_days=30)
    page = max(1, min(page, 100_000))
    with request.app.state.db.reader() as conn:
        rows, total = end_users.users_page(
            conn, membership.project_pk, search=search, sort=sort, descending=order != "asc", page=page,
            per_page=PER_PAGE,
        )  # fmt: skip
        cohorts = end_users.weekly_cohorts(conn, membership.project_pk, COHORT_WEEKS, utcnow().date())
        newness = end_users.topics_by_newness(conn, membership.project_pk, window.start, window.end)
    query = {"q": search or "", "sort": sort, "order": order}
    return render(
        request,
        "users.html",
        title="Users",
        active="users",
        session=session,
        membership=membership,
        rows=rows,
        total=total,
        page=page,
        pages=page_count(total, PER_PAGE),
        query={k: v for k, v in query.items() if v},
        sort=sort,
        order=order,
        search=search,
        cohorts=cohorts,
        newness=newness,
        window=window,
    )


# ``:path``: an id may hold ``/`` (base64), which arrives decoded from ``%2F``; the rest of the path is the id.
@router.get("/p/{project}/users/{user_id:path}")
def user(request: Request, project: str, user_id: str, page: int = 1) -> Response:
    session, membership = access(request, project)
    with request.app.state.db.reader() as conn:
        first_seen = end_users.first_seen(conn, membership.project_pk, user_id)
        if first_seen is None:
            raise WebError(404, "no such user in this project")
        f = ConversationFilter(start=datetime(1970, 1, 1), end=utcnow() + timedelta(days=3650), user=user_id)
        rows, total = explore.page(conn, membership.project_pk, f, max(1, page), PER_PAGE)
        weekly = end_users.conversations_per_week(conn, membership.project_pk, user_id)
    labels = bucket_starts(min(first_seen, utcnow() - timedelta(weeks=12)), utcnow(), "week")
    chart = {
        "labels": labels,
        "kind": "bars",
        "series": [{"label": "Conversations started", "values": [weekly.get(label, 0) for label in labels]}],
    }
    return render(
        request,
        "user.html",
        title=f"User {user_id[:40]}",
        active="users",
        session=session,
        membership=membership,
        user_id=user_id,
        first_seen=first_seen,
        rows=rows,
        total=total,
        weekly=chart,
        page=page,
        pages=page_count(total, PER_PAGE),
        window=date_range(None, None, None),
    )
