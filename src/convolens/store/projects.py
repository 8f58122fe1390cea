"""Projects (the tenant boundary) and their API tokens.

A token is ``cl_`` + 32 random bytes, shown once; only its SHA-256 is stored, so a leaked database
does not leak working tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from sqlalchemy import Connection, insert, select, update

from convolens.store.driver import Statements
from convolens.store.tables import api_token, project
from convolens.timeutil import utcnow

TOKEN_PREFIX = "cl_"
# ingest: write events; read: the read API; admin: destructive operations such as erasing an end user.
SCOPES = frozenset({"ingest", "read", "admin"})
_LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class TokenInfo:
    token_pk: int
    project_pk: int
    project_name: str
    scopes: frozenset[str]
    last_used_at: datetime | None
    pii_scrubbing: bool = True
    # People's names and places too (enrich/names.py: an optional extra), only with pii_scrubbing.
    pii_names: bool = False


@dataclass(frozen=True)
class TokenRow:
    pk: int
    prefix: str
    project: str
    scopes: str
    label: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def parse_scopes(raw: str | list[str] | tuple[str, ...]) -> frozenset[str]:
    parts = raw.split(",") if isinstance(raw, str) else list(raw)
    scopes = frozenset(p.strip() for p in parts if p.strip())
    unknown = scopes - SCOPES
    if not scopes or unknown:
        raise ValueError(f"scopes must be a comma-separated subset of {sorted(SCOPES)}, got {raw!r}")
    return scopes


def get_project_pk(conn: Connection, name: str) -> int | None:
    return conn.execute(select(project.c.pk).where(project.c.name == name)).scalar()


def project_name(conn: Connection, pk: int) -> str | None:
    return conn.execute(select(project.c.name).where(project.c.pk == pk)).scalar()


def ensure_project(conn: Connection, name: str) -> tuple[int, bool]:
    """The project's key, creating the project if needed; the flag says whether it was created."""
    name = name.strip()
    if not name or len(name) > 128:
        raise ValueError("project name must be 1 to 128 characters")
    existing = get_project_pk(conn, name)
    if existing is not None:
        return existing, False
    pk = conn.execute(
        insert(project).values(name=name, created_at=utcnow(), settings={}).returning(project.c.pk)
    ).scalar_one()
    return pk, True


def create_token(
    conn: Connection, project_pk: int, scopes: frozenset[str], label: str | None = None
) -> tuple[str, int]:
    """Make a token; returns (the plaintext, shown once, and its key)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    pk = conn.execute(
        insert(api_token)
        .values(
            project_pk=project_pk,
            token_hash=hash_token(token),
            prefix=token[:11],
            scopes=",".join(sorted(scopes)),
            label=label,
            created_at=utcnow(),
        )
        .returning(api_token.c.pk)
    ).scalar_one()
    return token, pk


def authenticate(conn: Connection, token: str) -> TokenInfo | None:
    """The live token matching ``token``, or None. Revocation takes effect on the next request."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        return None
    digest = hash_token(token)
    sql = Statements(conn)
    # Every API request runs this: through the driver, as SQLAlchemy's statement building cost more
    # than the index probe itself (one-conversation requests, bench/README.md).
    rows = sql.execute(
        "SELECT t.pk, t.token_hash, t.project_pk, t.scopes, t.last_used_at, p.name, p.settings"
        " FROM api_token t JOIN project p ON p.pk = t.project_pk"
        f" WHERE t.token_hash = {sql.mark} AND t.revoked_at IS NULL",
        (digest,),
    )
    row = rows[0] if rows else None
    # The lookup is by hash (an index probe); compare again in constant time for good measure.
    if row is None or not hmac.compare_digest(row[1], digest):
        return None
    token_pk, _, project_pk, scopes, last_used_at, name, settings = row
    settings = sql.read_json(settings) or {}
    return TokenInfo(
        token_pk=token_pk,
        project_pk=project_pk,
        project_name=name,
        scopes=frozenset(scopes.split(",")),
        last_used_at=sql.read_timestamp(last_used_at),
        pii_scrubbing=bool(settings.get("pii_scrubbing", True)),
        pii_names=bool(settings.get("pii_names", False)),
    )


