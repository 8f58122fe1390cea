"""The dashboard: server-rendered pages (Jinja2, autoescaped) with a vendored chart library (uPlot 1.6.32,
MIT, ``static/uPlot.*``) and two small scripts of ours. Where a URL goes:

- ``/login``, ``/logout``, ``/``, ``/account/password`` → session.py (sign-in, the session cookie, CSRF, roles)
- ``/p/{project}/overview``         → overview.py
- ``/p/{project}/conversations…``, ``/p/{project}/export.csv|jsonl`` → conversations.py
- ``/p/{project}/users…``           → users.py
- ``/p/{project}/topics…``          → topics.py
- ``/p/{project}/alerts…``          → alerts.py (rules, their history, the rule form with its preview, digest opt-in)
- ``/p/{project}/evaluations…``     → evaluations.py (test sets and versions, runs, two runs compared)
- ``/p/{project}/settings…``        → settings.py (admins)
- ``/docs``                          → api_docs.py (the API in Swagger UI 5.35.0, Apache-2.0, ``static/swagger-ui*``)
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from convolens.server import errors
from convolens.server.web import (
    alerts,
    api_docs,
    conversations,
    evaluation_online,
    evaluation_setup,
    evaluations,
    overview,
    session,
    settings,
    topics,
    users,
)
from convolens.server.web.render import HERE, LoginRequired, PasswordChangeRequired, WebError, render
from convolens.server.web.signin_limit import SignInLimit


def _is_page(path: str) -> bool:
    return path.startswith(("/p/", "/login", "/logout", "/account/"))


TITLES = {403: "Not allowed", 404: "Not found", 409: "Conflict", 422: "Check the form", 429: "Slow down"}


def install(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.state.signin_limit = SignInLimit()
    for module in (session, overview, conversations, users, topics, evaluations, evaluation_online, evaluation_setup,
                   alerts, settings, api_docs):  # fmt: skip
        app.include_router(module.router)

    @app.exception_handler(WebError)
    async def _page_error(request: Request, exc: WebError) -> Response:
        who = session.current_session(request)
        return render(request, "error.html", status=exc.status, title=TITLES.get(exc.status, "Error"),
                      message=exc.message, session=who)  # fmt: skip

    # The API answers malformed requests and unknown URLs with JSON; under the dashboard's URLs a person
    # is reading, so they get a page (a page number that is not a number, a mistyped address).
    api_validation = app.exception_handlers[RequestValidationError]
    api_http = app.exception_handlers[StarletteHTTPException]

    @app.exception_handler(RequestValidationError)
    async def _form_error(request: Request, exc: RequestValidationError) -> Response:
        if not _is_page(request.url.path):
            return await api_validation(request, exc)
        problem = errors.invalid(errors.validation_errors(exc)).detail
        return render(request, "error.html", status=422, title=TITLES[422], message=problem,
                      session=session.current_session(request))  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def _missing_page(request: Request, exc: StarletteHTTPException) -> Response:
        if not _is_page(request.url.path) or exc.status_code not in TITLES:
            return await api_http(request, exc)
        return render(request, "error.html", status=exc.status_code, title=TITLES[exc.status_code],
                      message=str(exc.detail), session=session.current_session(request))  # fmt: skip

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, _exc: LoginRequired) -> Response:
        # The path as sent, still percent-encoded: an id's "%2F" or "%3F" must come back as it was.
        path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        target = path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = "/"
        return session.redirect(f"/login?next={quote(target, safe='')}")

    @app.exception_handler(PasswordChangeRequired)
    async def _to_change_password(request: Request, _exc: PasswordChangeRequired) -> Response:
        target = request.url.path if request.method == "GET" else "/"
        return session.redirect(f"{session.CHANGE_PASSWORD}?next={quote(target, safe='')}")
