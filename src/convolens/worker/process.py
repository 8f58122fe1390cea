"""The embedded enrichment worker: ``convolens serve``'s own worker, in a child process of the server.

It used to run as a thread of the API process, where it shared the interpreter lock with the requests:
enriching a batch of long crafted messages held the lock in long stretches while normal requests
waited (bench/abuse.py, bench/README.md). In a process of its own it takes no lock from them, and its
CPU-heavy steps run at a lower CPU priority (``NICE``), because enrichment can wait and a request cannot;
its transactions do not (worker/low_priority.py says why).

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
import time
from multiprocessing.connection import Connection, wait

from convolens.config import Settings

log = logging.getLogger("convolens.worker")

# Added to the niceness of the child's CPU-heavy steps: under CPU contention the API's requests come first.
# The API's writes wait while this worker saves a batch (one SQLite write lock for both processes):
# small batches keep that wait short. A separate `convolens worker` keeps the default 256.
EMBEDDED_BATCH = 32
NICE = 10
# How long a stop waits for the worker to finish its batch before killing it (its leases then lapse,
# and the batch is taken again, as after any crash).
STOP_SECONDS = 10.0


# A child that dies (killed by the kernel for memory, a bug at start) is started again after this pause,
# doubled each time it dies within RESTART_RESET seconds of its start, up to RESTART_MAX.
RESTART_FIRST = 1.0
RESTART_MAX = 60.0
RESTART_RESET = 60.0


class WorkerProcess:
    """The embedded worker's child process: ``start()``, then ``stop()`` (idempotent). A child that dies
    while the server runs is started again: without it the server would keep taking messages that
    nothing enriches, and say nothing."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._context = multiprocessing.get_context("spawn")  # not fork: the server has threads and connections
        self._logging = _logging_now()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.process: multiprocessing.process.BaseProcess | None = None
        self.restarts = 0

    def _spawn(self) -> None:
        stop_reader, self._stop_writer = self._context.Pipe(duplex=False)
        self.process = self._context.Process(
            target=_run,
            args=(self._settings, stop_reader, *self._logging),
            name="convolens-worker",
            daemon=True,  # a server that exits without stop() still ends its child (multiprocessing's atexit)
        )
        self.process.start()
        stop_reader.close()  # the child's end

    def start(self) -> None:
        with self._lock:
            self._spawn()
        threading.Thread(target=self._supervise, name="convolens-worker-supervisor", daemon=True).start()

    def _supervise(self) -> None:
        pause = RESTART_FIRST
        while not self._stopping.is_set():
            with self._lock:
                process = self.process
            started = time.monotonic()
            assert process is not None
            wait([process.sentinel])
            if self._stopping.is_set():
                # stop() reaps it. Two threads joining one child race in waitpid: the loser saw no exit
                # code and took the child for alive, and stop() logged a kill of a child already gone.
                return
            process.join(1.0)  # reaps it, so that its exit code is known
            lived = time.monotonic() - started
            pause = RESTART_FIRST if lived > RESTART_RESET else pause
            log.error("enrichment worker exited (code %s); starting it again in %.0f s", process.exitcode, pause)
            if self._stopping.wait(pause):
                return
            pause = min(pause * 2, RESTART_MAX)
            with self._lock:
                if self._stopping.is_set():
                    return
                self._stop_writer.close()
                self._spawn()
                self.restarts += 1

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process = self.process
            if process is None or process.pid is None:
                return
            self._stop_writer.close()  # the child sees the end of its pipe and stops after its batch
        process.join(STOP_SECONDS)
        if process.is_alive():
            log.warning("enrichment worker did not stop within %.0f s; killing it", STOP_SECONDS)
            process.kill()
            process.join()


def _logging_now() -> tuple[str, bool]:
    """This process's log level and format, for the child to log as the server does."""
    from convolens.server.asgi.observability import JsonFormatter

    root = logging.getLogger()
    json = any(isinstance(handler.formatter, JsonFormatter) for handler in root.handlers)
    return logging.getLevelName(root.getEffectiveLevel()), json


def _run(settings: Settings, stop: Connection, level: str, json: bool) -> None:
    """The child: enrich until the server closes the pipe, dies, or sends SIGTERM."""
    from convolens.server.asgi.observability import configure_logging
    from convolens.store.db import Database
    from convolens.store.suggestions import Timing
    from convolens.worker.low_priority import LowPriority
    from convolens.worker.runner import Worker

    # Its CPU-heavy steps run below normal priority, its transactions at normal priority (they hold the
    # write lock the API's writes wait for): worker/low_priority.py.
    stopping = threading.Event()
    heavy = LowPriority(NICE, stopping)
    # Ctrl-C reaches the whole process group: the server stops this child itself, after its requests.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(level, json=json)
    db = Database(settings.database_url, yields_writes=True)  # ingestion first (store/writer/process_lock.py)
    worker = Worker(
        db,
        llm=settings.llm,
        outbound=settings.outbound,
        smtp=settings.smtp,
        public_url=settings.public_url,
        suggest_timing=Timing(min_messages=settings.suggest_min_messages),
        batch_size=EMBEDDED_BATCH,
        heavy=heavy,
        stop_event=stopping,  # a stop interrupts the low-priority step in progress (worker/low_priority.py)
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
        heavy.close()
        db.dispose()
    # An interrupted step may still be running on its thread (inside the encoder), and the interpreter's
    # exit would wait for it (concurrent.futures joins its threads): end the process here instead. Nothing
    # is left to save: the claim went back, the database is closed.
    logging.shutdown()
    os._exit(0)
