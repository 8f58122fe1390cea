"""The enrichment worker: claim a batch, enrich it, save it, repeat; between batches, apply new or
changed topics to the messages stored before them (backfills) and redo the rollups of changed days;
evaluate the items of evaluation runs (evaluating.py); when idle, apply retention, decide alert rules and
send their webhooks, and recompute suggested topics.

It runs in a child process of ``convolens serve`` on the embedded default (worker/process.py), and as
``convolens worker`` processes (any number) against PostgreSQL.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from convolens.config import LlmSettings, SmtpSettings
from convolens.enrich import embedding, outcomes, pipeline, suggest
from convolens.enrich import topics as topic_matching
from convolens.enrich.llm import Judges
from convolens.enrich.topics import ProjectTopics, TopicMatcher
from convolens.outbound import OutboundPolicy
from convolens.store import (
    alerts,
    enrichment,
    erasure,
    projects,
    retention,
    rollups,
    suggestions,
    topic_newness,
    topics,
    translations,
    user_figures,
)
from convolens.store.db import Database, DatabaseUnavailable
from convolens.timeutil import utcnow
from convolens.worker import alerting
from convolens.worker import digest as weekly_digest
from convolens.worker.evaluating import EvaluationRuns
from convolens.worker.low_priority import Interrupted, at_normal_priority
from convolens.worker.outcome_judging import OutcomeJudging
from convolens.worker.translation import TranslationStep

log = logging.getLogger("convolens.worker")


# The outcome rules the worker applies to each conversation it saves messages of.
OUTCOMES = enrichment.Outcomes(outcomes.assess_many, outcomes.VERSION, reassess=outcomes.reassess_many)


class TopicCache:
    """Compiled topics of every project, recompiled only when a topic changes (semantic topics embed
    their examples when compiled, which is worth doing once, not once per batch). A project's keyword
    topics are one automaton, rebuilt only when one of its topics moves its ``updated_at``."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[int, object], TopicMatcher] = {}
        self._projects: dict[int, tuple[tuple[tuple[int, object], ...], ProjectTopics]] = {}
        self._alone: dict[tuple[int, object], ProjectTopics] = {}

    def by_project(self, rows: list[topics.TopicRow]) -> dict[int, ProjectTopics]:
        fresh: dict[tuple[int, object], TopicMatcher] = {}
        grouped: dict[int, list[topics.TopicRow]] = {}
        for row in rows:
            fresh[(row.pk, row.updated_at)] = self.matcher(row)
            grouped.setdefault(row.project_pk, []).append(row)
        self._compiled = fresh
        projects: dict[int, tuple[tuple[tuple[int, object], ...], ProjectTopics]] = {}
        for project_pk, project_rows in grouped.items():
            version = tuple((row.pk, row.updated_at) for row in project_rows)
            cached = self._projects.get(project_pk)
            if cached is None or cached[0] != version:
                cached = (version, ProjectTopics.of([fresh[key] for key in version]))
            projects[project_pk] = cached
        self._projects = projects
        return {project_pk: compiled for project_pk, (_, compiled) in projects.items()}

    def matcher(self, row: topics.TopicRow) -> TopicMatcher:
        """One topic, compiled once per definition (a backfill takes many steps over the same topic)."""
        key = (row.pk, row.updated_at)
        if key not in self._compiled:
            self._compiled[key] = self.compile(row)
        return self._compiled[key]

    def alone(self, row: topics.TopicRow) -> ProjectTopics:
        """One topic by itself, as its backfill matches it."""
        key = (row.pk, row.updated_at)
        if key not in self._alone:
            self._alone = {key: ProjectTopics.of([self.matcher(row)])}  # a backfill works on one topic at a time
        return self._alone[key]

    @staticmethod
    def compile(row: topics.TopicRow) -> TopicMatcher:
        centroid = embedding.from_bytes(row.centroid) if row.centroid else None
        return topic_matching.compile_topic(row.pk, row.name, row.kind, row.definition, centroid)


