"""Test sets (versioned: every upload is a new version with its own copy of the cases), evaluation
runs, and the runs' work items: one per test case and iteration, leased by one worker at a time.

Exactly once per item: a worker claims an item by compare-and-set on its lease (``claim``), and its
verdicts are kept only while it still holds that lease (``finish``): a worker killed mid-item leaves a
lease that expires, the next worker takes the item over, and a late save from the first is refused.
An item that has been claimed ``MAX_ATTEMPTS`` times without being finished (it kills its workers) is
closed as inconclusive instead of being handed out again.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, update
from sqlalchemy import case as when
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Subquery

from convolens.store.tables import eval_item, eval_run, test_case, test_set

MAX_TEST_SETS_PER_PROJECT = 500
MAX_VERSIONS_PER_TEST_SET = 1000
MAX_CASES_PER_TEST_SET = 1000
MAX_ITEMS_PER_RUN = 5000  # test cases x iterations
MAX_OPEN_RUNS_PER_PROJECT = 20  # pending or running
MAX_ATTEMPTS = 3
OPEN = ("pending", "running")


@dataclass(frozen=True)
class TestSetRow:
    pk: int
    name: str
    version: int
    evaluators: list[dict[str, Any]]
    case_count: int
    created_at: datetime


@dataclass(frozen=True)
class CaseRow:
    pk: int
    position: int
    name: str
    body: dict[str, Any]


class Conflict(Exception):
    """A bound or state that a request cannot pass: ``field`` names what it is about."""

    def __init__(self, field: str, msg: str, status: int = 409) -> None:
        super().__init__(f"{field}: {msg}")
        self.field = field
        self.msg = msg
        self.status = status


def _set_row(row: Any) -> TestSetRow:
    return TestSetRow(row.pk, row.name, row.version, row.evaluators or [], row.case_count, row.created_at)


def latest(conn: Connection, project_pk: int, name: str) -> TestSetRow | None:
    row = conn.execute(
        select(test_set)
        .where(test_set.c.project_pk == project_pk, test_set.c.name == name)
        .order_by(test_set.c.version.desc())
        .limit(1)
    ).first()
    return _set_row(row) if row else None


def get_version(conn: Connection, project_pk: int, name: str, version: int) -> TestSetRow | None:
    row = conn.execute(
        select(test_set).where(
            test_set.c.project_pk == project_pk, test_set.c.name == name, test_set.c.version == version
        )
    ).first()
    return _set_row(row) if row else None


def cases(conn: Connection, test_set_pk: int) -> list[CaseRow]:
    rows = conn.execute(
        select(test_case.c.pk, test_case.c.position, test_case.c.name, test_case.c.body)
        .where(test_case.c.test_set_pk == test_set_pk)
        .order_by(test_case.c.position)
    )
    return [CaseRow(r.pk, r.position, r.name, r.body) for r in rows]


def save_version(
    conn: Connection,
    project_pk: int,
    name: str,
    new_cases: list[dict[str, Any]],
    evaluators: list[dict[str, Any]] | None,
    copy_prior: bool,
    now: datetime,
) -> TestSetRow:
    """A new version of test set ``name``: ``new_cases`` alone, or (``copy_prior``) the prior version's
    cases with those of the same name replaced and the others appended. ``evaluators`` None keeps the
    prior version's set-wide evaluators when copying (none otherwise). Each case is ``{name, ...body}``."""
    prior = latest(conn, project_pk, name)
    if prior is None:
        sets = conn.execute(
            select(func.count(func.distinct(test_set.c.name))).where(test_set.c.project_pk == project_pk)
        ).scalar_one()
        if sets >= MAX_TEST_SETS_PER_PROJECT:
            raise Conflict("name", f"a project has at most {MAX_TEST_SETS_PER_PROJECT} test sets")
    elif prior.version >= MAX_VERSIONS_PER_TEST_SET:
        raise Conflict("name", f"a test set has at most {MAX_VERSIONS_PER_TEST_SET} versions")
    merged: dict[str, dict[str, Any]] = {}
    if copy_prior and prior is not None:
        for case in cases(conn, prior.pk):
            merged[case.name] = case.body
    for case in new_cases:
        body = {k: v for k, v in case.items() if k != "name"}
        merged[case["name"]] = body  # same name: replaced in place (dict keeps its first position)
    if len(merged) > MAX_CASES_PER_TEST_SET:
        raise Conflict(
            "test_cases", f"the version would have {len(merged)} test cases; at most {MAX_CASES_PER_TEST_SET}", 422
        )
    if evaluators is None:
        evaluators = prior.evaluators if copy_prior and prior is not None else []
    version = (prior.version if prior else 0) + 1
    pk = conn.execute(
        insert(test_set).values(
            project_pk=project_pk, name=name, version=version, evaluators=evaluators,
            case_count=len(merged), created_at=now,
        )
    ).inserted_primary_key[0]  # fmt: skip
    if merged:
        conn.execute(
            insert(test_case),
            [
                {"test_set_pk": pk, "position": i, "name": case_name, "body": body}
                for i, (case_name, body) in enumerate(merged.items())
            ],
        )
    return TestSetRow(pk, name, version, evaluators, len(merged), now)


