"""``/p/{project}/settings`` (admins only): API tokens, PII scrubbing, the LLM provider, translation, members
and roles, and the alert channels' last deliveries."""

from __future__ import annotations

import secrets
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy import Connection

from convolens.enrich import names
from convolens.outbound import RefusedUrl, redacted, safe_url, validate_url
from convolens.server.path_ids import RowId
from convolens.server.web.render import WebError, render
from convolens.server.web.session import access, check_csrf, redirect
from convolens.store import accounts, alerts, digests, outcome_judge, passwords, projects, rollups, translations
from convolens.store.accounts import Membership, Session
from convolens.timeutil import utcnow

router = APIRouter(include_in_schema=False)
SCOPE_CHOICES = ("ingest", "read", "admin")


def _page(request: Request, session: Session, membership: Membership, status: int = 200, **shown: object) -> Response:
    with request.app.state.db.reader() as conn:
        tokens = projects.list_tokens(conn, membership.project)
        settings = projects.settings_of(conn, membership.project_pk)
        people = accounts.members(conn, membership.project_pk)
        channels = alert_channels(conn, membership.project_pk)
    llm = settings.get("llm") or {}
    with request.app.state.db.reader() as conn:
        translated_today = translations.used_today(conn, membership.project_pk, rollups.day_of(utcnow()))
        judge = outcome_judge.settings_from(settings)
        judged_today = outcome_judge.used_today(conn, membership.project_pk, rollups.day_of(utcnow()))
    return render(
        request,
        "settings.html",
        status=status,
        title="Settings",
        active="settings",
        session=session,
        membership=membership,
        tokens=tokens,
        pii=bool(settings.get("pii_scrubbing", True)),
        pii_names=bool(settings.get("pii_names", False)),
        names_available=names.available(),
        # Never the key, nor credentials a URL saved before they were refused may carry.
        llm={
            "base_url": redacted(llm.get("base_url") or ""),
            "model": llm.get("model", ""),
            "has_key": bool(llm.get("api_key")),
        },
        translation=translations.settings_from(settings),
        translated_today=translated_today,
        outcome_judge=judge,
        judged_today=judged_today,
        has_provider=bool(llm.get("base_url")) or request.app.state.settings.llm.enabled,
        people=people,
        roles=accounts.ROLES,
        scopes=SCOPE_CHOICES,
        alert_channels=channels,
        digest_webhook=settings.get(digests.WEBHOOK_SETTING) or None,
        smtp=request.app.state.settings.smtp,
        **shown,
    )


def alert_channels(conn: Connection, project_pk: int) -> list[dict]:
    """Each alert rule's channels (webhook, e-mail) with their latest delivery: a failing one shows its
    error here, where an admin looks after the project's settings."""
    latest = alerts.last_deliveries(conn, project_pk)
    found = []
    for rule in alerts.list_rules(conn, project_pk):
        for channel in rule.channels():
            target = (
                redacted(rule.definition["channel"]["url"])
                if channel == "webhook"
                else ", ".join(rule.definition["email"]["to"])
            )
            found.append({"rule": rule, "channel": channel, "target": target, "last": latest.get((rule.pk, channel))})
    return found


def _back(project: str) -> Response:
    return redirect(f"/p/{quote(project, safe='')}/settings")


@router.get("/p/{project}/settings")
def settings_page(request: Request, project: str) -> Response:
    session, membership = access(request, project, "admin")
    return _page(request, session, membership)


@router.post("/p/{project}/settings/tokens")
def create_token(
    request: Request,
    project: str,
    csrf_token: str = Form(""),
    label: str = Form(""),
    scopes: list[str] = Form(default=[]),  # noqa: B008
) -> Response:
    session, membership = access(request, project, "admin")
    check_csrf(session, csrf_token)
    chosen = [s for s in scopes if s in SCOPE_CHOICES]
    if not chosen:
        raise WebError(422, "scopes: choose at least one of ingest, read, admin")
    label = label.strip()[:128]
    if label and not label.isprintable():
        raise WebError(422, "label: must be printable text")
    with request.app.state.db.writer() as conn:
        token, _ = projects.create_token(conn, membership.project_pk, frozenset(chosen), label or None)
    # Shown once, on this response only: the database keeps its hash.
    return _page(request, session, membership, status=201, new_token=token)


