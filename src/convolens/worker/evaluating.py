"""The workers' evaluation duty: lease the next item of the oldest unfinished run, evaluate it, keep
its verdicts (store/evaluations.py), for up to ``budget_seconds`` a call, so a long run shares the
worker with enrichment instead of holding it. Items are leased one at a time: an LLM-generated
response can take the provider's whole timeout, and a dead worker's item waits only one lease.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from convolens.enrich.llm import LlmJudge
from convolens.enrich.prices import price_table
from convolens.evaluations import registry
from convolens.evaluations.app_under_test import SETTING, App
from convolens.evaluations.base import Attempt, Message, Verdict
from convolens.evaluations.from_conversation import NotATurn, case_from_turn
from convolens.evaluations.run import LeaseLost, ProjectServices, evaluate_case, evaluation_json, judge
from convolens.outbound import OutboundPolicy
from convolens.store import collect_rules, evaluations, online_evals, projects
from convolens.store import conversation_reads as queries
from convolens.store.db import Database
from convolens.timeutil import utcnow

log = logging.getLogger("convolens.worker.evaluations")


class EvaluationRuns:
    def __init__(
        self,
        db: Database,
        providers: Callable[[int], LlmJudge | None],
        owner: str,
        lease: timedelta,
        budget_seconds: float = 2.0,
        prices: dict[str, tuple[float, float]] | None = None,
        policy: OutboundPolicy | None = None,
        settings_seconds: float = 10.0,
    ) -> None:
        self.db = db
        self.providers = providers
        self.owner = owner
        self.lease = lease
        self.budget_seconds = budget_seconds
        self.prices = prices if prices is not None else price_table()
        self.policy = policy or OutboundPolicy()
        self.settings_seconds = settings_seconds
        self._apps: dict[int, tuple[float, App | None]] = {}
        self.embed_every = 5.0  # seconds between looks for new test cases to embed, when there were none
        self._embed_due = 0.0
        self.collect_every = 30.0  # seconds between sweeps of the collection rules
        self.collect_settle = timedelta(minutes=10)  # a reply's rating usually comes within minutes
        self._collect_due = 0.0
        self.online_settle = timedelta(minutes=1)  # a reply's conversation may still be enriched (its topics)
        self._online_due = 0.0
        self.prune_every = 600.0  # seconds between deletions of finished runs beyond each project's newest
        self._prune_due = 0.0
        self._last_project = 0  # the project served last: the next item comes from the next one (fairness)

    def app_of(self, project_pk: int) -> App | None:
        """The project's app under test, read again at most every ``settings_seconds``."""
        known = self._apps.get(project_pk)
        if known is None or time.monotonic() - known[0] > self.settings_seconds:
            with self.db.reader() as conn:
                known = (time.monotonic(), App.of(projects.settings_of(conn, project_pk).get(SETTING)))
            self._apps[project_pk] = known
        return known[1]

    def __call__(self) -> int:
        """Embed new test cases (for coverage), then evaluate items until none is free or the budget is
        spent; returns how much was done."""
        embedded = self.embed_cases() + self.collect() + self.online() + self.prune()
        with self.db.reader() as conn:
            if not evaluations.any_open(conn, utcnow()):
                return embedded
        finished = 0
        started = time.monotonic()
        while not finished or time.monotonic() - started < self.budget_seconds:  # at least one item a call
            with self.db.writer() as conn:
                claimed = evaluations.claim(conn, self.owner, 1, self.lease, utcnow(), self._last_project)
            if not claimed:
                break
            item = claimed[0]
            self._last_project = item.project_pk
            if item.attempts > evaluations.MAX_ATTEMPTS:
                response, result = None, self._given_up(item)
            else:
                try:
                    response, result = evaluate_case(
                        {"name": item.case_name, **item.case},
                        item.set_evaluators,
                        self.providers(item.project_pk),
                        self.prices,
                        self.app_of(item.project_pk),
                        self.policy,
                        keep_alive=lambda pk=item.pk: self._renew(pk),
                    )
                except LeaseLost:
                    log.warning("evaluation item %s was taken over while it was evaluated; left to the other", item.pk)
                    continue
            with self.db.writer() as conn:
                if evaluations.finish(conn, self.owner, item.pk, response, result, utcnow()):
                    finished += 1
                else:
                    log.warning("evaluation item %s was taken over before it was saved; its result dropped", item.pk)
        return finished + embedded

    def prune(self) -> int:
        """Delete finished runs beyond each project's newest ``KEPT_FINISHED_RUNS`` (at most every
        ``prune_every``, a batch at a time); returns how many."""
        if time.monotonic() < self._prune_due:
            return 0
        with self.db.writer() as conn:
            deleted = evaluations.prune_runs(conn)
        if deleted < evaluations.PRUNE_BATCH:
            self._prune_due = time.monotonic() + self.prune_every
        return deleted

    def _renew(self, item_pk: int) -> bool:
        with self.db.writer() as conn:
            return evaluations.renew(conn, self.owner, item_pk, self.lease, utcnow())

    def embed_cases(self, limit: int = 256) -> int:
        """Embed the last user message of test cases that have no vector yet (a partial index finds them)."""
        if time.monotonic() < self._embed_due:
            return 0
        with self.db.reader() as conn:
            todo = evaluations.cases_without_vectors(conn, limit)
        if not todo:
            self._embed_due = time.monotonic() + self.embed_every
            return 0
        from convolens.enrich import embedding

        vectors = embedding.embed([text for _, text in todo])
        with self.db.writer() as conn:
            evaluations.set_vectors(
                conn, [(pk, embedding.to_bytes(v)) for (pk, _), v in zip(todo, vectors, strict=True)]
            )
        return len(todo)

    @staticmethod
    def _given_up(item: evaluations.Claimed) -> dict:
        why = f"given up after {evaluations.MAX_ATTEMPTS} attempts: the workers evaluating it stopped each time"
        specs = [*item.set_evaluators, *(item.case.get("evaluators") or [])]
        return {
            "evaluations": [evaluation_json(str(s.get("evaluator")), Verdict.inconclusive(why)) for s in specs],
            "error": why,
            "latency_ms": None,
            "cost": None,
            "model": item.case.get("model"),
        }

    def collect(self) -> int:
        """Sweep the collection rules (at most every ``collect_every``): each rule's new thumbs-down
        replies, sampled, become test cases of its test set (one new version a sweep); returns how many."""
        if time.monotonic() < self._collect_due:
            return 0
        self._collect_due = time.monotonic() + self.collect_every
        with self.db.reader() as conn:
            rules = collect_rules.list_rules(conn)
        added = 0
        for rule in rules:
            with self.db.snapshot() as conn:
                found, cursor = collect_rules.candidates(conn, rule, utcnow() - self.collect_settle)
                cases = []
                for candidate in found:
                    view = queries.get_conversation(conn, rule.project_pk, candidate.conversation_id)
                    if view is None:
                        continue
                    index = next((i for i, m in enumerate(view.messages) if m.position == candidate.position), -1)
                    try:
                        cases.append(case_from_turn(candidate.conversation_id, view.messages, index, rule.keep))
                    except NotATurn:
                        continue
            if cursor == rule.cursor:
                continue
            with self.db.writer() as conn:
                if not collect_rules.advance(conn, rule, cursor, len(cases)):
                    continue  # another worker swept this rule meanwhile
                if cases:
                    try:
                        evaluations.save_version(conn, rule.project_pk, rule.test_set_name, cases, None, True, utcnow())
                    except evaluations.Conflict as exc:  # checked before anything is written
                        log.warning("collection rule %s: %d cases not added: %s", rule.pk, len(cases), exc)
                        continue
            added += len(cases)
        return added

    def online(self) -> int:
        """Sweep the online evaluation rules (at most every ``collect_every``): each rule's evaluator on its
        sample of the replies that arrived since; returns how many replies were judged. An LLM evaluator
        judges only as many as the project's daily allowance still grants (reserved before the calls:
        a provider that fails keeps them spent); the rest are counted as over budget, not judged."""
        if time.monotonic() < self._online_due:
            return 0
        self._online_due = time.monotonic() + self.collect_every
        with self.db.reader() as conn:
            rules = online_evals.list_rules(conn)
        judged = 0
        for rule in rules:
            found: list[tuple[collect_rules.Candidate, Attempt, datetime]] = []
            with self.db.snapshot() as conn:
                candidates, cursor = collect_rules.replies_after(
                    conn, rule.project_pk, rule.cursor, utcnow() - self.online_settle, rule.topic_pk, rule.sample_rate
                )
                for candidate in candidates:
                    view = queries.get_conversation(conn, rule.project_pk, candidate.conversation_id)
                    if view is None:
                        continue
                    index = next((i for i, m in enumerate(view.messages) if m.position == candidate.position), -1)
                    if index < 0:
                        continue
                    reply = view.messages[index]
                    before = tuple(Message(m.role, m.content) for m in view.messages[:index] if m.kind != "event")
                    attempt = Attempt(before, reply.content, latency_ms=reply.latency_ms, model=reply.model)
                    found.append((candidate, attempt, reply.created_at))
                settings = projects.settings_of(conn, rule.project_pk)
            if cursor == rule.cursor:
                continue
            provider = None
            allowed = len(found)
            if registry.calls_llm(rule.evaluator):
                provider = self.providers(rule.project_pk)
                with self.db.writer() as conn:  # reserved before any call, in its own transaction
                    allowed = (
                        online_evals.reserve_llm(
                            conn, rule.project_pk, utcnow().date().isoformat(), len(found),
                            online_evals.llm_daily_cap(settings),
                        )
                        if provider is not None and found
                        else 0
                    )  # fmt: skip
            outcomes = []
            for i, (candidate, attempt, created_at) in enumerate(found):
                outcome = None
                if i < allowed:
                    (verdict,) = judge(attempt, [rule.evaluator], ProjectServices(provider))
                    outcome = verdict["outcome"]
                outcomes.append(
                    online_evals.Outcome(
                        candidate.message_pk, candidate.conversation_pk, created_at, attempt.model, outcome
                    )
                )
            with self.db.writer() as conn:
                if online_evals.save(conn, rule, cursor, outcomes):
                    judged += sum(o.outcome is not None for o in outcomes)
        return judged
