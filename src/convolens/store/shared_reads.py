"""Concurrent identical reads share one trip to the database, and never one that started before them.

Every API request looks its token up (``server/auth.py``); under load the requests of one process come
in bursts (a group commit answers several at once, and their clients send again together), all with the
same token. A caller here joins the next read of its key that has not started yet, so the row it gets
was read after it arrived: a token revoked before a request arrives is still refused by that request.
At most one read of a key runs at a time, and at most one waits behind it, however many callers come.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(eq=False)
class _Round:
    done: threading.Event = field(default_factory=threading.Event)
    failed: bool = False
    result: Any = None


class SharedReads:
    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._running: dict[Hashable, _Round] = {}
        self._next: dict[Hashable, _Round] = {}  # per key, the round that starts when the running one ends
        self._pid = os.getpid()

    def read(self, key: Hashable, read: Callable[[], T]) -> T:
        """``read()``'s result, from a call of it that started after this one was made. A follower whose
        round failed reads for itself, so that every caller sees an error of its own."""
        with self._mutex:
            if self._pid != os.getpid():  # a forked child: its parent's rounds are not its to wait on
                self._running, self._next, self._pid = {}, {}, os.getpid()
            running = self._running.get(key)
            if running is None:
                mine, lead, after = _Round(), True, None
                self._running[key] = mine
            elif key in self._next:
                mine, lead, after = self._next[key], False, None
            else:
                mine, lead, after = _Round(), True, running
                self._next[key] = mine
        if not lead:
            mine.done.wait()
            return read() if mine.failed else mine.result
        if after is not None:
            after.done.wait()
            with self._mutex:  # from now on newcomers wait for a round that starts after them
                del self._next[key]
                self._running[key] = mine
        try:
            mine.result = read()
        except BaseException:
            mine.failed = True
            raise
        finally:
            with self._mutex:
                if self._running.get(key) is mine:
                    del self._running[key]
            mine.done.set()
        return mine.result
