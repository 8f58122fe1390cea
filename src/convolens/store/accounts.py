"""Dashboard accounts: argon2 password hashes, a role per project, and signed-in sessions.

A session cookie carries a random token; the database keeps its SHA-256 only (like API tokens), with the
CSRF token every form of that session must send back.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, delete, func, insert, select, update

from convolens.store import passwords
from convolens.store.dialect import insert_ignore
from convolens.store.tables import account, membership, project, web_session

ROLES = ("viewer", "member", "admin")
SESSION_DAYS = 14
_hasher = PasswordHasher()
# Compared against when the e-mail is unknown, so that a wrong e-mail costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def normalize_email(email: str) -> str:
    """The one form of an e-mail that is stored, looked up and rate-limited: every spelling that signs in
    to an account maps to the same string, so no spelling gets a sign-in limit of its own."""
    return email[:320].strip().lower()


def valid_email(email: str) -> bool:
    local, at, domain = email.partition("@")
    return bool(at and local and domain and len(email) <= 254 and email.isprintable() and " " not in email)


@dataclass(frozen=True)
class Membership:
    project_pk: int
    project: str
    role: str

    def can(self, needed: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(needed)


@dataclass(frozen=True)
class Session:
    account_pk: int
    email: str
    csrf_token: str
    memberships: tuple[Membership, ...]
    # The password was chosen by someone else: nothing but the change-password page until it is replaced.
    must_change_password: bool = False

    def membership(self, project_name: str) -> Membership | None:
        return next((m for m in self.memberships if m.project == project_name), None)


def check_password(password: str, email: str) -> None:
    """ValueError (naming the password field) unless ``password`` meets the policy in passwords.py."""
    problem = passwords.problem(password, normalize_email(email))
    if problem:
        raise ValueError(problem)


def hash_password(password: str, email: str) -> str:
    """The argon2 hash of a new password for ``email``, after the policy's check (ValueError naming the
    password field). Slow on purpose: callers do it outside a write transaction."""
    check_password(password, email)
    return _hasher.hash(password)


def add_account(
    conn: Connection, email: str, password_hash: str, now: datetime, *, must_change_password: bool = False
) -> int:
    """A new account with this hash, or the existing one with that e-mail (its password left as it is)."""
    email = normalize_email(email)
    if not valid_email(email):
        raise ValueError("email: not an e-mail address")
    existing = account_pk(conn, email)
    if existing is not None:
        return existing
    return conn.execute(
        insert(account)
        .values(email=email, password_hash=password_hash, created_at=now, must_change_password=must_change_password)
        .returning(account.c.pk)
    ).scalar_one()


def create_account(
    conn: Connection, email: str, password: str, now: datetime, *, must_change_password: bool = False
) -> int:
    """``add_account`` with the password hashed here; the hash is made whether the account existed or
    not, so the call takes as long either way."""
    if not valid_email(normalize_email(email)):
        raise ValueError("email: not an e-mail address")
    password_hash = hash_password(password, email)
    return add_account(conn, email, password_hash, now, must_change_password=must_change_password)


def set_password(conn: Connection, account_pk_: int, password: str, *, must_change_password: bool = False) -> None:
    """A new password (checked against the policy); every session of the account ends."""
    email = conn.execute(select(account.c.email).where(account.c.pk == account_pk_)).scalar()
    if email is None:
        raise ValueError("no such account")
    replace_password(conn, account_pk_, hash_password(password, email), must_change_password=must_change_password)


def replace_password(
    conn: Connection, account_pk_: int, password_hash: str, *, must_change_password: bool = False
) -> None:
    """``set_password`` with a hash made beforehand (by ``hash_password``, outside the transaction)."""
    conn.execute(
        update(account)
        .where(account.c.pk == account_pk_)
        .values(password_hash=password_hash, must_change_password=must_change_password)
    )
    conn.execute(delete(web_session).where(web_session.c.account_pk == account_pk_))


def account_pk(conn: Connection, email: str) -> int | None:
    return conn.execute(select(account.c.pk).where(account.c.email == normalize_email(email))).scalar()


def set_role(conn: Connection, account_pk_: int, project_pk: int, role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    conn.execute(insert_ignore(conn, membership, ["account_pk", "project_pk"]), {
        "account_pk": account_pk_, "project_pk": project_pk, "role": role})  # fmt: skip
    conn.execute(
        update(membership)
        .where(membership.c.account_pk == account_pk_, membership.c.project_pk == project_pk)
        .values(role=role)
    )


def remove_member(conn: Connection, account_pk_: int, project_pk: int) -> bool:
    return bool(
        conn.execute(
            delete(membership).where(membership.c.account_pk == account_pk_, membership.c.project_pk == project_pk)
        ).rowcount
    )


def member_role(conn: Connection, account_pk_: int, project_pk: int) -> str | None:
    """The account's role in the project, or None if it is not a member (whether or not it exists)."""
    return conn.execute(
        select(membership.c.role).where(membership.c.account_pk == account_pk_, membership.c.project_pk == project_pk)
    ).scalar()


