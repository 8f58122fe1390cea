"""The names a conversation's outcome and its signals take, and how the signals are stored: one bit
each in ``conversation.outcome_signals`` (an integer), so that a filter by signal is one ``&`` on the
row, on SQLite and PostgreSQL alike, with no JSON functions.

Bits are never renumbered: a stored mask stays readable across versions (add new names at the end).
"""

from __future__ import annotations

from collections.abc import Iterable

OUTCOMES = ("resolved", "unresolved", "abandoned", "unknown")

# Read from the transcript (enrich/outcomes.py), then the explicit client events that count as implicit
# feedback on the assistant turn they follow: copy and share for it, regenerate and edit against it.
SIGNALS = (
    "rephrase",
    "correction",
    "thanks",
    "gives_up",
    "sarcasm",
    "repeated_answer",
    "off_target",
    "copy",
    "share",
    "regenerate",
    "edit",
)
BITS = {name: 1 << i for i, name in enumerate(SIGNALS)}
FEEDBACK_EVENTS = ("copy", "share", "regenerate", "edit")


def to_mask(signals: Iterable[str]) -> int:
    return sum(BITS[s] for s in set(signals))


def from_mask(mask: int | None) -> list[str]:
    """The signal names of a stored mask, in ``SIGNALS`` order (an unknown bit is ignored)."""
    if not mask:
        return []
    return [name for name, bit in BITS.items() if mask & bit]