def _newest_versions(project_pk: int) -> Subquery:
    """(name, version) of each of the project's test sets' latest version."""
    return (
        select(test_set.c.name, func.max(test_set.c.version).label("version"))
        .where(test_set.c.project_pk == project_pk)
        .group_by(test_set.c.name)
        .subquery()
    )


def list_sets(conn: Connection, project_pk: int) -> list[TestSetRow]:
    """Each test set's latest version, by name."""
    newest = _newest_versions(project_pk)
    rows = conn.execute(
        select(test_set)
        .join(newest, and_(test_set.c.name == newest.c.name, test_set.c.version == newest.c.version))
        .where(test_set.c.project_pk == project_pk)
        .order_by(test_set.c.name)
    )
    return [_set_row(r) for r in rows]


def versions(conn: Connection, project_pk: int, name: str) -> list[TestSetRow]:
    rows = conn.execute(
        select(test_set)
        .where(test_set.c.project_pk == project_pk, test_set.c.name == name)
        .order_by(test_set.c.version)
    )
    return [_set_row(r) for r in rows]


# Runs


@dataclass(frozen=True)
class RunRow:
    pk: int
    public_id: str
    project_pk: int
    test_set: TestSetRow
    iterations: int
    status: str
    total: int
    completed: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    passed: int = 0  # finished items that passed


def create_run(conn: Connection, project_pk: int, chosen: TestSetRow, iterations: int, now: datetime) -> str:
    """A pending run of ``chosen`` and its work items (each case, ``iterations`` times); its public id."""
    total = chosen.case_count * iterations
    if total > MAX_ITEMS_PER_RUN:
        raise Conflict(
            "iterations", f"{chosen.case_count} test cases x {iterations} iterations is over {MAX_ITEMS_PER_RUN}", 422
        )
    open_runs = conn.execute(
        select(func.count()).where(eval_run.c.project_pk == project_pk, eval_run.c.status.in_(OPEN))
    ).scalar_one()
    if open_runs >= MAX_OPEN_RUNS_PER_PROJECT:
        raise Conflict("test_set_name", f"a project has at most {MAX_OPEN_RUNS_PER_PROJECT} runs not yet finished")
    public_id = secrets.token_hex(16)
    status = "pending" if total else "completed"
    run_pk = conn.execute(
        insert(eval_run).values(
            public_id=public_id, project_pk=project_pk, test_set_pk=chosen.pk, iterations=iterations,
            status=status, total=total, created_at=now, finished_at=None if total else now,
        )
    ).inserted_primary_key[0]  # fmt: skip
    case_pks = [c.pk for c in cases(conn, chosen.pk)]
    if case_pks:
        conn.execute(
            insert(eval_item),
            [
                {"run_pk": run_pk, "test_case_pk": case_pk, "iteration": i, "done": False, "attempts": 0}
                for i in range(1, iterations + 1)
                for case_pk in case_pks
            ],
        )
    return public_id


def get_run(conn: Connection, project_pk: int, public_id: str) -> RunRow | None:
    row = conn.execute(
        select(eval_run, test_set.c.name.label("set_name"))
        .join(test_set, test_set.c.pk == eval_run.c.test_set_pk)
        .where(eval_run.c.project_pk == project_pk, eval_run.c.public_id == public_id)
    ).first()
    if row is None:
        return None
    chosen = conn.execute(select(test_set).where(test_set.c.pk == row.test_set_pk)).one()
    completed, passed = pass_counts(conn, [row.pk]).get(row.pk, (0, 0))
    return RunRow(
        row.pk, row.public_id, row.project_pk, _set_row(chosen), row.iterations, row.status, row.total,
        completed, row.created_at, row.started_at, row.finished_at, passed,
    )  # fmt: skip


