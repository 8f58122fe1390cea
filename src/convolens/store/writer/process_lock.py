"""Ingestion first across processes on one SQLite file: its write lock, taken ahead of SQLite, and the
announcement of ingest writes that the enrichment worker's writes give way to.

``FileWriteLock``: the write lock every process sharing the file takes (an ``flock`` beside it), a
worker's lock yielding to announced writes. ``WritesComing``: an API process announces its ingest
requests from their translation to their commit, not only while they wait for the lock, so that a burst
reads as one long announcement instead of many short writes with gaps between them.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class FileWriteLock:
    """SQLite's write lock, taken ahead of SQLite across the processes sharing a database file (several
    ``convolens serve --workers``, a ``convolens worker``, the CLI): an ``flock`` on a file beside the
    database. Without it a process that finds the database locked sleeps in SQLite's busy handler
    (1, 2, 5, 10… ms), which left the database idle between transactions; here a waiter polls a lock
    that costs a system call, backing off to at most a millisecond.

    Ingestion first: a lock that ``yields`` (an enrichment worker's) lets the others' writes go before
    its own. The others announce theirs with a shared ``flock`` on a second file, held while they wait and
    write, and by an API process for as long as any ingest request is on its way (``WritesComing``); a
    yielding lock takes the write lock only once it has seen no announcement for ``QUIET_SECONDS``, or
    after ``YIELD_SECONDS``, so that enrichment still moves under a stream of ingest that never pauses.
    Without it the worker's saves ran back to back: releasing the lock and taking it again at once beat
    an API process polling for it, whose requests waited for several of them (bench/abuse.py: the normal
    client's p99 three times higher with the embedded worker on, even without hostile load)."""

    # The longest a yielding lock waits for announced writes before it takes its turn anyway: under a
    # burst that never pauses, one of the worker's transactions every two seconds (its claim, its save,
    # its rollup…). 0.5 s let it take a batch's CPU too often: a Context burst stored 0.94 as many
    # conversations a second with the worker on as with it off, 0.97 at 2 s (bench/README.md, stop 37).
    YIELD_SECONDS = 2.0
    # How long a yielding lock must have seen no write announced before it takes its turn. A burst from
    # several clients keeps some request always on its way; a paced stream leaves most of each interval
    # free, and a worker that waited longer than its gaps (20 ms at 60 requests a second) was starved:
    # 16 % of a 30-second stream enriched by its end against 59 % before. A lock that has seen no
    # announcement for that long (an idle server's worker) goes at once.
    QUIET_SECONDS = 0.01
    # The longest a write waits to announce itself. A yielding lock holds the announce file exclusively for
    # the instant of its check; were its (niced) thread preempted in that instant, a blocking wait would hold
    # an API write behind the worker's next time slice. Past this the write goes on unannounced: the worker
    # may then take one turn first, as before ingestion first.
    ANNOUNCE_SECONDS = 0.002

    def __init__(self, path: str, *, yields: bool = False) -> None:
        self.path = path
        self.yields = yields
        self._fd: int | None = None
        self._announce: int | None = None
        self._announced = False
        # When a yielding lock last saw another process's write announced (time.monotonic()).
        self._write_seen = -math.inf
        self._pid = 0

    def _open(self) -> tuple[int, int]:
        if self._fd is None or self._announce is None or self._pid != os.getpid():
            # A forked child opens its own: a shared open file description would share the lock too.
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._announce = os.open(f"{self.path}.announce", os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd, self._announce

    def acquire(self, timeout: float) -> bool:
        import fcntl

        fd, announce = self._open()
        deadline = time.monotonic() + timeout
        if self.yields:
            self._write_seen = _quiet_for(
                announce, self.QUIET_SECONDS, min(deadline, time.monotonic() + self.YIELD_SECONDS), self._write_seen
            )
        else:
            # Shared with every other announced write, never waited for long (ANNOUNCE_SECONDS).
            self._announced = _poll(
                lambda: try_flock(announce, fcntl.LOCK_SH), min(deadline, time.monotonic() + self.ANNOUNCE_SECONDS)
            )
        if _poll(lambda: try_flock(fd), deadline):
            return True
        self._unannounce()
        return False

    def release(self) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._unannounce()

    def _unannounce(self) -> None:
        import fcntl

        if self._announced and self._announce is not None:
            fcntl.flock(self._announce, fcntl.LOCK_UN)
        self._announced = False

    def close(self) -> None:
        if self._pid == os.getpid():
            for fd in (self._fd, self._announce):
                if fd is not None:
                    os.close(fd)
        self._fd = self._announce = None
        self._announced = False


def try_flock(fd: int, mode: int | None = None) -> bool:
    """Takes the ``flock`` in ``mode`` (exclusive by default) if it is free now."""
    import fcntl

    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if mode is None else mode) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _no_write_announced(announce: int) -> bool:
    import fcntl

    if not try_flock(announce):
        return False
    fcntl.flock(announce, fcntl.LOCK_UN)
    return True


# How often a yielding lock looks for announced writes while it waits for quiet.
QUIET_POLL_SECONDS = 0.001


def _quiet_for(announce: int, quiet: float, deadline: float, last_seen: float) -> float:
    """Waits until no write is announced on ``announce`` and none has been seen for ``quiet`` seconds, or
    until ``deadline``; returns when a write was last seen (``last_seen`` is the previous wait's answer).
    A look is an instant: writes between two looks go unseen, but a burst's are many, and one seen starts
    the quiet over. Looks are taken only while waiting, so a lock that saw no write for a while takes its
    turn at once: an idle server's worker does not wait for quiet before each of its transactions."""
    while True:
        now = time.monotonic()
        if not _no_write_announced(announce):
            last_seen = now
        elif now - last_seen >= quiet:
            return last_seen
        if now > deadline:
            return last_seen
        time.sleep(QUIET_POLL_SECONDS)


def _poll(ready: Callable[[], bool], deadline: float) -> bool:
    """``ready()`` until it is true (True) or ``deadline`` passes (False), backing off to a millisecond."""
    pause = 0.00005
    while not ready():
        if time.monotonic() > deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.001)
    return True


class WritesComing:
    """While any ingest request of this process is on its way to a write (translated, bounds-checked,
    scrubbed, waiting for its turn), a shared ``flock`` on the write lock's announce file: the
    ``FileWriteLock`` of an enrichment worker waits until nobody has held one for ``QUIET_SECONDS``.

    Announcing only while waiting for the lock and writing left gaps of a millisecond or two between a
    burst's group commits, and the worker went in at each gap it saw (a turn, and a batch's CPU, every few
    commits); waiting for a longer quiet instead starved enrichment under a steady, paced stream, whose
    writes are never far apart (bench/README.md, stop 37). Requests in flight are what "ingestion first"
    means: a burst keeps some always, a paced stream leaves most of each interval free."""

    def __init__(self, lock_path: str) -> None:
        self.path = f"{lock_path}.announce"
        self._guard = threading.Lock()
        self._count = 0
        self._fd: int | None = None
        self._pid = 0
        self._held = False

    @contextmanager
    def during(self) -> Iterator[None]:
        """Announces writes on their way for the ``with`` block (nested and concurrent uses count)."""
        self._enter()
        try:
            yield
        finally:
            self._leave()

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
            self._held = False
        return self._fd

    def _enter(self) -> None:
        import fcntl

        with self._guard:
            self._count += 1
            if not self._held:
                # Never waited for: a worker's check holds the file exclusively for an instant, and the
                # write's own announcement (FileWriteLock.acquire) still follows.
                self._held = try_flock(self._file(), fcntl.LOCK_SH)

    def _leave(self) -> None:
        import fcntl

        with self._guard:
            self._count -= 1
            if self._count == 0 and self._held and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                self._held = False

    def close(self) -> None:
        with self._guard:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None
            self._held = False
