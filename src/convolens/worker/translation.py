"""The worker's translation step: between enriching a claimed batch and saving it (so under the batch's
lease, like LLM topics), the messages whose detected language is not their project's get a translation
into it, where the project turned translation on and has a provider. The cache is read first; what it
lacks is sent only within the project's daily cap, each distinct text once."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from convolens.enrich import translate
from convolens.enrich.llm import LlmJudge
from convolens.store import rollups, translations
from convolens.store.db import Database
from convolens.store.enrichment import EnrichmentResult, PendingMessage
from convolens.store.translations import TranslationSettings
from convolens.timeutil import utcnow

log = logging.getLogger("convolens.worker")

# Whose words a reader needs in their own language: the users' and the replies they got (not tool calls,
# system prompts or events).
ROLES = ("user", "assistant")


class TranslationStep:
    def __init__(
        self,
        db: Database,
        judge_for: Callable[[int], LlmJudge | None],
        budget_seconds: float = 30.0,
        refresh_seconds: float = 30.0,
    ) -> None:
        self.db = db
        self.judge_for = judge_for
        # No request starts later than this after the step began: the batch's lease must outlast it.
        self.budget_seconds = budget_seconds
        self.refresh_seconds = refresh_seconds
        self._loaded_at = float("-inf")
        self._settings: dict[int, TranslationSettings] = {}

    def settings(self) -> dict[int, TranslationSettings]:
        if time.monotonic() - self._loaded_at > self.refresh_seconds:
            try:
                with self.db.reader() as conn:
                    self._settings = translations.enabled_projects(conn)
            except Exception:  # keep the last known settings; the database may be briefly away
                log.warning("could not read the projects' translation settings")
            self._loaded_at = time.monotonic()
        return self._settings

    def __call__(self, claimed: list[PendingMessage], results: list[EnrichmentResult]) -> list[EnrichmentResult]:
        """``results`` with ``translation`` filled where it applies."""
        enabled = self.settings()
        if not enabled:
            return results
        by_pk = {m.pk: m for m in claimed}
        wanted: dict[int, list[tuple[int, str]]] = {}  # project → (message key, text)
        for r in results:
            m = by_pk.get(r.pk)
            own = enabled.get(m.project_pk) if m is not None else None
            if m is None or own is None or not r.language or r.language == own.language:
                continue
            if m.role in ROLES and m.kind == "message" and m.content.strip():
                wanted.setdefault(m.project_pk, []).append((m.pk, m.content))
        found: dict[int, str] = {}
        deadline = time.monotonic() + self.budget_seconds
        for project_pk, items in wanted.items():
            judge = self.judge_for(project_pk)
            if judge is not None:  # no provider: nothing is sent anywhere
                found.update(self._project(judge, project_pk, enabled[project_pk], items, deadline))
        if not found:
            return results
        return [dataclasses.replace(r, translation=found[r.pk]) if r.pk in found else r for r in results]

    def _project(
        self,
        judge: LlmJudge,
        project_pk: int,
        own: TranslationSettings,
        items: list[tuple[int, str]],
        deadline: float,
    ) -> dict[int, str]:
        hashes = {pk: translations.text_hash(text) for pk, text in items}
        texts = {hashes[pk]: text for pk, text in items}  # each distinct text once
        with self.db.reader() as conn:
            known = translations.cached(conn, project_pk, own.language, texts)
        missing = [h for h in texts if h not in known]
        if missing:
            day = rollups.day_of(utcnow())
            with self.db.writer() as conn:
                granted = translations.reserve(conn, project_pk, day, len(missing), own.daily_cap)
            if granted < len(missing):
                log.info(
                    "project %d: daily translation cap reached, %d texts left untranslated",
                    project_pk,
                    len(missing) - granted,
                )
            sent = missing[:granted]
            # The provider is called outside any transaction (it may take seconds).
            answers = translate.translate(judge, [texts[h] for h in sent], own.language, deadline)
            fresh = {h: a for h, a in zip(sent, answers, strict=True) if a is not None}
            if fresh:
                with self.db.writer() as conn:
                    translations.remember(conn, project_pk, own.language, fresh, utcnow())
            known.update(fresh)
        return {pk: known[h] for pk, h in hashes.items() if h in known}
