"""Reading SQLite's cross-process write lock from outside (store/writer/process_lock.py), for tests."""

from __future__ import annotations

import fcntl
import os


def announced(lock_path: str) -> bool:
    """Whether a write is announced on the lock at ``lock_path``: someone holds its announce file shared."""
    fd = os.open(f"{lock_path}.announce", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the lock, if it was taken
    return False
