"""One thread hop for the blocking part of a hot async route (token look-up, validation, the write).

A sync FastAPI route costs two or more hops to anyio's thread pool per request: one for each sync
dependency (the token look-up) and one for the endpoint. For Context's one-conversation requests those
hops were a fifth of the server's CPU (bench/README.md). ``in_thread`` runs the whole blocking part in
one ``run_in_executor`` call, which is also cheaper than anyio's ``to_thread`` machinery.

Requests that carry a lot of text (``HEAVY_TEXT_CHARS``) take ``in_heavy_lane`` instead: one thread a
process, so however many of them arrive, their scrubbing takes at most one thread's share of the CPU
and the ordinary requests queued behind them in the shared pool or the batch thread are not held up.
A crafted 700 KB conversation costs ~0.5 s to scrub; four clients sending them made every normal
request wait for them (bench/abuse.py: normal p99 x32 with them on the batch thread). The lane's
scrubbing itself runs in a child process (server/scrubbing_process.py): on the lane's thread it still
held the interpreter lock that every other request of the process needs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

# As many as anyio's default limiter: enough concurrent writes to fill a group commit (store/db.py).
_POOL = ThreadPoolExecutor(max_workers=40, thread_name_prefix="convolens-write")


# Characters of free text above which a request is heavy: a long real conversation holds ~10,000.
HEAVY_TEXT_CHARS = 64_000
_LANE = threading.local()


def _enter_heavy_lane() -> None:
    _LANE.heavy = True


_HEAVY = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convolens-heavy", initializer=_enter_heavy_lane)


async def in_thread(work: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(_POOL, work)


async def in_heavy_lane(work: Callable[[], T]) -> T:
    """``in_thread`` for requests of more than ``HEAVY_TEXT_CHARS``: they queue for one thread."""
    return await asyncio.get_running_loop().run_in_executor(_HEAVY, work)


def on_heavy_lane() -> bool:
    """Whether this thread is the heavy lane's (its scrubbing goes to a child: server/scrubbing_process.py)."""
    return getattr(_LANE, "heavy", False)


def is_heavy(texts: Iterable[str | None]) -> bool:
    total = 0
    for text in texts:
        if text:
            total += len(text)
            if total > HEAVY_TEXT_CHARS:
                return True
    return False