@router.post("/p/{project}/settings/tokens/{token_pk}/revoke")
def revoke_token(request: Request, project: str, token_pk: RowId, csrf_token: str = Form("")) -> Response:
    session, membership = access(request, project, "admin")
    check_csrf(session, csrf_token)
    with request.app.state.db.writer() as conn:
        if not projects.revoke_project_token(conn, membership.project_pk, token_pk, utcnow()):
            raise WebError(404, "no such live token in this project")
    return _back(project)


@router.post("/p/{project}/settings/privacy")
def privacy(
    request: Request, project: str, csrf_token: str = Form(""), pii: str = Form("off"), pii_names: str = Form("off")
) -> Response:
    session, membership = access(request, project, "admin")
    check_csrf(session, csrf_token)
    if pii_names == "on" and not names.available():
        raise WebError(422, "pii_names: the server lacks the names extra (pip install 'convolens[names]')")
    with request.app.state.db.writer() as conn:
        projects.set_project_setting(conn, membership.project, "pii_scrubbing", pii == "on")
        projects.set_project_setting(conn, membership.project, "pii_names", pii_names == "on")
    return _back(project)


@router.post("/p/{project}/settings/llm")
def llm_provider(
    request: Request,
    project: str,
    csrf_token: str = Form(""),
    base_url: str = Form(""),
    model: str = Form(""),
    api_key: str = Form(""),
    clear: str = Form(""),
) -> Response:
    session, membership = access(request, project, "admin")
    check_csrf(session, csrf_token)
    base_url, model, api_key = base_url.strip(), model.strip()[:200], api_key.strip()[:500]
    if any(not v.isprintable() for v in (model, api_key)):
        raise WebError(422, "the provider settings must be printable text")
    checked = None
    if base_url and not clear:
        # Before the write lock: this resolves the host, which may take a while.
        try:
            checked = safe_url(base_url, request.app.state.settings.outbound)
        except RefusedUrl as exc:
            return _page(request, session, membership, status=422, llm_error=f"base_url: {exc}")
    key_dropped = False
    with request.app.state.db.writer() as conn:
        current = projects.settings_of(conn, membership.project_pk).get("llm") or {}
        if checked is None:
            value = None
        else:
            # An empty key field keeps the stored key (the page never shows it, so it cannot send it back),
            # but only for the origin it was given for: else an admin could re-point the provider to a
            # server of theirs and receive the key.
            key = api_key or None
            if key is None and current.get("api_key"):
                if _origin(current.get("base_url")) == checked.origin:
                    key = current["api_key"]
                else:
                    key_dropped = True
            value = {"base_url": checked.url, "model": model or "gpt-4o-mini", "api_key": key}
        projects.set_project_setting(conn, membership.project, "llm", value)
    if key_dropped:
        notice = "The provider's address changed, so its stored API key was removed: enter the key for it again."
        return _page(request, session, membership, llm_notice=notice)
    return _back(project)


@router.post("/p/{project}/settings/translation")
def translation(
    request: Request,
    project: str,
    csrf_token: str = Form(""),
    enabled: str = Form("off"),
    language: str = Form(translations.DEFAULT_LANGUAGE),
    daily_cap: str = Form(str(translations.DEFAULT_DAILY_CAP)),
) -> Response:
    session, membership = access(request, project, "admin")
    check_csrf(session, csrf_token)
    language = language.strip().lower()
    if not translations.LANGUAGE_CODE.fullmatch(language):
        raise WebError(422, "language: must be a two-letter ISO 639-1 code such as en, de or ko")
    cap = daily_cap.strip()
    if not cap.isdigit() or len(cap) > 7 or int(cap) > translations.MAX_DAILY_CAP:
        raise WebError(422, f"daily_cap: must be a whole number from 0 to {translations.MAX_DAILY_CAP:,}")
    with request.app.state.db.writer() as conn:
        projects.set_project_setting(conn, membership.project, "language", language)
        projects.set_project_setting(
            conn, membership.project, "translation", {"enabled": enabled == "on", "daily_cap": int(cap)}
        )
    return _back(project)


