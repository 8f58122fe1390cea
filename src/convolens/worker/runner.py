"""The enrichment worker: claim a batch, enrich it, save it, repeat.

It runs as a thread inside ``convolens serve`` on the embedded default, and as ``convolens worker``
processes (any number) against PostgreSQL.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import timedelta

from convolens.enrich import pipeline
from convolens.store import enrichment
from convolens.store.db import Database, DatabaseUnavailable
from convolens.timeutil import utcnow

log = logging.getLogger("convolens.worker")


class Worker:
    def __init__(
        self,
        db: Database,
        *,
        batch_size: int = 256,
        lease: timedelta = timedelta(seconds=60),
        idle_seconds: float = 0.5,
        name: str | None = None,
    ) -> None:
        self.db = db
        self.batch_size = batch_size
        self.lease = lease
        self.idle_seconds = idle_seconds
        self.owner = name or f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stop_event = threading.Event()
        self.enriched = 0

    def run_once(self) -> list[int]:
        """One batch: returns the keys of the messages this worker enriched."""
        with self.db.writer() as conn:
            claimed = enrichment.claim(conn, self.owner, self.batch_size, self.lease, utcnow())
        if not claimed:
            return []
        results = pipeline.enrich(claimed)
        with self.db.writer() as conn:
            saved = enrichment.save(conn, self.owner, pipeline.VERSION, results)
        self.enriched += len(saved)
        return saved

    def run(self) -> None:
        log.info("worker %s started", self.owner)
        while not self.stop_event.is_set():
            try:
                done = self.run_once()
            except DatabaseUnavailable:
                log.warning("worker %s: database unavailable, retrying", self.owner)
                done = []
                self.stop_event.wait(2.0)
            except Exception:
                log.exception("worker %s: batch failed; its lease will expire and it will be retried", self.owner)
                done = []
                self.stop_event.wait(2.0)
            if not done:
                self.stop_event.wait(self.idle_seconds)
        log.info("worker %s stopped after %d messages", self.owner, self.enriched)

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="convolens-worker", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.stop_event.set()
