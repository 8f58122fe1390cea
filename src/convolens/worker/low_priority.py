"""CPU-heavy steps of the embedded worker on a thread of lower CPU priority, its writes at normal priority.

The embedded worker used to run its whole process at a lower priority (``os.nice``). But on SQLite its
write transactions hold the lock that the API's writes wait for, and a low-priority thread holding a
lock is a priority inversion: on a busy machine the scheduler preempts it mid-transaction, and a save
of 5 ms of CPU held the lock for 80 ms (bench/abuse.py, a probe of the worker's write-lock holds). On
Linux a niceness belongs to a thread, and threads inherit their creator's: so the worker's own thread
stays at normal priority for its transactions, and only what ``LowPriority`` runs (embedding, outcome
rules, clustering) runs lower, together with any thread it starts (the embedding model's).

A stop does not wait for the step in progress: embedding a batch of long messages at low priority on a
busy machine took over 10 s, the server's whole wait for its worker (``process.STOP_SECONDS``), so every
Ctrl-C and every server stop ended in a kill. ``Interrupted`` tells the worker to hand its claim back;
nothing a step does here writes, so abandoning one loses only its CPU.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def _lower_this_thread(by: int) -> None:
    tid = threading.get_native_id()
    # Not Linux, or not allowed: the work runs at the thread's priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))


class Interrupted(Exception):
    """The worker was told to stop while a low-priority step ran; the step's result will never come."""


# How often a caller waiting for a step looks at the stop: a stop then waits at most this long.
STOP_POLL_SECONDS = 0.05


class LowPriority:
    """``low(fn, *args)``: ``fn(*args)`` on one thread ``by`` niceness steps below the caller's, waited for
    (its result returned, its exception raised) unless ``stop`` is set first: then ``Interrupted``. Only
    the thread's priority differs; the work is serial."""

    def __init__(self, by: int, stop: threading.Event | None = None) -> None:
        self.by = by
        self.stop = stop or threading.Event()
        self._thread = ThreadPoolExecutor(1, "convolens-enrich", initializer=_lower_this_thread, initargs=(by,))

    def __call__(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        future = self._thread.submit(fn, *args, **kwargs)
        while not self.stop.is_set():
            done, _ = wait([future], timeout=STOP_POLL_SECONDS)
            if done:
                return future.result()
        future.cancel()  # not started yet: it never will be; started: it runs on, and its result is dropped
        raise Interrupted

    def close(self) -> None:
        """Without waiting for a step still running (an interrupted one): the process that owns it is
        about to end (worker/process.py)."""
        self._thread.shutdown(wait=False, cancel_futures=True)


def at_normal_priority(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """The default: ``fn(*args)`` on the calling thread (a separate ``convolens worker`` process)."""
    return fn(*args, **kwargs)