def members(conn: Connection, project_pk: int) -> list[tuple[int, str, str]]:
    """(account key, e-mail, role) of everyone in the project."""
    rows = conn.execute(
        select(account.c.pk, account.c.email, membership.c.role)
        .join(membership, membership.c.account_pk == account.c.pk)
        .where(membership.c.project_pk == project_pk)
        .order_by(account.c.email)
    )
    return [tuple(row) for row in rows]  # type: ignore[misc]


def admins(conn: Connection, project_pk: int) -> int:
    return conn.execute(
        select(func.count()).where(membership.c.project_pk == project_pk, membership.c.role == "admin")
    ).scalar_one()


def verify(conn: Connection, email: str, password: str) -> int | None:
    """The account key if the password is right, else None (in about the same time either way: an unknown
    e-mail is checked against a dummy hash)."""
    row = conn.execute(
        select(account.c.pk, account.c.password_hash).where(account.c.email == normalize_email(email))
    ).first()
    try:
        _hasher.verify(row.password_hash if row else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    return row.pk if row else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(conn: Connection, account_pk_: int, now: datetime) -> str:
    """A new session; returns the cookie value (shown to the browser only)."""
    token = secrets.token_urlsafe(32)
    conn.execute(
        insert(web_session).values(
            token_hash=_digest(token),
            account_pk=account_pk_,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + timedelta(days=SESSION_DAYS),
        )
    )
    conn.execute(delete(web_session).where(web_session.c.expires_at < now))
    return token


def end_session(conn: Connection, token: str) -> None:
    conn.execute(delete(web_session).where(web_session.c.token_hash == _digest(token)))


def session(conn: Connection, token: str, now: datetime) -> Session | None:
    row = conn.execute(
        select(web_session.c.account_pk, web_session.c.csrf_token, account.c.email, account.c.must_change_password)
        .join(account, account.c.pk == web_session.c.account_pk)
        .where(web_session.c.token_hash == _digest(token), web_session.c.expires_at > now)
    ).first()
    if row is None:
        return None
    projects = conn.execute(
        select(project.c.pk, project.c.name, membership.c.role)
        .join(membership, membership.c.project_pk == project.c.pk)
        .where(membership.c.account_pk == row.account_pk)
        .order_by(project.c.name)
    )
    memberships = tuple(Membership(*p) for p in projects)
    return Session(row.account_pk, row.email, row.csrf_token, memberships, bool(row.must_change_password))


def set_digest(conn: Connection, account_pk_: int, project_pk: int, on: bool) -> None:
    """A member's own choice of the project's weekly digest by e-mail."""
    conn.execute(
        update(membership)
        .where(membership.c.account_pk == account_pk_, membership.c.project_pk == project_pk)
        .values(digest=on)
    )


def digest_opted_in(conn: Connection, account_pk_: int, project_pk: int) -> bool:
    found = conn.execute(
        select(membership.c.digest).where(membership.c.account_pk == account_pk_, membership.c.project_pk == project_pk)
    ).scalar()
    return bool(found)
