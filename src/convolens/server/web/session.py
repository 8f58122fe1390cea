"""Who is looking at a page: the signed-in session (an HttpOnly, SameSite cookie), their role in the
project the URL names, and the CSRF token every form posts back. Login and logout live here too."""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from convolens.server.ratelimit import RateLimiter
from convolens.server.web.render import SECURITY_HEADERS, LoginRequired, WebError, render
from convolens.store import accounts
from convolens.store.accounts import Membership, Session
from convolens.store.db import Database
from convolens.timeutil import utcnow

COOKIE = "convolens_session"
LOGIN_CSRF_COOKIE = "convolens_login_csrf"

router = APIRouter(include_in_schema=False)


def _db(request: Request) -> Database:
    return request.app.state.db


def current_session(request: Request) -> Session | None:
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 200:
        return None
    with _db(request).reader() as conn:
        return accounts.session(conn, token, utcnow())


def signed_in(request: Request) -> Session:
    session = current_session(request)
    if session is None:
        raise LoginRequired()
    return session


def access(request: Request, project: str, role: str = "viewer") -> tuple[Session, Membership]:
    """The session and its membership of ``project``: a project the account is not in is 404 (its
    existence is not confirmed), a role too low for the page is 403."""
    session = signed_in(request)
    membership = session.membership(project)
    if membership is None:
        raise WebError(404, "no such project")
    if not membership.can(role):
        raise WebError(403, f"this page needs the {role} role; you are a {membership.role}")
    return session, membership


def check_csrf(session: Session, token: str) -> None:
    if not token or not hmac.compare_digest(token.encode(), session.csrf_token.encode()):
        raise WebError(403, "the form was missing its security token; reload the page and try again")


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def _safe_next(target: str | None) -> str:
    # Only a path of this site: "//evil.example" or "https://…" would send the user elsewhere.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", title="Sign in", csrf_token=token, next=_safe_next(next), error=None)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request))
    return response


@router.post("/login")
def login(
    request: Request,
    email: str = Form(""),
    password: str = Form(""),
    csrf_token: str = Form(""),
    next: str = Form("/"),
) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected.encode(), csrf_token.encode()):
        raise WebError(403, "the form was missing its security token; reload the page and try again")
    # Failed attempts per client address and e-mail are limited; once over, even the right password waits.
    limiter, key = request.app.state.login_limiter, (request.client.host if request.client else "", email[:254])
    wait = limiter.blocked(key)
    if wait:
        raise WebError(429, f"too many failed sign-ins; try again in {RateLimiter.retry_after_header(wait)} seconds")
    with _db(request).reader() as conn:
        account_pk = accounts.verify(conn, email[:254], password[:1024])
    if account_pk is None:
        limiter.acquire(key)
        return render(
            request, "login.html", status=401, title="Sign in", csrf_token=expected, next=_safe_next(next),
            error="Wrong e-mail or password.", email=email[:254],
        )  # fmt: skip
    with _db(request).writer() as conn:
        token = accounts.start_session(conn, account_pk, utcnow())
    response = redirect(_safe_next(next))
    response.set_cookie(
        COOKIE,
        token,
        max_age=accounts.SESSION_DAYS * 86400,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, csrf_token: str = Form("")) -> Response:
    session = signed_in(request)
    check_csrf(session, csrf_token)
    with _db(request).writer() as conn:
        accounts.end_session(conn, request.cookies.get(COOKIE, ""))
    response = redirect("/login")
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/")
def home(request: Request) -> Response:
    session = signed_in(request)
    if not session.memberships:
        return render(request, "error.html", status=403, title="No project", session=session,
                      message="Your account is not a member of any project yet. Ask an admin to add you.")  # fmt: skip
    return redirect(f"/p/{quote(session.memberships[0].project, safe='')}/overview")


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"
