"""A bound on the write requests one API process holds at once: past it, 503 at once.

A per-token rate limit caps a healthy app long before the server is busy (one conversation a request
at 100 requests/s is a tenth of what the Context endpoint stores). What protects the server is
refusing work it cannot take: a write request is admitted (server/asgi/write_admission.py) only while fewer than
``bound`` are in flight in this process, from its admission to its answer, so a saturated process
answers the next one at once with 503 and ``Retry-After`` (which the SDKs honour) before reading its
body, instead of queueing bodies in memory without bound.
"""

from __future__ import annotations

RETRY_AFTER_SECONDS = 1


class WritesInFlight:
    """The count of admitted write requests. Touched on the event loop only, so no lock."""

    def __init__(self, bound: int) -> None:
        self.bound = bound  # 0: no bound
        self.count = 0

    def enter(self) -> bool:
        """Admit one more (True), or refuse it: the process is at its bound."""
        if self.bound and self.count >= self.bound:
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        self.count -= 1