def list_runs(conn: Connection, project_pk: int, limit: int = 100) -> list[dict[str, Any]]:
    """The project's latest runs, newest first, each with ``done`` and ``passed`` item counts."""
    rows = conn.execute(
        select(eval_run, test_set.c.name.label("set_name"), test_set.c.version.label("set_version"))
        .join(test_set, test_set.c.pk == eval_run.c.test_set_pk)
        .where(eval_run.c.project_pk == project_pk)
        .order_by(eval_run.c.created_at.desc(), eval_run.c.pk.desc())
        .limit(limit)
    ).all()
    counts = pass_counts(conn, [r.pk for r in rows])
    return [r._asdict() | dict(zip(("done", "passed"), counts.get(r.pk, (0, 0)), strict=True)) for r in rows]


def pass_counts(conn: Connection, run_pks: list[int]) -> dict[int, tuple[int, int]]:
    """{run: (items done, items passed)}."""
    if not run_pks:
        return {}
    passed = func.sum(when((eval_item.c.passed.is_(True), 1), else_=0))
    rows = conn.execute(
        select(eval_item.c.run_pk, func.count(), passed)
        .where(eval_item.c.run_pk.in_(run_pks), eval_item.c.done.is_(True))
        .group_by(eval_item.c.run_pk)
    )
    return {run_pk: (int(done), int(ok or 0)) for run_pk, done, ok in rows}


@dataclass(frozen=True)
class ItemResult:
    case_name: str
    position: int
    iteration: int
    messages: list[dict[str, Any]]
    response: str | None
    result: dict[str, Any]


def results(conn: Connection, run_pk: int, offset: int = 0, limit: int = MAX_ITEMS_PER_RUN) -> list[ItemResult]:
    """The finished items of a run, by case position then iteration."""
    rows = conn.execute(
        select(eval_item.c.iteration, eval_item.c.response, eval_item.c.result, test_case.c.name,
               test_case.c.position, test_case.c.body)
        .join(test_case, test_case.c.pk == eval_item.c.test_case_pk)
        .where(eval_item.c.run_pk == run_pk, eval_item.c.done.is_(True))
        .order_by(test_case.c.position, eval_item.c.iteration)
        .offset(offset)
        .limit(limit)
    )  # fmt: skip
    return [
        ItemResult(r.name, r.position, r.iteration, r.body.get("messages", []), r.response, r.result or {})
        for r in rows
    ]


# Work items


@dataclass(frozen=True)
class Claimed:
    pk: int
    run_pk: int
    project_pk: int
    iteration: int
    attempts: int  # including this claim
    case_name: str
    case: dict[str, Any]
    set_evaluators: list[dict[str, Any]]


def _free(now: datetime) -> ColumnElement[bool]:
    return and_(eval_item.c.done.is_(False), or_(eval_item.c.lease_until.is_(None), eval_item.c.lease_until < now))


def any_open(conn: Connection, now: datetime) -> bool:
    """Whether any item waits (a read first, so an idle worker does not take the write lock for nothing)."""
    found = conn.execute(
        select(eval_item.c.pk)
        .join(eval_run, eval_run.c.pk == eval_item.c.run_pk)
        .where(eval_run.c.status.in_(OPEN), _free(now))
        .limit(1)
    ).first()
    return found is not None


def waiting_projects(conn: Connection, now: datetime) -> list[int]:
    """The projects with an open run that has a free item, by key."""
    rows = conn.execute(
        select(eval_run.c.project_pk)
        .join(eval_item, eval_item.c.run_pk == eval_run.c.pk)
        .where(eval_run.c.status.in_(OPEN), _free(now))
        .distinct()
        .order_by(eval_run.c.project_pk)
    )
    return list(rows.scalars())


