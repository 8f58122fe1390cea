"""The disk spool: batches that could not be delivered wait here until the server is back.

One gzip'd JSON file per batch, written atomically (temp file + rename), named so that sorting them
gives their age and their event count. A sender claims a file by renaming it before sending, so two
processes sharing a spool never send the same file at once; a claim left by a dead process is released
on the next start. The spool is bounded in bytes: past the bound the oldest files go, counted as drops.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import time
from pathlib import Path

import orjson

log = logging.getLogger("convolens.sdk")

_SUFFIX = ".json.gz"


def default_spool_dir(base_url: str, token: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    # One spool per server and token, so a batch is only ever replayed where it was meant to go.
    key = hashlib.sha256(f"{base_url}\n{token}".encode()).hexdigest()[:16]
    return cache / "convolens" / "spool" / key


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Spool:
    def __init__(self, directory: Path, max_bytes: int = 100 * 1024 * 1024) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._seq = 0
        self._release_dead_claims()

    def _release_dead_claims(self) -> None:
        for path in self.directory.glob(f"*{_SUFFIX}.claimed-*"):
            pid = path.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _pid_alive(int(pid)):
                path.rename(path.with_name(path.name.split(".claimed-")[0]))

    def put(self, events: list[dict]) -> int:
        """Write a batch; returns how many events older files had to give up to stay in bounds."""
        self._seq += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}-{len(events)}{_SUFFIX}"
        data = gzip.compress(orjson.dumps(events), compresslevel=5)
        tmp = self.directory / f".{name}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.rename(self.directory / name)
        return self._enforce_bound()

    def _enforce_bound(self) -> int:
        files = self.pending()
        total = sum(_size(p) for p in files)
        dropped = 0
        while files and total > self.max_bytes:
            oldest = files.pop(0)
            total -= _size(oldest)
            dropped += _count(oldest)
            oldest.unlink(missing_ok=True)
        if dropped:
            log.warning("convolens spool over %d bytes: dropped the %d oldest events", self.max_bytes, dropped)
        return dropped

    def pending(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{_SUFFIX}"))

    def __len__(self) -> int:
        return len(self.pending())

    def has_pending(self) -> bool:
        """Any batch waiting or being replayed (claimed)."""
        with os.scandir(self.directory) as entries:
            return any(_SUFFIX in entry.name and not entry.name.startswith(".") for entry in entries)

    def claim(self) -> tuple[Path, list[dict]] | None:
        """Take the oldest batch: (its claimed path, its events), or None when the spool is empty."""
        for path in self.pending():
            claimed = path.with_name(f"{path.name}.claimed-{os.getpid()}")
            try:
                path.rename(claimed)
            except FileNotFoundError:
                continue  # another process took it
            try:
                return claimed, orjson.loads(gzip.decompress(claimed.read_bytes()))
            except (OSError, EOFError, orjson.JSONDecodeError, gzip.BadGzipFile):
                log.warning("convolens spool: unreadable file %s removed", claimed.name)
                claimed.unlink(missing_ok=True)
        return None

    def done(self, claimed: Path) -> None:
        claimed.unlink(missing_ok=True)

    def release(self, claimed: Path) -> None:
        """Give a claimed batch back (the server is still away)."""
        claimed.rename(claimed.with_name(claimed.name.split(".claimed-")[0]))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _count(path: Path) -> int:
    stem = path.name[: -len(_SUFFIX)]
    tail = stem.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0