def needs_last_used_update(info: TokenInfo) -> bool:
    return info.last_used_at is None or utcnow() - info.last_used_at > _LAST_USED_RESOLUTION


def touch_token(conn: Connection, token_pk: int) -> None:
    conn.execute(update(api_token).where(api_token.c.pk == token_pk).values(last_used_at=utcnow()))


def list_tokens(conn: Connection, project_name: str | None = None) -> list[TokenRow]:
    query = (
        select(
            api_token.c.pk,
            api_token.c.prefix,
            project.c.name.label("project"),
            api_token.c.scopes,
            api_token.c.label,
            api_token.c.created_at,
            api_token.c.last_used_at,
            api_token.c.revoked_at,
        )
        .join(project, project.c.pk == api_token.c.project_pk)
        .order_by(api_token.c.pk)
    )
    if project_name is not None:
        query = query.where(project.c.name == project_name)
    return [TokenRow(**row._mapping) for row in conn.execute(query)]


def revoke_token(conn: Connection, prefix_or_pk: str) -> int:
    """Revoke the live token(s) whose prefix (or key) is given; returns how many were revoked."""
    condition = api_token.c.pk == int(prefix_or_pk) if prefix_or_pk.isdigit() else api_token.c.prefix == prefix_or_pk
    result = conn.execute(
        update(api_token).where(condition, api_token.c.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    return result.rowcount


def set_project_setting(conn: Connection, name: str, key: str, value: object) -> bool:
    """Set one key of a project's settings; False if there is no such project."""
    row = conn.execute(select(project.c.pk, project.c.settings).where(project.c.name == name)).first()
    if row is None:
        return False
    conn.execute(update(project).where(project.c.pk == row.pk).values(settings={**(row.settings or {}), key: value}))
    return True


def revoke_project_token(conn: Connection, project_pk: int, token_pk: int, now: datetime) -> bool:
    """Revoke one live token of this project (a token of another project is left alone)."""
    return bool(
        conn.execute(
            update(api_token)
            .where(api_token.c.pk == token_pk, api_token.c.project_pk == project_pk, api_token.c.revoked_at.is_(None))
            .values(revoked_at=now)
        ).rowcount
    )


def settings_of(conn: Connection, project_pk: int) -> dict:
    return dict(conn.execute(select(project.c.settings).where(project.c.pk == project_pk)).scalar() or {})


def llm_settings(conn: Connection) -> dict[int, dict]:
    """The LLM provider each project configured on its settings page (projects without one are absent)."""
    rows = conn.execute(select(project.c.pk, project.c.settings))
    return {pk: dict(s["llm"]) for pk, s in rows if isinstance(s, dict) and isinstance(s.get("llm"), dict)}


class OptionalFeature(Protocol):
    enabled: bool


F = TypeVar("F", bound=OptionalFeature)


def turned_on(conn: Connection, read: Callable[[dict], F]) -> dict[int, F]:
    """The projects whose settings, as ``read`` understands them (malformed: off), turn a feature on."""
    found = {}
    for pk, settings in conn.execute(select(project.c.pk, project.c.settings)):
        own = read(settings if isinstance(settings, dict) else {})
        if own.enabled:
            found[pk] = own
    return found


def retention_days(conn: Connection) -> dict[int, int]:
    """Projects that keep conversations for a limited number of days, and that number."""
    rows = conn.execute(select(project.c.pk, project.c.settings))
    return {
        pk: int(s["retention_days"])
        for pk, s in rows
        if isinstance(s, dict) and isinstance(s.get("retention_days"), int) and s["retention_days"] > 0
    }


def all_project_pks(conn: Connection) -> list[int]:
    return list(conn.execute(select(project.c.pk).order_by(project.c.pk)).scalars())