def claim(
    conn: Connection, owner: str, limit: int, lease: timedelta, now: datetime, after_project: int | None = None
) -> list[Claimed]:
    """Lease up to ``limit`` free items of the oldest open run to ``owner``; marks the run running.
    With ``after_project`` (the project a worker served last), the items come from the next project
    with work after it, wrapping around: each worker takes the projects in turn, so one project's big
    run does not starve another's (a project's own runs still go oldest first)."""
    free = _free(now)
    where = [eval_run.c.status.in_(OPEN), free]
    if after_project is not None:
        waiting = waiting_projects(conn, now)
        if not waiting:
            return []
        where.append(eval_run.c.project_pk == next((p for p in waiting if p > after_project), waiting[0]))
    candidates = conn.execute(
        select(eval_item.c.pk, eval_item.c.run_pk)
        .join(eval_run, eval_run.c.pk == eval_item.c.run_pk)
        .where(*where)
        .order_by(eval_item.c.run_pk, eval_item.c.pk)
        .limit(limit)
        .with_for_update(skip_locked=True, of=eval_item)  # PostgreSQL; SQLite's single writer needs none
    ).all()
    taken = []
    for pk, _run_pk in candidates:
        done = conn.execute(
            update(eval_item)
            .where(eval_item.c.pk == pk, free)
            .values(lease_owner=owner, lease_until=now + lease, attempts=eval_item.c.attempts + 1)
        )
        if done.rowcount == 1:
            taken.append(pk)
    if not taken:
        return []
    rows = conn.execute(
        select(eval_item.c.pk, eval_item.c.run_pk, eval_item.c.iteration, eval_item.c.attempts,
               eval_run.c.project_pk, test_case.c.name, test_case.c.body, test_set.c.evaluators)
        .join(eval_run, eval_run.c.pk == eval_item.c.run_pk)
        .join(test_case, test_case.c.pk == eval_item.c.test_case_pk)
        .join(test_set, test_set.c.pk == test_case.c.test_set_pk)
        .where(eval_item.c.pk.in_(taken))
        .order_by(eval_item.c.pk)
    ).all()  # fmt: skip
    for run_pk in {r.run_pk for r in rows}:
        conn.execute(
            update(eval_run)
            .where(eval_run.c.pk == run_pk, eval_run.c.status == "pending")
            .values(status="running", started_at=now)
        )
    return [
        Claimed(r.pk, r.run_pk, r.project_pk, r.iteration, r.attempts, r.name, r.body, r.evaluators or []) for r in rows
    ]


def renew(conn: Connection, owner: str, item_pk: int, lease: timedelta, now: datetime) -> bool:
    """Extend ``owner``'s lease on an item before a slow step (a provider call); False: it was taken over."""
    renewed = conn.execute(
        update(eval_item)
        .where(eval_item.c.pk == item_pk, eval_item.c.lease_owner == owner, eval_item.c.done.is_(False))
        .values(lease_until=now + lease)
    )
    return renewed.rowcount == 1


def finish(
    conn: Connection, owner: str, item_pk: int, response: str | None, result: dict[str, Any], now: datetime
) -> bool:
    """Keep an item's response and verdicts if ``owner`` still holds it; closes its run when it was the
    last open item (``errored`` when any item ended with an error, else ``completed``). False: the item
    was taken over (the lease ran out) or finished by another worker, and nothing was written."""
    saved = conn.execute(
        update(eval_item)
        .where(eval_item.c.pk == item_pk, eval_item.c.lease_owner == owner, eval_item.c.done.is_(False))
        .values(
            done=True, response=response, result=result, passed=item_passed(result), finished_at=now,
            lease_owner=None, lease_until=None,
        )
    )  # fmt: skip
    if saved.rowcount != 1:
        return False
    run_pk = conn.execute(select(eval_item.c.run_pk).where(eval_item.c.pk == item_pk)).scalar_one()
    _close_if_done(conn, run_pk, now)
    return True


def item_passed(result: dict[str, Any]) -> bool:
    """An item passes when it has a response and every evaluation of it is positive."""
    return not result.get("error") and all(e.get("outcome") == "positive" for e in result.get("evaluations", []))


def _close_if_done(conn: Connection, run_pk: int, now: datetime) -> None:
    # The run's row locked first (PostgreSQL; SQLite has one writer): two workers finishing the last two
    # items at once would each still see the other's as open, and the run would stay "running". Under the
    # lock, the later one reads the earlier one's committed item and closes the run.
    conn.execute(select(eval_run.c.pk).where(eval_run.c.pk == run_pk).with_for_update())
    left = conn.execute(
        select(eval_item.c.pk).where(eval_item.c.run_pk == run_pk, eval_item.c.done.is_(False)).limit(1)
    ).first()
    if left is not None:
        return
    results_ = conn.execute(select(eval_item.c.result).where(eval_item.c.run_pk == run_pk)).scalars()
    errored = any((r or {}).get("error") for r in results_)
    conn.execute(
        update(eval_run)
        .where(eval_run.c.pk == run_pk, eval_run.c.status.in_(OPEN))
        .values(status="errored" if errored else "completed", finished_at=now)
    )


def cancel(conn: Connection, project_pk: int, public_id: str, now: datetime) -> bool:
    """Stop a pending or running run: its free items are no longer handed out, an item a worker is on
    may still be saved (and counted), and the run stays ``cancelled``. False: no such open run."""
    done = conn.execute(
        update(eval_run)
        .where(eval_run.c.project_pk == project_pk, eval_run.c.public_id == public_id, eval_run.c.status.in_(OPEN))
        .values(status="cancelled", finished_at=now)
    )
    return done.rowcount == 1


