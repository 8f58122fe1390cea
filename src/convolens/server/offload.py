"""One thread hop for the blocking part of a hot async route (token look-up, validation, the write).

A sync FastAPI route costs two or more hops to anyio's thread pool per request: one for each sync
dependency (the token look-up) and one for the endpoint. For Context's one-conversation requests those
hops were a fifth of the server's CPU (bench/README.md). ``in_thread`` runs the whole blocking part in
one ``run_in_executor`` call, which is also cheaper than anyio's ``to_thread`` machinery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

# As many as anyio's default limiter: enough concurrent writes to fill a group commit (store/db.py).
_POOL = ThreadPoolExecutor(max_workers=40, thread_name_prefix="convolens-write")


async def in_thread(work: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(_POOL, work)
