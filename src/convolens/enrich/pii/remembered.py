"""What this process has scrubbed already: the result for a text, by a digest of the text.

Apps send the same text again and again: an agent's spans carry the system prompt and the whole history
of the conversation on every turn (OpenTelemetry's ``gen_ai.input.messages``), and a chat app that logs
its transcript logs its past messages again. The door drops what the conversation already holds only
after scrubbing, since stored text is scrubbed text (``server/api/otlp.py``), so without this every past
message was scrubbed once more each turn: the scrubbing of a conversation grew with the square of its
turns.

A result is reused only where scrubbing the text again would give the same: it is kept with the
numbering-plan checks it used, and reused only while the message's ``Budget`` still has that many, which
it then spends, so a message is scrubbed exactly as without this. A result that ran out of checks is
not kept. Keys are 16-byte digests, not the raw texts; the values are the scrubbed texts (what is stored
anyway). Bounded: two generations of at most ``GENERATION_CHARS`` characters each; when the newer is full
the older is dropped.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from dataclasses import dataclass

from convolens.enrich.pii.phones import Budget

# Shorter texts are scrubbed about as fast as they are hashed and looked up.
FROM_CHARS = 100
GENERATION_CHARS = 4_000_000


@dataclass(frozen=True, slots=True)
class Kept:
    text: str | None  # None: the text came back unchanged
    found: tuple[tuple[str, int], ...]
    checks: int

    @property
    def chars(self) -> int:
        """What it holds, counted against ``GENERATION_CHARS``."""
        return ENTRY_CHARS + (len(self.text) if self.text is not None else 0)


_lock = threading.Lock()
_newer: dict[bytes, Kept] = {}
_older: dict[bytes, Kept] = {}
_newer_chars = 0


def digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def look(key: bytes) -> Kept | None:
    """The kept result of the text with digest ``key``, if any."""
    kept = _newer.get(key)  # one dict look-up is atomic: the lock is for changes
    if kept is None:
        with _lock:
            kept = _older.get(key)
            if kept is not None:  # used again: it moves to the newer generation
                _put(key, kept)
    return kept


def spend(kept: Kept, budget: Budget) -> bool:
    """Whether ``kept`` is what scrubbing its text with ``budget`` would give (it has the checks left that
    the result took); if so, they are taken from it, as scrubbing would."""
    if kept.checks > budget.checks:
        return False
    budget.checks -= kept.checks
    return True


# What a kept result costs beyond its scrubbed text, in characters' worth (the digest, the entry).
ENTRY_CHARS = 100


def keep(key: bytes, text: str | None, found: Counter[str], checks: int) -> None:
    """Remember a result (``text``: the scrubbed text, or None if unchanged) that used ``checks``
    numbering-plan checks and did not run out of them."""
    with _lock:
        _put(key, Kept(text, tuple(found.items()), checks))


def _put(key: bytes, kept: Kept) -> None:
    """Into the newer generation, which becomes the older one first if it is full (the caller holds the
    lock): a result kept or used again, the same bound for both."""
    global _newer, _older, _newer_chars
    if _newer_chars + kept.chars > GENERATION_CHARS:
        _older, _newer, _newer_chars = _newer, {}, 0
    _newer[key] = kept
    _newer_chars += kept.chars


def forget() -> None:
    """Drop everything kept (tests)."""
    global _newer, _older, _newer_chars
    with _lock:
        _newer, _older, _newer_chars = {}, {}, 0