@router.post("/p/{project}/settings/outcome-judge")
def outcome_judge_settings(
    request: Request,
    project: str,
    csrf_token: str = Form(""),
    enabled: str = Form("off"),
    daily_cap: str = Form(str(outcome_judge.DEFAULT_DAILY_CAP)),
) -> Response:
    session, membership = access(request, project, "admin")
    check_csrf(session, csrf_token)
    cap = daily_cap.strip()
    if not cap.isdigit() or len(cap) > 7 or int(cap) > outcome_judge.MAX_DAILY_CAP:
        raise WebError(422, f"daily_cap: must be a whole number from 0 to {outcome_judge.MAX_DAILY_CAP:,}")
    with request.app.state.db.writer() as conn:
        projects.set_project_setting(
            conn, membership.project, "outcome_judge", {"enabled": enabled == "on", "daily_cap": int(cap)}
        )
    return _back(project)


@router.post("/p/{project}/settings/digest-webhook")
def digest_webhook(
    request: Request,
    project: str,
    csrf_token: str = Form(""),
    url: str = Form(""),
    format: str = Form("json"),
) -> Response:
    """Where the weekly digest is posted besides the members' e-mails; an empty URL removes it. A new
    signing secret is made and shown once on each save."""
    session, membership = access(request, project, "admin")
    check_csrf(session, csrf_token)
    if format not in ("json", "slack", "teams"):
        raise WebError(422, "format: must be json, slack or teams")
    url = url.strip()
    if len(url) > 2000:
        raise WebError(422, "url: at most 2000 characters")
    value = None
    if url:
        try:  # before the write lock: this resolves the host
            value = {"url": safe_url(url, request.app.state.settings.outbound).url, "format": format,
                     "secret": secrets.token_hex(32)}  # fmt: skip
        except RefusedUrl as exc:
            return _page(request, session, membership, status=422, digest_error=f"url: {exc}")
    with request.app.state.db.writer() as conn:
        projects.set_project_setting(conn, membership.project, digests.WEBHOOK_SETTING, value)
    if value is None:
        return _back(project)
    return _page(request, session, membership, status=201, digest_secret=value["secret"])


def _origin(url: object) -> tuple[str, str, int] | None:
    try:
        return validate_url(str(url)).origin if url else None
    except RefusedUrl:
        return None


@router.post("/p/{project}/settings/members")
def add_member(
    request: Request, project: str, csrf_token: str = Form(""), email: str = Form(""), role: str = Form("viewer")
) -> Response:
    """Adds the person with this e-mail. The answer is the same whether they had an account on this
    server or not (an admin of one project learns nothing of the accounts of others): a one-time password
    is shown either way, and is theirs only if the account is new; it must be changed at first sign-in."""
    session, membership = access(request, project, "admin")
    check_csrf(session, csrf_token)
    if role not in accounts.ROLES:
        raise WebError(422, f"role: must be one of {', '.join(accounts.ROLES)}")
    email = accounts.normalize_email(email)
    if not accounts.valid_email(email):
        raise WebError(422, "email: not an e-mail address")
    # Hashed whether or not the account exists, so the two answers also take as long as each other.
    password = passwords.generated()
    password_hash = accounts.hash_password(password, email)
    with request.app.state.db.writer() as conn:
        account_pk = accounts.add_account(conn, email, password_hash, utcnow(), must_change_password=True)
        if (
            role != "admin"
            and accounts.member_role(conn, account_pk, membership.project_pk) == "admin"
            and accounts.admins(conn, membership.project_pk) <= 1
        ):
            raise WebError(409, "a project keeps at least one admin")
        accounts.set_role(conn, account_pk, membership.project_pk, role)
    return _page(request, session, membership, status=201, added=(email, role, password))


@router.post("/p/{project}/settings/members/{account_pk}")
def change_member(
    request: Request, project: str, account_pk: RowId, csrf_token: str = Form(""), role: str = Form("")
) -> Response:
    """A member's new role, or their removal. Only for members of this project: an account that is not
    one is a 404 whether or not it exists (accounts are added by e-mail, above)."""
    session, membership = access(request, project, "admin")
    check_csrf(session, csrf_token)
    if role not in (*accounts.ROLES, "remove"):
        raise WebError(422, f"role: must be one of {', '.join(accounts.ROLES)} or remove")
    with request.app.state.db.writer() as conn:
        current = accounts.member_role(conn, account_pk, membership.project_pk)
        if current is None:
            raise WebError(404, "no such member of this project")
        if current == "admin" and role != "admin" and accounts.admins(conn, membership.project_pk) <= 1:
            raise WebError(409, "a project keeps at least one admin")
        if role == "remove":
            accounts.remove_member(conn, account_pk, membership.project_pk)
        else:
            accounts.set_role(conn, account_pk, membership.project_pk, role)
    return _back(project)
