"""An erasure, or a retention prune, leaves nothing of the deleted text on disk: not in the SQLite
database file (secure_delete zeroes the rows where they lay), nor in its WAL or shared-memory files (a
truncating checkpoint empties the WAL, which held the pages as they were). Read from the raw files."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

from conftest import make_project, running_server
from convolens.schemas.ingest import IngestBatch
from convolens.store import migrate, projects
from convolens.store.db import Database
from convolens.store.ingest import apply_batch
from convolens.timeutil import utcnow
from convolens.worker.runner import Worker
from web_support import wait_until_enriched


def _on_disk(path: Path, secret: str) -> list[str]:
    """Which of the database's files hold ``secret`` (its UTF-8 bytes, as SQLite stores text)."""
    needle = secret.encode()
    files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    return [f.name for f in files if f.exists() and needle in f.read_bytes()]


def _events(marker: str, keep: str, at: str | None = None) -> list[dict]:
    stamp = {"timestamp": at} if at else {}
    return [
        {"type": "conversation", "id": f"conv-{marker}", "user_id": f"user-{marker}",
         "metadata": {"email": f"{marker}@example.com"}},
        {"type": "message", "conversation_id": f"conv-{marker}", "id": f"q-{marker}", "role": "user",
         "content": f"My secret is {marker}, please keep it.", **stamp},
        {"type": "message", "conversation_id": f"conv-{marker}", "id": f"a-{marker}", "role": "assistant",
         "content": f"Noted: {marker}.", **stamp},
        {"type": "conversation", "id": "other", "user_id": "someone-else"},
        {"type": "message", "conversation_id": "other", "id": "o1", "role": "user", "content": keep},
    ]  # fmt: skip


def test_erasing_a_user_over_http_leaves_no_byte_of_them_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "convolens.sqlite3"
    db = Database(f"sqlite:///{path}")
    migrate.upgrade(db)
    marker, keep = f"ERASE{uuid.uuid4().hex}", f"KEEP{uuid.uuid4().hex}"
    try:
        with running_server(db, tmp_path) as server, server.client(make_project(db).admin_token) as client:
            client.post("/api/v1/ingest", json={"events": _events(marker, keep)}).raise_for_status()
            wait_until_enriched(db)  # enrichment rewrites the messages: more copies of the text
            assert _on_disk(path, marker), "the test must see the text on disk before the erasure"
            erased = client.delete(f"/api/v1/users/user-{marker}")
            assert erased.status_code == 200, erased.text
            assert erased.json()["erased"]["messages"] == 2
            assert _on_disk(path, marker) == []
            assert _on_disk(path, marker[5:]) == []  # no part of it either
            assert _on_disk(path, keep)  # what was not erased is still there
    finally:
        db.dispose()


def test_a_retention_prune_leaves_no_byte_of_the_pruned_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "convolens.sqlite3"
    db = Database(f"sqlite:///{path}")
    migrate.upgrade(db)
    marker, keep = f"PRUNE{uuid.uuid4().hex}", f"KEEP{uuid.uuid4().hex}"
    project = make_project(db)
    old = (utcnow() - timedelta(days=400)).isoformat() + "Z"
    try:
        with db.writer() as conn:
            apply_batch(conn, project.pk, IngestBatch.model_validate({"events": _events(marker, keep, old)}), utcnow())
            projects.set_project_setting(conn, project.name, "retention_days", 30)
        assert _on_disk(path, marker)
        assert Worker(db).retention_once() == 1
        assert _on_disk(path, marker) == []
        assert _on_disk(path, keep)
    finally:
        db.dispose()
