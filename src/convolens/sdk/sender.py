"""The background sender: a bounded queue drained by one daemon thread into batches.

The caller's side (``put``) is a lock, a deque append and, at most, an ``Event.set``. Everything slow —
serialising, gzip, HTTP, retries, the disk spool — happens on the sender thread.

Delivery: a batch is POSTed to ``/api/v1/ingest``. 2xx: done. 408/429/5xx or a connection error: retried
with exponential backoff and full jitter, honouring ``Retry-After``; after ``max_retries`` the batch goes
to the disk spool and the server is considered away, so later batches go straight to the spool until a
probe (the oldest spooled batch) gets through, then the spool is replayed oldest first. 422: the events
the server names are dropped (counted) and the rest is sent again. Other 4xx: the batch is dropped and
counted. Event ids are made on the client, so a replay never stores anything twice.
"""

from __future__ import annotations

import gzip
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from convolens import __version__
from convolens.sdk.spool import Spool

log = logging.getLogger("convolens.sdk")

SDK_NAME = f"convolens-python/{__version__}"
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_BACKOFF = 30.0
_MAX_RETRY_AFTER = 120.0
_GZIP_ABOVE_BYTES = 1024


@dataclass
class Stats:
    """What the client has done; read it with ``Client.stats``."""

    enqueued: int = 0
    sent: int = 0
    dropped: int = 0
    invalid: int = 0
    rejected: int = 0
    retries: int = 0
    spooled: int = 0
    replayed: int = 0
    truncated: int = 0
    # Drops and retries not yet reported to the server.
    unreported: dict[str, int] = field(default_factory=lambda: {"dropped": 0, "retries": 0})

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if k != "unreported"}


class _ServerAway(Exception):
    pass


class _BatchTooLarge(Exception):
    """The server's bounds are smaller than this batch: send it in halves."""


class Deferred:
    """Events to be built on the sender thread; ``size`` estimates how many (an upper bound, ideally).

    Integrations (the LangChain handler) hand over references at call time and let the sender do the
    conversion, so the app's thread pays for a lock and an append, not for building JSON-ready dicts.
    """

    __slots__ = ("build", "size")

    def __init__(self, size: int, build: Callable[[], list[dict[str, Any]]]) -> None:
        self.size = size
        self.build = build


Item = list[dict[str, Any]] | Deferred
# The sender lets go of the GIL after every queue item (and every few encoded events). An app thread that
# is busy on the CPU then loses the GIL to the sender for one small slice at a time instead of for up to
# the interpreter's 5 ms switch interval: the sender falls behind during a CPU-bound burst and catches
# up as soon as the app waits on anything (an LLM call, a socket, the event loop).
_YIELD_EVERY = 1
_ENCODE_YIELD_EVERY = 8


