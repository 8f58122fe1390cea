"""How runs share the workers and how they end: projects served in turn (one project's big run does not
starve another's), a run cancelled through the API, and old finished runs deleted beyond a bound (both
backends)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from conftest import make_project, running_server, separate_database
from convolens.store import evaluations
from convolens.store.db import Database
from convolens.store.tables import eval_item
from convolens.timeutil import utcnow
from convolens.worker.runner import Worker

REGEX = [{"evaluator": "regex", "options": {"pattern": "ok", "scope": "response", "expect": "match"}}]


def _cases(n: int) -> list[dict]:
    return [{"name": f"case {i}", "messages": [{"role": "user", "message": f"say {i}"}],
             "pregenerated_response": "ok", "evaluators": []} for i in range(n)]  # fmt: skip


def _start(db: Database, project_pk: int, cases: int) -> str:
    with db.writer() as conn:
        saved = evaluations.save_version(conn, project_pk, "set", _cases(cases), REGEX, False, utcnow())
        return evaluations.create_run(conn, project_pk, saved, 1, utcnow())


def _status(db: Database, project_pk: int, run_id: str) -> tuple[str, int]:
    with db.reader() as conn:
        run = evaluations.get_run(conn, project_pk, run_id)
    assert run is not None
    return run.status, run.completed


def test_a_small_run_is_not_starved_by_another_projects_big_run(database_url: str, tmp_path: Path) -> None:
    with separate_database(database_url, tmp_path, "eval_fair") as db:
        big_project, small_project = make_project(db, "big"), make_project(db, "small")
        big = _start(db, big_project.pk, 12)
        small = _start(db, small_project.pk, 2)  # queued after all of the big run's items
        worker = Worker(db, lease=timedelta(seconds=30))
        worker.evaluate_runs.budget_seconds = 0  # one item a call
        worker.evaluate_runs.embed_cases()
        for _ in range(4):
            assert worker.evaluate_runs() >= 1
        # Taken in turn: two items each, so the small run is done while the big one is a sixth through.
        assert _status(db, small_project.pk, small) == ("completed", 2)
        assert _status(db, big_project.pk, big) == ("running", 2)
        while worker.evaluate_runs():
            pass
        assert _status(db, big_project.pk, big) == ("completed", 12)


def test_a_run_is_cancelled_through_the_api(database_url: str, tmp_path: Path) -> None:
    # A database and a server of its own, without an embedded worker: on the session's database the
    # session server's worker once evaluated an item between the run's creation and the cancel.
    with (
        separate_database(database_url, tmp_path, "eval_cancel") as db,
        running_server(db, tmp_path, embedded_worker=False) as server,
    ):
        project = make_project(db, "cancel")
        with server.client(project.token) as api:
            body = {"name": "to-cancel", "test_cases": _cases(3), "evaluators": REGEX}
            assert api.post("/api/v1/test_sets", json=body).status_code == 201
            run_id = api.post("/api/v1/evaluations/run", json={"test_set_name": "to-cancel", "version": 1}).json()
            run_id = run_id["data"]["run_id"]
            cancelled = api.post(f"/api/v1/evaluations/run/{run_id}/cancel")
            again = api.post(f"/api/v1/evaluations/run/{run_id}/cancel")
            unknown = api.post(f"/api/v1/evaluations/run/{'0' * 32}/cancel")
            # A worker that comes afterwards finds nothing of it to evaluate (its cases embedded first:
            # the call counts those too).
            worker = Worker(db, lease=timedelta(seconds=30))
            worker.evaluate_runs.embed_cases()
            evaluated = worker.evaluate_runs()
            read = api.get(f"/api/v1/evaluations/run/{run_id}").json()
            listed = api.get("/api/v1/evaluations/runs").json()["runs"]
        with server.client(project.read_token) as reader:
            forbidden = reader.post(f"/api/v1/evaluations/run/{run_id}/cancel")
        with db.reader() as conn:
            waiting = evaluations.waiting_projects(conn, utcnow())
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["cancelled"]) == ("errored", True)
    assert again.status_code == 409 and again.json()["errors"][0]["field"] == "run_id"
    assert unknown.status_code == 404 and forbidden.status_code == 403
    assert evaluated == 0
    assert (read["status"], read["cancelled"], read["progress"]["completed"]) == ("errored", True, 0)
    assert [r["status"] for r in listed if r["id"] == run_id] == ["cancelled"]
    # No worker takes its items any more: the project has no run with work waiting.
    assert project.pk not in waiting


def test_finished_runs_beyond_the_bound_are_deleted_with_their_items(database_url: str, tmp_path: Path) -> None:
    with separate_database(database_url, tmp_path, "eval_prune") as db:
        project, other = make_project(db, "prune"), make_project(db, "keep")
        finished = []
        for _ in range(5):
            run_id = _start(db, project.pk, 2)
            with db.writer() as conn:
                assert evaluations.cancel(conn, project.pk, run_id, utcnow())
            finished.append(run_id)
        still_open = _start(db, project.pk, 2)
        untouched = _start(db, other.pk, 2)
        with db.writer() as conn:
            assert evaluations.cancel(conn, other.pk, untouched, utcnow())
            deleted = evaluations.prune_runs(conn, keep=2)
            again = evaluations.prune_runs(conn, keep=2)
            left = {r["public_id"] for r in evaluations.list_runs(conn, project.pk)}
            items = conn.execute(select(eval_item.c.run_pk).distinct()).scalars().all()
            kept_other = evaluations.get_run(conn, other.pk, untouched)
    assert (deleted, again) == (3, 0)
    assert left == {*finished[-2:], still_open}  # the newest two finished, and the open one
    assert len(items) == 4 and kept_other is not None
