"""The embedded enrichment worker: ``convolens serve``'s own worker, in a child process of the server.

It used to run as a thread of the API process, where it shared the interpreter lock with the requests:
enriching a batch of long crafted messages held the lock in long stretches while normal requests
waited (bench/abuse.py, bench/README.md). In a process of its own it takes no lock from them, and it
runs at a lower CPU priority (``NICE``), because enrichment can wait and a request cannot.

One command still starts everything: the server starts the child with its lifespan and stops it with
it. The child goes as well when the server dies without stopping it (SIGKILL, a crash): it watches its
parent, so no orphan keeps enriching against a database nobody serves.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from multiprocessing.connection import Connection, wait

from convolens.config import Settings

log = logging.getLogger("convolens.worker")

# Added to the child's niceness: under CPU contention the API process's requests come first.
# The API's writes wait while this worker saves a batch (one SQLite write lock for both processes):
# small batches keep that wait short. A separate `convolens worker` keeps the default 256.
EMBEDDED_BATCH = 32
NICE = 10
# How long a stop waits for the worker to finish its batch before killing it (its leases then lapse,
# and the batch is taken again, as after any crash).
STOP_SECONDS = 10.0


class WorkerProcess:
    """The embedded worker's child process: ``start()``, then ``stop()`` (idempotent)."""

    def __init__(self, settings: Settings) -> None:
        context = multiprocessing.get_context("spawn")  # not fork: the server has threads and open connections
        self._stop_reader, self._stop_writer = context.Pipe(duplex=False)
        level, json = _logging_now()
        self.process = context.Process(
            target=_run,
            args=(settings, self._stop_reader, level, json),
            name="convolens-worker",
            daemon=True,  # a server that exits without stop() still ends its child (multiprocessing's atexit)
        )

    def start(self) -> None:
        self.process.start()
        self._stop_reader.close()  # the child's end

    def stop(self) -> None:
        if self.process.pid is None:
            return
        self._stop_writer.close()  # the child sees the end of its pipe and stops after its batch
        self.process.join(STOP_SECONDS)
        if self.process.is_alive():
            log.warning("enrichment worker did not stop within %.0f s; killing it", STOP_SECONDS)
            self.process.kill()
            self.process.join()


def _logging_now() -> tuple[str, bool]:
    """This process's log level and format, for the child to log as the server does."""
    from convolens.server.observability import JsonFormatter

    root = logging.getLogger()
    json = any(isinstance(handler.formatter, JsonFormatter) for handler in root.handlers)
    return logging.getLevelName(root.getEffectiveLevel()), json


def _run(settings: Settings, stop: Connection, level: str, json: bool) -> None:
    """The child: enrich until the server closes the pipe, dies, or sends SIGTERM."""
    from convolens.server.observability import configure_logging
    from convolens.store.db import Database
    from convolens.store.suggestions import Timing
    from convolens.worker.runner import Worker

    os.nice(NICE)
    # Ctrl-C reaches the whole process group: the server stops this child itself, after its requests.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(level, json=json)
    db = Database(settings.database_url)
    worker = Worker(
        db,
        llm=settings.llm,
        outbound=settings.outbound,
        suggest_timing=Timing(min_messages=settings.suggest_min_messages),
        batch_size=EMBEDDED_BATCH,
    )
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    parent = multiprocessing.parent_process()
    watched = [stop] + ([parent.sentinel] if parent is not None else [])

    def stop_with_the_server() -> None:
        wait(watched)  # readable: the server closed its end, or it is gone
        worker.stop()

    threading.Thread(target=stop_with_the_server, name="convolens-worker-parent", daemon=True).start()
    try:
        worker.run()
    finally:
        db.dispose()
