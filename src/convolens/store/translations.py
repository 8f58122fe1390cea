"""Translation's bookkeeping: the cache of translated texts (by project, SHA-256 of the text and target
language, so a text users repeat is sent once), each project's daily count of texts sent (the cap holds
across any number of workers), and the project settings that turn translation on."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, select

from convolens.store import daily_allowance, projects
from convolens.store.dialect import insert_ignore
from convolens.store.tables import translation_cache, translation_usage

DEFAULT_LANGUAGE = "en"
DEFAULT_DAILY_CAP = 1000  # texts sent to the provider per project per UTC day
MAX_DAILY_CAP = 1_000_000
LANGUAGE_CODE = re.compile(r"[a-z]{2}")  # ISO 639-1, as enrich/language.py detects


@dataclass(frozen=True)
class TranslationSettings:
    language: str = DEFAULT_LANGUAGE
    enabled: bool = False
    daily_cap: int = DEFAULT_DAILY_CAP


def settings_from(settings: dict) -> TranslationSettings:
    """A project's translation settings from its settings object; anything malformed is the default."""
    language = settings.get("language")
    own = settings.get("translation") if isinstance(settings.get("translation"), dict) else {}
    return TranslationSettings(
        language=language if isinstance(language, str) and LANGUAGE_CODE.fullmatch(language) else DEFAULT_LANGUAGE,
        enabled=own.get("enabled") is True,
        daily_cap=daily_allowance.cap_from(own.get("daily_cap"), MAX_DAILY_CAP, DEFAULT_DAILY_CAP),
    )


def enabled_projects(conn: Connection) -> dict[int, TranslationSettings]:
    """The projects that turned translation on, with their settings."""
    return projects.turned_on(conn, settings_from)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def cached(conn: Connection, project_pk: int, target: str, hashes: Iterable[str]) -> dict[str, str]:
    wanted = list(set(hashes))
    found: dict[str, str] = {}
    for start in range(0, len(wanted), 500):
        rows = conn.execute(
            select(translation_cache.c.text_hash, translation_cache.c.translation).where(
                translation_cache.c.project_pk == project_pk,
                translation_cache.c.target_language == target,
                translation_cache.c.text_hash.in_(wanted[start : start + 500]),
            )
        )
        found.update({h: t for h, t in rows})
    return found


def remember(conn: Connection, project_pk: int, target: str, translated: dict[str, str], now: datetime) -> None:
    if not translated:
        return
    rows = [
        {"project_pk": project_pk, "text_hash": h, "target_language": target, "translation": t, "created_at": now}
        for h, t in translated.items()
    ]
    conn.execute(insert_ignore(conn, translation_cache, ["project_pk", "text_hash", "target_language"]), rows)


def reserve(conn: Connection, project_pk: int, day: str, wanted: int, cap: int) -> int:
    """Take up to ``wanted`` of the project's ``cap`` texts for ``day``; returns how many it may send.
    Run in a write transaction: the row is locked (PostgreSQL) or the database is (SQLite) until it ends,
    so two workers never both take the last of a day's allowance."""
    return daily_allowance.reserve(conn, translation_usage, translation_usage.c.texts, project_pk, day, wanted, cap)


def used_today(conn: Connection, project_pk: int, day: str) -> int:
    return daily_allowance.used(conn, translation_usage, translation_usage.c.texts, project_pk, day)


def forget(conn: Connection, project_pk: int, texts: Iterable[str]) -> int:
    """Drop the cached translations of these texts (an erased end user's messages): a copy of what they
    wrote must not outlive the messages themselves."""
    hashes = sorted({text_hash(t) for t in texts})
    gone = 0
    for start in range(0, len(hashes), 500):
        gone += conn.execute(
            delete(translation_cache).where(
                translation_cache.c.project_pk == project_pk,
                translation_cache.c.text_hash.in_(hashes[start : start + 500]),
            )
        ).rowcount
    return gone


def prune(conn: Connection, project_pk: int, cutoff: datetime) -> int:
    """Cached translations made before ``cutoff`` (the project's retention): the messages they came from
    are gone or going, and a later message with the same text is only translated again."""
    return conn.execute(
        delete(translation_cache).where(
            translation_cache.c.project_pk == project_pk, translation_cache.c.created_at < cutoff
        )
    ).rowcount