class Sender:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        max_queue_size: int = 100_000,
        batch_size: int = 1_000,
        max_batch_bytes: int = 2 * 1024 * 1024,
        flush_interval: float = 0.5,
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff_base: float = 0.25,
        spool: Spool | None = None,
        compress: bool | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.max_queue_size = max_queue_size
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.spool = spool
        # gzip pays off across a network, not on loopback, where it only burns the app's CPU.
        self.compress = not _is_loopback(self.base_url) if compress is None else compress
        self.transport = transport
        self._init_process_state()
        _live_senders.add(self)

    # -- per-process state (rebuilt in a forked child) ------------------------------------------
    def _init_process_state(self) -> None:
        self._pid = os.getpid()
        self.stats = Stats()
        self._lock = threading.Lock()
        self._queue: deque[Item] = deque()
        self._queued_events = 0
        self._wakeup = threading.Event()
        self._progress = threading.Condition(threading.Lock())
        # flush() waits until _handled (events delivered, spooled, dropped, or estimated but never built)
        # catches up with _put_total (events put, deferred ones by their estimate).
        self._put_total = 0
        self._handled = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._http: httpx.Client | None = None
        self._away_until = 0.0
        self._probe_delay = 1.0
        # True while the sender thread replays the spool: those events were counted as handled when
        # they were spooled, so delivering or refusing them now must not count them again.
        self._replaying = False

    def _after_fork_in_child(self) -> None:
        # The parent's queue is the parent's to send; the child starts empty with its own thread.
        self._init_process_state()

    # -- caller side ------------------------------------------------------------------------------
    def put(self, events: Item) -> None:
        """Enqueue events that belong together (e.g. one conversation). O(1); never blocks on I/O."""
        if self._pid != os.getpid():
            self._after_fork_in_child()
        n = events.size if isinstance(events, Deferred) else len(events)
        dropped = 0
        with self._lock:
            self.stats.enqueued += n
            self._put_total += n
            self._queue.append(events)
            self._queued_events += n
            while self._queued_events > self.max_queue_size and len(self._queue) > 1:
                old = self._queue.popleft()
                size = old.size if isinstance(old, Deferred) else len(old)
                self._queued_events -= size
                dropped += size
            queued = self._queued_events
        if dropped:
            self._count_drop(dropped)
        if queued >= self.batch_size and not self._wakeup.is_set():
            self._wakeup.set()
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(target=self._run, name="convolens-sender", daemon=True)
            self._thread.start()

    def _count_drop(self, n: int) -> None:
        with self._progress:
            self.stats.dropped += n
            self.stats.unreported["dropped"] += n
            self._handled += n
            self._progress.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything enqueued so far is delivered, and the spool replayed; False on timeout.

        Events that could not be delivered in time stay safe in the spool (or were counted as dropped).
        """
        with self._lock:
            target = self._put_total
        spool = self.spool
        if target == 0 and (spool is None or not spool.has_pending()):
            return True
        if self._thread is None:
            self._start()
        self._away_until = 0.0  # someone is waiting: probe the server now rather than later
        self._wakeup.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._progress:
            while self._handled < target or (spool is not None and spool.has_pending()):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._wakeup.set()
                self._progress.wait(0.05 if remaining is None else min(remaining, 0.05))
        return True

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Flush within ``timeout``, then stop the thread; whatever is left goes to the spool."""
        deadline = time.monotonic() + max(timeout, 0.0)
        flushed = self.flush(timeout=max(timeout * 0.8, 0.0))
        self._stopping = True
        self._wakeup.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(deadline - time.monotonic(), 0.0))
        self._spool_leftovers()
        if self._http is not None:
            self._http.close()
        _live_senders.discard(self)
        return flushed

    def _spool_leftovers(self) -> None:
        with self._lock:
            items = list(self._queue)
            self._queue.clear()
            self._queued_events = 0
        events = [e for item in items for e in self._materialize(item)]
        if not events:
            return
        if self.spool is not None:
            try:
                self._to_spool(events)
                return
            except OSError:
                log.exception("convolens: could not spool %d events at shutdown", len(events))
        self._count_drop(len(events))

    @property
    def queued(self) -> int:
        return self._queued_events

    # -- sender thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        if self.spool is not None and len(self.spool):
            self._away_until = 0.0  # replay what an earlier run left behind
        while not self._stopping:
            self._wakeup.wait(self.flush_interval)
            self._wakeup.clear()
            try:
                self._drain()
            except Exception:  # never let the thread die: log, and keep going
                log.exception("convolens sender: unexpected error")
                time.sleep(0.5)

    def _drain(self) -> None:
        self._replay_spool()
        while not self._stopping:
            batch = self._take()
            if not batch:
                return
            for chunk in self._split_by_bytes(batch):
                self._deliver(chunk)

    def _take(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        taken = 0
        while len(batch) < self.batch_size:
            with self._lock:
                if not self._queue:
                    break
                item = self._queue.popleft()
                self._queued_events -= item.size if isinstance(item, Deferred) else len(item)
            batch.extend(self._materialize(item))
            taken += 1
            if taken % _YIELD_EVERY == 0:
                time.sleep(0)
        return batch

    def _materialize(self, item: Item) -> list[dict[str, Any]]:
        if not isinstance(item, Deferred):
            return item
        try:
            events = item.build()
        except Exception:
            log.exception("convolens: could not build events; dropped")
            events = []
            with self._progress:
                self.stats.invalid += 1
        unbuilt = item.size - len(events)
        if unbuilt > 0:  # put by their estimate: settle the difference, for the stats and for flush()
            with self._progress:
                self.stats.enqueued -= unbuilt
                self._handled += unbuilt
                self._progress.notify_all()
        elif unbuilt < 0:  # more than estimated: count them in (a flush already waiting may not see them)
            with self._lock:
                self.stats.enqueued -= unbuilt
                self._put_total -= unbuilt
        return events

    def _split_by_bytes(self, events: list[dict[str, Any]]) -> list[list[bytes]]:
        chunks: list[list[bytes]] = [[]]
        size = 0
        for i, event in enumerate(events):
            if i % _ENCODE_YIELD_EVERY == _ENCODE_YIELD_EVERY - 1:
                time.sleep(0)
            encoded = _encode(event)
            if chunks[-1] and size + len(encoded) > self.max_batch_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append(encoded)
            size += len(encoded) + 1
        return [c for c in chunks if c]

    def _deliver(self, encoded: list[bytes], *, from_spool: bool = False) -> bool:
        """Send one batch; True once it is handled (sent, spooled or dropped), False if still away."""
        if not from_spool and self.spool is not None and time.monotonic() < self._away_until:
            self._to_spool_encoded(encoded)
            return True
        try:
            self._send_with_retries(encoded)
        except _BatchTooLarge:
            half = len(encoded) // 2
            first = self._deliver(encoded[:half], from_spool=from_spool)
            return self._deliver(encoded[half:], from_spool=from_spool) and first
        except _ServerAway:
            if from_spool:
                return False
            if self.spool is not None:
                self._to_spool_encoded(encoded)
            else:
                log.warning("convolens: server unreachable, dropped %d events (no spool)", len(encoded))
                self._count_drop(len(encoded))
            return True
        return True

    def _send_with_retries(self, encoded: list[bytes]) -> None:
        attempt = 0
        while True:
            delay: float | None
            try:
                response = self._post(encoded)
            except httpx.HTTPError as exc:
                delay = self._backoff(attempt)
                log.debug("convolens: send failed (%s), retry %d in %.2fs", exc, attempt + 1, delay)
            else:
                status = response.status_code
                if status < 300:
                    self._delivered(len(encoded))
                    return
                if len(encoded) > 1 and (status == 413 or _refuses_batch_size(response)):
                    raise _BatchTooLarge
                if status == 422:
                    encoded = self._drop_refused(encoded, response)
                    if not encoded:
                        return
                    continue
                if status not in _RETRY_STATUSES:
                    log.warning(
                        "convolens: server refused a batch of %d events: %s %s",
                        len(encoded),
                        status,
                        response.text[:300],
                    )
                    self._rejected(len(encoded))
                    return
                delay = _retry_after(response) or self._backoff(attempt)
            attempt += 1
            with self._progress:
                self.stats.retries += 1
                self.stats.unreported["retries"] += 1
            if attempt > self.max_retries or self._stopping:
                self._mark_away()
                raise _ServerAway
            if self._sleep(delay):
                self._mark_away()
                raise _ServerAway

    def _post(self, encoded: list[bytes]) -> httpx.Response:
        client_stats = {"sdk": SDK_NAME, **self.stats.unreported}
        body = b'{"events":[' + b",".join(encoded) + b'],"client":' + orjson.dumps(client_stats) + b"}"
        headers = {"Content-Type": "application/json"}
        if self.compress and len(body) > _GZIP_ABOVE_BYTES:
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        response = self._client().post("/api/v1/ingest", content=body, headers=headers)
        if response.status_code < 300:
            with self._progress:
                for key, value in client_stats.items():
                    if key != "sdk":
                        self.stats.unreported[key] -= value
        return response

    def _client(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(
                base_url=self.base_url,
                headers={"Authorization": f"Bearer {self.token}", "User-Agent": SDK_NAME},
                timeout=self.timeout,
                transport=self.transport,
            )
        return self._http

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(_MAX_BACKOFF, self.backoff_base * (2**attempt)))

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless asked to stop; True if stopping."""
        deadline = time.monotonic() + seconds
        while not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, 0.05))
        return True

    def _mark_away(self) -> None:
        self._away_until = time.monotonic() + self._probe_delay
        self._probe_delay = min(self._probe_delay * 2, _MAX_BACKOFF)

    def _delivered(self, n: int) -> None:
        self._probe_delay = 1.0
        self._away_until = 0.0
        with self._progress:
            self.stats.sent += n
            if self._replaying:
                self.stats.replayed += n
            else:
                self._handled += n
            self._progress.notify_all()

    def _rejected(self, n: int) -> None:
        with self._progress:
            self.stats.rejected += n
            self.stats.unreported["dropped"] += n
            if not self._replaying:
                self._handled += n
            self._progress.notify_all()

    def _drop_refused(self, encoded: list[bytes], response: httpx.Response) -> list[bytes]:
        bad: set[int] = set()
        try:
            for error in response.json().get("errors", []):
                loc = error.get("loc") or []
                if len(loc) >= 2 and loc[0] == "events" and isinstance(loc[1], int):
                    bad.add(loc[1])
        except (ValueError, AttributeError):
            pass
        if not bad:
            log.warning("convolens: server refused a batch of %d events: %s", len(encoded), response.text[:300])
            self._rejected(len(encoded))
            return []
        log.warning("convolens: server refused %d events: %s", len(bad), response.text[:300])
        self._rejected(len(bad))
        return [e for i, e in enumerate(encoded) if i not in bad]

    # -- spool ----------------------------------------------------------------------------------
    def _to_spool(self, events: list[dict[str, Any]]) -> None:
        self._to_spool_encoded([_encode(e) for e in events])

    def _to_spool_encoded(self, encoded: list[bytes]) -> None:
        assert self.spool is not None
        try:
            lost = self.spool.put([orjson.loads(e) for e in encoded])
        except OSError:
            log.exception("convolens: could not write the spool; dropped %d events", len(encoded))
            self._count_drop(len(encoded))
            return
        with self._progress:
            self.stats.spooled += len(encoded)
            self._handled += len(encoded)
            if lost:
                self.stats.dropped += lost
                self.stats.unreported["dropped"] += lost
            self._progress.notify_all()

    def _replay_spool(self) -> None:
        if self.spool is None or time.monotonic() < self._away_until:
            return
        while not self._stopping:
            claimed = self.spool.claim()
            if claimed is None:
                return
            path, events = claimed
            self._replaying = True
            try:
                delivered = self._deliver([_encode(e) for e in events], from_spool=True)
            finally:
                self._replaying = False
            if not delivered:
                self.spool.release(path)
                return
            self.spool.done(path)


def iso_timestamp(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat()


def _encode(event: dict[str, Any]) -> bytes:
    timestamp = event.get("timestamp")
    if isinstance(timestamp, float):
        event = {**event, "timestamp": iso_timestamp(timestamp)}
    return orjson.dumps(event)


def _refuses_batch_size(response: httpx.Response) -> bool:
    if response.status_code != 422:
        return False
    try:
        errors = response.json().get("errors", [])
    except (ValueError, AttributeError):
        return False
    return any(error.get("loc") == ["events"] for error in errors)


def _is_loopback(url: str) -> bool:
    host = httpx.URL(url).host
    return host in ("localhost", "::1") or host.startswith("127.")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


_live_senders: weakref.WeakSet[Sender] = weakref.WeakSet()


def _after_fork() -> None:
    for sender in list(_live_senders):
        sender._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork)
