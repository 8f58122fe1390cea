"""The heavy lane's PII scrubbing, and the count of a body full of objects, in a child of the API process.

The heavy lane (server/offload.py) gave requests with more than ``HEAVY_TEXT_CHARS`` of text one
thread, so that they queue behind each other rather than in front of ordinary requests. But scrubbing
is mostly Python (the rules' checks of each candidate match), and a thread of the API process holds
the interpreter lock while it runs: crafted 90,000-character texts took ~170 ms of it a request, in
slices that every ordinary request waited for (bench/abuse.py). Here the scrubbing runs in a child
process at a lower CPU priority, and the heavy lane's thread waits for its answer without the lock.

``scrubbed(function, value, *args)`` is called where a request's text is scrubbed: on the heavy lane's
thread it sends ``value`` to the child (pickled), which returns ``function(value, *args)``; anywhere
else it calls ``function`` in place. What travels is plain data, the texts alone and the changed ones
back (``enrich/pii.scrub_fields``): the batch's pydantic events pickled both ways cost the two
processes ~2/3 of what the scrubbing itself did (bench/README.md, otlp_ingest.py). The child starts
with the first heavy request, and ends when the server stops it, closes, or dies (it watches its
parent: no orphan).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from convolens.server import garbage_collection
from convolens.server.errors import RETRY_AFTER_SECONDS, ApiError
from convolens.server.offload import on_heavy_lane

log = logging.getLogger("convolens.server")

R = TypeVar("R")

# Added to the child's niceness: under CPU contention the API process's ordinary requests come first.
NICE = 10


class ScrubbingProcess:
    """One child, one request at a time (the heavy lane is one thread), started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None

    def call(self, function: Callable[..., R], value: Any, *args: Any) -> R:
        with self._lock:
            if self._process is None or not self._process.is_alive():
                self._start()
            assert self._conn is not None
            try:
                self._conn.send((function, value, args))
                ok, result = self._conn.recv()
            except (EOFError, OSError):
                # The child died under this request (killed, out of memory): fail closed, the text is not
                # stored unscrubbed; the next heavy request starts a new child.
                self._stop()
                log.error("the scrubbing process ended during a request")
                raise ApiError(503, "the server could not scrub this request; retry later", headers=_RETRY) from None
        if not ok:
            raise result
        return result

    def stop(self) -> None:
        with self._lock:
            self._stop()

    def _start(self) -> None:
        self._stop()
        context = multiprocessing.get_context("spawn")  # not fork: the API process has threads and connections
        ours, theirs = context.Pipe()
        self._process = context.Process(target=_serve, args=(theirs,), name="convolens-scrubbing", daemon=True)
        self._process.start()
        theirs.close()
        self._conn = ours

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()  # the child's recv ends: it exits
            self._conn = None
        if self._process is not None:
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._process = None


_RETRY = {"Retry-After": str(RETRY_AFTER_SECONDS)}
_CHILD = ScrubbingProcess()


def scrubbed(function: Callable[..., R], value: Any, *args: Any) -> R:
    """``function(value, *args)``, in the scrubbing process when called on the heavy lane's thread.
    ``function`` must be importable by name (a module-level function); send it plain data, not models."""
    if on_heavy_lane():
        return _CHILD.call(function, value, *args)
    return function(value, *args)


def in_child(function: Callable[..., R], value: Any, *args: Any) -> R:
    """``function(value, *args)`` in the child, whatever the thread: for other CPU-heavy work on a
    hostile body that would hold the API process's interpreter lock (counting a body's items without
    building its objects here: server/asgi/fast_path.py). Call it from a worker thread, never the event
    loop: the caller waits for the child's answer."""
    return _CHILD.call(function, value, *args)


def stop() -> None:
    """End the child, if one runs (the server's shutdown); the next heavy request would start another."""
    _CHILD.stop()


def _serve(conn: Connection) -> None:
    """The child: scrub what comes until the pipe closes or the API process is gone."""
    os.nice(NICE)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group: the server stops us
    garbage_collection.tune()  # each call unpickles and scrubs a request's texts: thousands of objects
    parent = multiprocessing.parent_process()
    watched: list[Any] = [conn] + ([parent.sentinel] if parent is not None else [])
    while True:
        ready = wait(watched)
        if conn not in ready:
            return  # the API process died
        try:
            function, value, args = conn.recv()
        except EOFError:
            return
        try:
            answer: tuple[bool, Any] = (True, function(value, *args))
        except Exception as exc:  # raised in the API process as if the function had run there
            answer = (False, exc)
        conn.send(answer)
