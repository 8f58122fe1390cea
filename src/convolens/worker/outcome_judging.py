"""The worker's LLM outcome judge step, run when the worker is idle (a request may take seconds): for each
project that chose the judge and has a provider, take a batch of conversations waiting for a verdict
(store/outcome_judge.py), within the project's daily cap, send them in ONE request
(enrich/outcome_judge.py) outside any transaction, and save the verdicts. No provider: nothing is sent,
the offline outcome stays."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from convolens.enrich import outcome_judge as asking
from convolens.enrich.llm import LlmJudge
from convolens.store import enrichment, outcome_judge, rollups
from convolens.store.db import Database
from convolens.store.outcome_judge import JudgeSettings
from convolens.timeutil import utcnow

log = logging.getLogger("convolens.worker")


class OutcomeJudging:
    def __init__(
        self,
        db: Database,
        judge_for: Callable[[int], LlmJudge | None],
        *,
        settle: timedelta = timedelta(minutes=2),
        lease: timedelta = timedelta(minutes=5),
        refresh_seconds: float = 30.0,
    ) -> None:
        self.db = db
        self.judge_for = judge_for
        self.settle = settle  # a conversation is judged once its last message is this old
        self.lease = lease  # a taken conversation whose worker died is taken again after this
        self.refresh_seconds = refresh_seconds
        self._loaded_at = float("-inf")
        self._settings: dict[int, JudgeSettings] = {}

    def settings(self) -> dict[int, JudgeSettings]:
        if time.monotonic() - self._loaded_at > self.refresh_seconds:
            try:
                with self.db.reader() as conn:
                    self._settings = outcome_judge.enabled_projects(conn)
            except Exception:  # keep the last known settings; the database may be briefly away
                log.warning("could not read the projects' outcome judge settings")
            self._loaded_at = time.monotonic()
        return self._settings

    def __call__(self) -> int:
        """One batch for each project with work; returns how many conversations were taken (sent, or
        refused by the outbound guard: either way they count against the day's cap)."""
        sent = 0
        for project_pk, own in self.settings().items():
            llm = self.judge_for(project_pk)
            if llm is not None:  # no provider: nothing is sent anywhere
                sent += self._project(llm, project_pk, own)
        return sent

    def _project(self, llm: LlmJudge, project_pk: int, own: JudgeSettings) -> int:
        day = rollups.day_of(utcnow())
        with self.db.reader() as conn:
            left = outcome_judge.remaining(conn, project_pk, day, own.daily_cap)
        if not left:
            return 0
        with self.db.writer() as conn:
            now = utcnow()
            taken = outcome_judge.take(
                conn, project_pk, now, limit=min(asking.BATCH, left), settle=self.settle, lease=self.lease
            )
            granted = outcome_judge.reserve(conn, project_pk, day, len(taken), own.daily_cap)
            outcome_judge.release(conn, taken[granted:])  # another worker took the rest of the day's cap
            taken = taken[:granted]
        if not taken:
            return 0
        with self.db.reader() as conn:
            transcripts = enrichment.transcripts(conn, [t.pk for t in taken])
        verdicts = asking.judge(llm, transcripts) or {}  # the provider is called outside any transaction
        with self.db.writer() as conn:
            saved = outcome_judge.save(conn, taken, verdicts, utcnow())
        log.info("project %d: the LLM judge gave %d of %d conversations a verdict", project_pk, saved, len(taken))
        return len(taken)
