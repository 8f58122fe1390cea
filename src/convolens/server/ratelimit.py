"""A token bucket per API token, in each API process: over the rate, 429 with ``Retry-After``.

Per process, not global: with N API processes behind a balancer a token gets up to N times the rate.
That keeps the hot path free of a shared store; a global limit belongs in the load balancer.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Hashable


class RateLimiter:
    def __init__(self, per_second: float, burst: int, max_tokens_tracked: int = 100_000) -> None:
        self.per_second = per_second
        self.burst = burst
        self.max_tracked = max_tokens_tracked
        self._buckets: dict[Hashable, tuple[float, float]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.per_second > 0

    def acquire(self, key: Hashable) -> float:
        """0 if the request may go ahead, else the seconds to wait before the next one can."""
        if not self.enabled:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens = self._tokens(key, now)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > self.max_tracked:
                self._buckets.clear()  # crude, bounded: an attacker cycling tokens cannot grow memory
            return (1 - tokens) / self.per_second

    def blocked(self, key: Hashable) -> float:
        """Like ``acquire`` but takes nothing: 0 if one more request could go ahead now."""
        if not self.enabled:
            return 0.0
        with self._lock:
            tokens = self._tokens(key, time.monotonic())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.per_second

    def refund(self, key: Hashable) -> None:
        """Gives back one request taken by ``acquire`` (one that turned out not to count)."""
        if not self.enabled:
            return
        now = time.monotonic()
        with self._lock:
            if key in self._buckets:
                self._buckets[key] = (min(float(self.burst), self._tokens(key, now) + 1), now)

    def _tokens(self, key: Hashable, now: float) -> float:
        """The key's tokens now: what was left, refilled at the rate since, up to the burst."""
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - last) * self.per_second)

    @staticmethod
    def retry_after_header(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