class Worker:
    def __init__(
        self,
        db: Database,
        *,
        batch_size: int = 256,
        backfill_batch: int = 1000,
        lease: timedelta = timedelta(seconds=60),
        idle_seconds: float = 0.5,
        suggest_timing: suggestions.Timing | None = None,
        rollup_settle: timedelta = timedelta(seconds=2),
        rollup_rest: float = 5.0,
        retention_every: timedelta = timedelta(hours=1),
        alerts_every: timedelta = timedelta(seconds=30),
        llm: LlmSettings | None = None,
        outbound: OutboundPolicy | None = None,
        smtp: SmtpSettings | None = None,
        public_url: str = "http://localhost:8000",
        name: str | None = None,
        judge_settle: timedelta = timedelta(minutes=2),
        heavy: Callable[..., Any] = at_normal_priority,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.db = db
        # Runs the CPU-heavy steps (worker/low_priority.py): the embedded worker's runs them below the
        # priority of its own thread, which holds SQLite's write lock in its transactions.
        self.heavy = heavy
        self.batch_size = batch_size
        self.backfill_batch_size = backfill_batch
        self.lease = lease
        self.idle_seconds = idle_seconds
        self.suggest_timing = suggest_timing or suggestions.Timing()
        self.rollup_settle = rollup_settle
        self.rollup_rest = rollup_rest
        self.retention_every = retention_every
        self.retention_due_at = utcnow()
        # Alert windows are decided minutes after they end: looking twice a minute is soon enough.
        self.alerts_every = alerts_every
        self.alerts_due_at = utcnow()
        self.owner = name or f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # Shared with ``heavy`` in the embedded worker, whose steps end early when it is set.
        self.stop_event = stop_event or threading.Event()
        self.enriched = 0
        self.topic_cache = TopicCache()
        # Where the next turn among projects begins (claims and backfills take projects in turn).
        self.claim_start = 0
        self.backfill_after = 0
        self.outbound = outbound or OutboundPolicy()
        self.smtp = smtp or SmtpSettings()
        self.public_url = public_url
        self.judges = Judges(llm, self._llm_settings, policy=outbound)
        self.translate = TranslationStep(db, self.judges.for_project, budget_seconds=lease.total_seconds() / 2)
        self.judge_outcomes = OutcomeJudging(db, self.judges.for_project, settle=judge_settle)
        self.evaluate_runs = EvaluationRuns(db, self.judges.for_project, self.owner, lease, policy=self.outbound)

    def _matchers(self) -> dict[int, ProjectTopics]:
        with self.db.reader() as conn:
            return self.topic_cache.by_project(topics.matched_topics(conn))

    def run_once(self) -> list[int]:
        """One batch: returns the keys of the messages this worker enriched."""
        with self.db.writer() as conn:
            claimed = enrichment.claim(conn, self.owner, self.batch_size, self.lease, utcnow(), self.claim_start)
        if not claimed:
            return []
        self.claim_start = max(m.project_pk for m in claimed)
        matchers = self._matchers()  # read once: a failed batch is retried one message at a time with them
        try:
            try:
                saved = self._enrich(claimed, matchers)
            except (DatabaseUnavailable, Interrupted):
                raise
            except Exception:
                # One bad message must not hold its whole batch, nor its project's queue: each message is tried
                # on its own, the ones that fail alone are handed back, and set aside after MAX_ATTEMPTS claims.
                log.exception(
                    "worker %s: a batch of %d failed; trying its messages one at a time", self.owner, len(claimed)
                )
                saved = self._enrich_one_at_a_time(claimed, matchers)
        except Interrupted:
            # A stop in the middle of the batch: what is unsaved goes back, for the next worker to take at once
            # instead of after the lease, and without counting an attempt against its messages.
            with self.db.writer() as conn:
                enrichment.release(conn, self.owner, [m.pk for m in claimed], attempted=False)
            raise
        self.enriched += len(saved)
        log.debug("worker %s: enriched %d messages (of %d claimed)", self.owner, len(saved), len(claimed))
        return saved

    def _enrich_one_at_a_time(
        self, claimed: list[enrichment.PendingMessage], matchers: dict[int, ProjectTopics]
    ) -> list[int]:
        saved: list[int] = []
        failed: list[int] = []
        for one in claimed:
            try:
                saved += self._enrich([one], matchers)
            except (DatabaseUnavailable, Interrupted):
                raise
            except Exception:
                log.exception("worker %s: message %s failed on its own (attempt %d)", self.owner, one.pk, one.attempts)
                failed.append(one.pk)
        if failed:
            with self.db.writer() as conn:
                enrichment.release(conn, self.owner, failed)
        return saved

    def _enrich(self, claimed: list[enrichment.PendingMessage], matchers: dict[int, ProjectTopics]) -> list[int]:
        """Enrich and save claimed messages; returns the keys saved (a lost lease saves nothing)."""
        results = self.heavy(pipeline.enrich, claimed, matchers, self.judges.for_project)
        results = self.translate(claimed, results)
        assessed = self.heavy(self._assess, results)
        # Saved in parts of bounded text, each its own transaction: on SQLite the API's writes wait for the
        # lock a save holds. Each part stores its conversations' outcomes as assessed for the whole claim.
        lengths = {m.pk: len(m.content or "") for m in claimed}
        claimed_pks = [r.pk for r in results]
        saved: list[int] = []
        lost: set[int] = set()
        for part in enrichment.parts(results, lengths):
            some = [results[i] for i in part]
            with self.db.writer() as conn:
                done = enrichment.save(
                    conn, self.owner, pipeline.VERSION, some, OUTCOMES, assessed, claimed=claimed_pks, lost=lost
                )
            saved += done
            lost |= {r.pk for r in some} - set(done)
        return saved

    def _assess(self, results: list[enrichment.EnrichmentResult]) -> enrichment.OutcomeWork:
        with self.db.snapshot() as conn:
            return enrichment.assess_outcomes(conn, results, OUTCOMES)

    def backfill_once(self) -> int:
        """Apply one topic to one batch of older messages; returns how many messages it looked at."""
        now = utcnow()
        with self.db.writer() as conn:
            row = topics.claim_backfill(conn, self.owner, self.lease, now, self.backfill_after)
        if row is None:
            return 0
        self.backfill_after = row.project_pk
        # An LLM topic costs a model call a message: small steps, so the lease is renewed often.
        size = self.backfill_batch_size if row.kind != "llm" else max(1, self.backfill_batch_size // 20)
        with self.db.reader() as conn:
            batch, cursor = topics.backfill_batch(conn, row, size)
        compiled = self.topic_cache.alone(row)
        judge = self.judges.for_project(row.project_pk)
        judged = pipeline.llm_hits(judge, [(m.pk, m.content) for m in batch], compiled)
        links = self.heavy(self._backfill_links, batch, judged, compiled)
        with self.db.writer() as conn:
            topics.save_backfill(conn, self.owner, row, links, cursor, utcnow(), self.lease)
        return max(1, len(batch))

    @staticmethod
    def _backfill_links(batch: list, judged: dict, compiled: TopicMatcher) -> list[dict]:
        links = []
        for m in batch:
            vector = embedding.from_bytes(m.vector) if m.vector else None
            for hit in [*judged.get(m.pk, []), *topic_matching.match(m.content, vector, compiled)]:
                links.append(
                    {
                        "message_pk": m.pk,
                        "conversation_pk": m.conversation_pk,
                        "created_at": m.created_at,
                        "score": hit.score,
                        "reason": hit.reason,
                    }
                )
        return links

    def rollup_once(self) -> int:
        """Recompute the rollups of a few changed days; returns how many."""
        with self.db.writer() as conn:
            due = rollups.claim(
                conn, self.owner, utcnow(), settle=self.rollup_settle, lease=self.lease, rest=self.rollup_rest
            )
        for day in due:
            started = time.perf_counter()
            # Reading a busy day back is seconds of CPU at a million messages, redone every few seconds
            # while a burst lands on it: below the API's priority, as the other heavy steps.
            result, users, newness = self.heavy(self._compute_day, day)
            with self.db.writer() as conn:
                if rollups.store(conn, self.owner, result, utcnow(), time.perf_counter() - started):
                    user_figures.apply(conn, day.project_pk, day.day, users)
                    topic_newness.replace_day(conn, day.project_pk, day.day, newness)
        return len(due)

    def _compute_day(
        self, day: rollups.DueDay
    ) -> tuple[rollups.DayRollup, dict[int, user_figures.Figures], topic_newness.Counts]:
        with self.db.snapshot() as conn:
            return (
                rollups.compute(conn, day),
                user_figures.day_figures(conn, day.project_pk, day.day),
                topic_newness.count_day(conn, day.project_pk, day.day),
            )

    def retention_once(self, max_batches: int = 10) -> int:
        """Apply the projects' retention settings, a few bounded batches at a time (at most hourly once a
        project has nothing left to prune); returns how many conversations went."""
        now = utcnow()
        if now < self.retention_due_at:
            return 0
        with self.db.reader() as conn:
            policies = projects.retention_days(conn)
        removed = 0
        for project_pk, days in policies.items():
            cutoff = now - timedelta(days=days)
            for _ in range(max_batches):
                with self.db.writer() as conn:
                    pruned = retention.prune_batch(conn, project_pk, cutoff, now)
                removed += pruned.conversations
                if not pruned.conversations:
                    break
            with self.db.writer() as conn:
                translations.prune(conn, project_pk, cutoff)
        with self.db.writer() as conn:
            # Old decided alert windows, whatever the projects' retention (store/alerts.py KEEP_*).
            alerts.prune(conn, now)
        if not removed:
            self.retention_due_at = now + self.retention_every
        else:
            log.info("worker %s: retention removed %d conversations", self.owner, removed)
            erasure.wipe_deleted(self.db)
        return removed

    def alerts_once(self) -> int:
        """Decide the alert rules' finished windows, record the weekly digests owed, and send what is due
        (webhooks, e-mails; at most every ``alerts_every`` while there is nothing to do); returns how much
        was done."""
        now = utcnow()
        if now < self.alerts_due_at:
            return 0
        decided = alerting.evaluate_due(self.db, now) + weekly_digest.record_due(self.db, now)
        smtp, public_url = self.smtp, self.public_url
        done = decided + alerting.deliver_due(
            self.db, self.owner, utcnow(), self.outbound, smtp=smtp, public_url=public_url
        )
        done += weekly_digest.deliver_due(
            self.db, self.owner, utcnow(), self.outbound, smtp=smtp, public_url=public_url
        )
        if not done:
            self.alerts_due_at = now + self.alerts_every
        return done

    def suggest_once(self) -> dict[str, int] | None:
        """Recompute one due project's suggested topics; None when no project is due."""
        project_pk = self._claim_suggestions()
        if project_pk is None:
            return None
        with self.db.reader() as conn:
            pool = suggestions.read_pool(conn, project_pk)
        counts: dict[str, int] = {"messages": pool.size}
        enough = pool.size >= self.suggest_timing.min_messages
        # Clustering and naming happen outside any transaction; the pool is read again a chunk at a time.
        clusters = (
            self.heavy(
                suggest.cluster_pool,
                pool.sample,
                pool.size,
                lambda: suggestions.pool_chunks(self.db.reader, pool),
                should_stop=self.stop_event.is_set,
            )
            if enough
            else []
        )
        with self.db.reader() as conn:
            conversations = suggestions.conversation_ids(
                conn, sorted({int(pk) for c in clusters for pk in pool.pks[c.members[:50]]})
            )
        found = [
            suggestions.Suggestion(
                name=c.name,
                keywords=c.keywords,
                phrases=c.phrases,
                centroid=c.centroid,
                conversation_ids=[
                    conversations[int(pk)] for pk in pool.pks[c.members[:50]] if int(pk) in conversations
                ],
                size=len(c.members),
                threshold=c.threshold,
            )
            for c in clusters
        ]
        # The upper level of the map: the clusters grouped into a handful of named categories.
        grouped = [
            suggestions.CategorySuggestion(c.name, c.centroid, c.topics)
            for c in (
                self.heavy(suggest.categorise_pool, clusters, pool.sample)
                if clusters and not self.stop_event.is_set()
                else []
            )
        ]
        if self.stop_event.is_set():
            return None  # interrupted: the earlier suggestions stay, and the run's lease lapses for another worker
        counts["llm_named"] = self._llm_names(project_pk, found)
        with self.db.writer() as conn:
            if enough:
                counts.update(suggestions.replace(conn, project_pk, found, utcnow(), grouped))
            suggestions.finish_run(conn, self.owner, project_pk, utcnow(), pool)
        log.info("worker %s: suggested topics of project %s: %s", self.owner, project_pk, counts)
        return counts

    def _llm_names(self, project_pk: int, found: list[suggestions.Suggestion]) -> int:
        """Where the project has an LLM provider: name the new clusters (and kept ones it has not named
        yet) in ONE request, at most LLM_CLUSTERS_PER_CALL of them, the largest first, within the daily cap.
        A stable cluster keeps the name it was given, so a run where nothing changed asks nothing. The
        offline names stay when there is no provider or the request fails. Returns how many were named."""
        judge = self.judges.for_project(project_pk) if found else None
        if judge is None:
            return 0
        with self.db.reader() as conn:
            wanted = suggestions.needing_names(conn, project_pk, found)[: suggestions.LLM_CLUSTERS_PER_CALL]
        if not wanted:
            return 0
        with self.db.writer() as conn:
            if not suggestions.take_llm_call(conn, project_pk, utcnow().date().isoformat()):
                log.info("worker %s: project %s reached its daily LLM naming cap", self.owner, project_pk)
                return 0
        names = judge.name_clusters([(found[i].phrases, found[i].keywords) for i in wanted]) or []
        named = 0
        for i, given in zip(wanted, names, strict=False):
            if given is not None:
                found[i].name, found[i].description, found[i].named_by_llm = given.name, given.description, True
                named += 1
        return named

    def _claim_suggestions(self) -> int | None:
        """Lease one project whose suggestions are due. The counts that decide it run outside the write
        transaction (on SQLite it would hold up every ingest)."""
        now = utcnow()
        with self.db.writer() as conn:
            candidates = suggestions.to_check(conn, self.suggest_timing, now)
        if not candidates:
            return None
        with self.db.reader() as conn:
            due = [c.project_pk for c in candidates if suggestions.is_due(conn, c, self.suggest_timing, now)]
        for project_pk in due:
            with self.db.writer() as conn:
                if suggestions.lease_run(conn, self.owner, project_pk, timedelta(minutes=10), utcnow()):
                    return project_pk
        return None

    def _llm_settings(self) -> dict[int, dict]:
        with self.db.reader() as conn:
            return projects.llm_settings(conn)

    def drain(self) -> int:
        """Run until no message is pending, no backfill is left and no changed day has settled (tests and
        `convolens reenrich`)."""
        done = 0
        while True:
            step = len(self.run_once()) + self.backfill_once() + self.rollup_once()
            if not step:
                return done
            done += step

    def run(self) -> None:
        log.info("worker %s started", self.owner)
        while not self.stop_event.is_set():
            try:
                # Evaluation runs between batches, not only when idle: a run someone waits for (a CI
                # job) must not wait for a backlog of enrichment to clear.
                done = len(self.run_once()) + self.backfill_once() + self.rollup_once() + self.evaluate_runs()
            except Interrupted:
                break  # stopping: what was claimed went back (a backfill's lease lapses)
            except DatabaseUnavailable:
                log.warning("worker %s: database unavailable, retrying", self.owner)
                done = 0
                self.stop_event.wait(2.0)
            except Exception:
                log.exception("worker %s: batch failed; its lease will expire and it will be retried", self.owner)
                done = 0
                self.stop_event.wait(2.0)
            if not done:
                try:  # only when idle: clustering a large project takes a minute
                    if (
                        self.retention_once()
                        or self.judge_outcomes()
                        or self.alerts_once()
                        or self.suggest_once() is not None
                    ):
                        continue
                except Interrupted:
                    break  # stopping mid-clustering: the earlier suggestions stay, the run's lease lapses
                except Exception:
                    log.exception(
                        "worker %s: idle work (retention, outcome judge, alerts, suggested topics) failed; retried",
                        self.owner,
                    )
                self.stop_event.wait(self.idle_seconds)
        self.judges.close()
        log.info("worker %s stopped after %d messages", self.owner, self.enriched)

    def stop(self) -> None:
        self.stop_event.set()
