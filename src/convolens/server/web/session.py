"""Who is looking at a page: the signed-in session (an HttpOnly, SameSite cookie), their role in the
project the URL names, and the CSRF token every form posts back. Login, logout and the change-password
form live here too."""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from convolens.server.ratelimit import RateLimiter
from convolens.server.web.render import SECURITY_HEADERS, LoginRequired, PasswordChangeRequired, WebError, render
from convolens.server.web.signin_limit import SignInLimit
from convolens.store import accounts, passwords
from convolens.store.accounts import Membership, Session
from convolens.store.db import Database
from convolens.timeutil import utcnow

COOKIE = "convolens_session"
LOGIN_CSRF_COOKIE = "convolens_login_csrf"
CHANGE_PASSWORD = "/account/password"

router = APIRouter(include_in_schema=False)


def _db(request: Request) -> Database:
    return request.app.state.db


def current_session(request: Request) -> Session | None:
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 200:
        return None
    with _db(request).reader() as conn:
        return accounts.session(conn, token, utcnow())


def signed_in(request: Request, *, password_change_pending: bool = False) -> Session:
    """The session, or the way to the login page. A session whose password someone else chose gets
    only the change-password page (and logout: ``password_change_pending``) until it is replaced."""
    session = current_session(request)
    if session is None:
        raise LoginRequired()
    if session.must_change_password and not password_change_pending:
        raise PasswordChangeRequired()
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
    # Sign-ins per client address and per e-mail (normalised as the lookup does) are limited, before the
    # password is hashed; once over, even the right password waits.
    address, client = accounts.normalize_email(email), request.client.host if request.client else ""
    limit: SignInLimit = request.app.state.signin_limit
    _admit(limit, client, address)
    with _db(request).reader() as conn:
        account_pk = accounts.verify(conn, address, password[: passwords.MAX_LENGTH])
    if account_pk is None:
        return render(
            request, "login.html", status=401, title="Sign in", csrf_token=expected, next=_safe_next(next),
            error="Wrong e-mail or password.", email=email[:254],
        )  # fmt: skip
    limit.succeeded(client, address)
    with _db(request).writer() as conn:
        token = accounts.start_session(conn, account_pk, utcnow())
        session = accounts.session(conn, token, utcnow())
    target = _safe_next(next)
    if session is not None and session.must_change_password:
        target = f"{CHANGE_PASSWORD}?next={quote(target, safe='')}"
    response = redirect(target)
    _set_session_cookie(request, response, token)
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


def _admit(limit: SignInLimit, client: str, address: str) -> None:
    wait = limit.admit(client, address)
    if wait:
        raise WebError(429, f"too many failed sign-ins; try again in {RateLimiter.retry_after_header(wait)} seconds")


def _set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=accounts.SESSION_DAYS * 86400,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/",
    )


@router.get(CHANGE_PASSWORD)
def change_password_page(request: Request, next: str | None = None) -> Response:
    session = signed_in(request, password_change_pending=True)
    return _password_form(request, session, _safe_next(next))


def _password_form(
    request: Request, session: Session, next: str, status: int = 200, error: str | None = None
) -> Response:
    return render(
        request, "change_password.html", status=status, title="Change password", session=session, next=next,
        error=error, forced=session.must_change_password, min_length=passwords.MIN_LENGTH,
    )  # fmt: skip


@router.post(CHANGE_PASSWORD)
def change_password(
    request: Request,
    csrf_token: str = Form(""),
    current: str = Form(""),
    new: str = Form(""),
    repeat: str = Form(""),
    next: str = Form("/"),
) -> Response:
    session = signed_in(request, password_change_pending=True)
    check_csrf(session, csrf_token)
    target = _safe_next(next)
    # The current password is argon2-checked like a sign-in, so it is limited like one: a stolen session
    # cookie does not become a way to guess the password behind it.
    limit: SignInLimit = request.app.state.signin_limit
    client = request.client.host if request.client else ""
    _admit(limit, client, session.email)
    with _db(request).reader() as conn:
        right = accounts.verify(conn, session.email, current[: passwords.MAX_LENGTH]) == session.account_pk
    if not right:
        return _password_form(request, session, target, 401, "current: that is not your current password")
    limit.succeeded(client, session.email)
    if new != repeat:
        return _password_form(request, session, target, 422, "repeat: the two new passwords differ")
    if new == current:
        return _password_form(request, session, target, 422, "new: must differ from the current password")
    try:
        password_hash = accounts.hash_password(new, session.email)
    except ValueError as exc:
        return _password_form(request, session, target, 422, str(exc).replace("password:", "new:", 1))
    with _db(request).writer() as conn:
        # Every session of the account ends (a thief's too); this browser gets a new one.
        accounts.replace_password(conn, session.account_pk, password_hash)
        token = accounts.start_session(conn, session.account_pk, utcnow())
    response = redirect(target)
    _set_session_cookie(request, response, token)
    return response


@router.post("/logout")
def logout(request: Request, csrf_token: str = Form("")) -> Response:
    session = signed_in(request, password_change_pending=True)
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
    """The cookies' Secure flag: CONVOLENS_SECURE_COOKIES, or (auto) whether the request came over
    HTTPS, directly or as a trusted proxy's X-Forwarded-Proto says (the server applies that)."""
    mode = request.app.state.settings.secure_cookies
    return mode == "always" or (mode == "auto" and request.url.scheme == "https")