KEPT_FINISHED_RUNS = 200  # per project; older finished runs (and their items) are deleted by the workers
PRUNE_BATCH = 100


def prune_runs(conn: Connection, keep: int = KEPT_FINISHED_RUNS, batch: int = PRUNE_BATCH) -> int:
    """Delete each project's finished runs beyond its newest ``keep`` (at most ``batch`` runs a call, so
    one call holds the write lock briefly); returns how many were deleted. Open runs are never deleted."""
    crowded = (
        conn.execute(
            select(eval_run.c.project_pk)
            .where(eval_run.c.status.not_in(OPEN))
            .group_by(eval_run.c.project_pk)
            .having(func.count() > keep)
        )
        .scalars()
        .all()
    )
    doomed: list[int] = []
    for project_pk in crowded:
        doomed += (
            conn.execute(
                select(eval_run.c.pk)
                .where(eval_run.c.project_pk == project_pk, eval_run.c.status.not_in(OPEN))
                .order_by(eval_run.c.created_at.desc(), eval_run.c.pk.desc())
                .offset(keep)
                .limit(batch - len(doomed))
            )
            .scalars()
            .all()
        )
        if len(doomed) >= batch:
            break
    if doomed:
        conn.execute(eval_item.delete().where(eval_item.c.run_pk.in_(doomed)))
        conn.execute(eval_run.delete().where(eval_run.c.pk.in_(doomed)))
    return len(doomed)


# Coverage: which topics the test cases cover


def last_user_message(body: dict[str, Any]) -> str:
    said = [m.get("message", "") for m in body.get("messages", []) if m.get("role") == "user"]
    return said[-1] if said else ""


def cases_without_vectors(conn: Connection, limit: int) -> list[tuple[int, str]]:
    """(case, its last user message) of cases not embedded yet (the workers fill them)."""
    rows = conn.execute(
        select(test_case.c.pk, test_case.c.body)
        .where(test_case.c.vector.is_(None))
        .order_by(test_case.c.pk)
        .limit(limit)
    )
    return [(pk, last_user_message(body)) for pk, body in rows]


def set_vectors(conn: Connection, vectors: list[tuple[int, bytes]]) -> None:
    for pk, vector in vectors:
        conn.execute(update(test_case).where(test_case.c.pk == pk, test_case.c.vector.is_(None)).values(vector=vector))


@dataclass(frozen=True)
class CoveredCase:
    set_name: str
    name: str
    text: str
    vector: bytes | None


MAX_COVERAGE_CASES = 5000


def latest_cases(conn: Connection, project_pk: int, limit: int = MAX_COVERAGE_CASES) -> list[CoveredCase]:
    """The cases of each test set's latest version (at most ``limit``, by set name)."""
    newest = _newest_versions(project_pk)
    rows = conn.execute(
        select(test_set.c.name, test_case.c.name, test_case.c.body, test_case.c.vector)
        .join(newest, and_(test_set.c.name == newest.c.name, test_set.c.version == newest.c.version))
        .join(test_case, test_case.c.test_set_pk == test_set.c.pk)
        .where(test_set.c.project_pk == project_pk)
        .order_by(test_set.c.name, test_case.c.position)
        .limit(limit)
    )
    return [CoveredCase(set_name, name, last_user_message(body), vector) for set_name, name, body, vector in rows]


def last_run_passes(conn: Connection, project_pk: int) -> dict[tuple[str, str], list[bool]]:
    """{(test set, case): [passed, …]} from each test set's latest finished run (any version)."""
    finished = (
        select(test_set.c.name, func.max(eval_run.c.pk).label("run_pk"))
        .join(test_set, test_set.c.pk == eval_run.c.test_set_pk)
        .where(eval_run.c.project_pk == project_pk, eval_run.c.status.in_(("completed", "errored")))
        .group_by(test_set.c.name)
        .subquery()
    )
    rows = conn.execute(
        select(finished.c.name, test_case.c.name, eval_item.c.passed)
        .join(eval_item, eval_item.c.run_pk == finished.c.run_pk)
        .join(test_case, test_case.c.pk == eval_item.c.test_case_pk)
    )
    found: dict[tuple[str, str], list[bool]] = {}
    for set_name, case_name, passed in rows:
        found.setdefault((set_name, case_name), []).append(bool(passed))
    return found
