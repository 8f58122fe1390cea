"""What a rule's condition says about one window, and what that does to the rule's state. Pure
functions, no database: the worker applies them window by window, and the preview replays them over
the last 30 days, so the preview shows exactly what the worker would have done.

Conditions compare a quantity with ``threshold`` (``op``: above, below):

- ``threshold``: the window's value itself;
- ``change``: the change against the previous window, in % (undecidable when the previous one is 0
  or has too little volume);
- ``anomaly``: the z-score of the value against the ``periods`` windows before it (those with enough
  volume, at least 3 of them); a flat history with a different value is an infinite z.

``min_volume`` (every kind) keeps a window whose denominator is too small undecided: 2 negative of 3
messages is not "67% negative". An undecided window changes nothing: no firing, no resolving.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Event = Literal["fired", "resolved", "suppressed"]
MIN_HISTORY = 3


@dataclass(frozen=True)
class Measurement:
    """A window's value (None without data) and its volume: the count the value is a share or mean of."""

    value: float | None
    volume: int
    topics: tuple[tuple[int, str], ...] = ()  # emerging topics: (pk, name) of those the value counts


@dataclass(frozen=True)
class Condition:
    kind: Literal["threshold", "change", "anomaly"]
    op: Literal["above", "below"]
    threshold: float
    periods: int = 14
    min_volume: int = 0

    @property
    def history(self) -> int:
        """How many windows before the evaluated one the condition reads."""
        return {"threshold": 0, "change": 1, "anomaly": self.periods}[self.kind]


@dataclass(frozen=True)
class State:
    firing: bool = False
    last_fired_at: datetime | None = None


def quantity(condition: Condition, current: Measurement, before: list[Measurement]) -> float | None:
    """The number compared with the threshold (value, change in %, z-score); None when undecidable.
    ``before``: the ``condition.history`` windows before the current one, oldest first."""
    if current.value is None or current.volume < condition.min_volume:
        return None
    usable = [m.value for m in before if m.value is not None and m.volume >= condition.min_volume]
    if condition.kind == "threshold":
        return current.value
    if condition.kind == "change":
        if len(before) != 1 or len(usable) != 1 or usable[0] == 0:
            return None
        return (current.value - usable[0]) / abs(usable[0]) * 100.0
    if len(usable) < MIN_HISTORY:
        return None
    mean, spread = statistics.fmean(usable), statistics.pstdev(usable)
    if spread == 0:
        return 0.0 if current.value == mean else math.copysign(math.inf, current.value - mean)
    return (current.value - mean) / spread


def holds(condition: Condition, current: Measurement, before: list[Measurement]) -> bool | None:
    found = quantity(condition, current, before)
    if found is None:
        return None
    return found > condition.threshold if condition.op == "above" else found < condition.threshold


def step(state: State, holding: bool | None, window_end: datetime, cooldown: timedelta) -> tuple[State, Event | None]:
    """The rule's next state and the event, if any, after one window. Fires when the condition becomes
    true (not while it stays true); within ``cooldown`` of the last firing a new one is only recorded as
    ``suppressed`` (and so needs no "resolved" later); ``resolved`` when a fired condition clears."""
    if holding is None:
        return state, None
    if holding and not state.firing:
        if state.last_fired_at is not None and window_end - state.last_fired_at < cooldown:
            return state, "suppressed"
        return State(True, window_end), "fired"
    if not holding and state.firing:
        return State(False, state.last_fired_at), "resolved"
    return state, None
