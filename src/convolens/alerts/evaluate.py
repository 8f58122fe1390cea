"""One window of one rule, from the figures to the event: what the worker decides, and what the
preview replays over many windows with the very same functions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from convolens.alerts import conditions
from convolens.alerts.conditions import Condition, Event, Measurement, State
from convolens.alerts.measure import WINDOWS, measure
from convolens.schemas.alerts import EVENT_METRICS

PREVIEW_WINDOWS = {"day": 30, "hour": 72}
WEEK = timedelta(days=7)  # 30 days day by day; an hourly rule over its last 3 days


def condition_of(definition: dict) -> Condition:
    c = definition["condition"]
    return Condition(c["kind"], c["op"], float(c["threshold"]), int(c.get("periods", 14)), int(c.get("min_volume", 0)))


@dataclass(frozen=True)
class Outcome:
    window: tuple[datetime, datetime]
    seen: Measurement
    holds: bool | None
    state: State
    event: Event | None


def judge(
    conn: Connection,
    project_pk: int,
    definition: dict,
    start: datetime,
    told: frozenset[int] = frozenset(),
    cache: dict[tuple[datetime, datetime], Measurement] | None = None,
) -> tuple[Measurement, bool | None]:
    """The window starting at ``start``: its measurement, and whether the condition holds (None: undecided)."""
    condition = condition_of(definition)
    length = WINDOWS[definition["window"]]

    def measured(lo: datetime, hi: datetime, told_: frozenset[int] = frozenset()) -> Measurement:
        # A replay reads each window once, though an anomaly condition looks back at it 14 more times.
        if cache is None or definition["metric"] == "emerging_topics":  # that one depends on what was told
            return measure(conn, project_pk, definition, lo, hi, told_)
        if (lo, hi) not in cache:
            cache[(lo, hi)] = measure(conn, project_pk, definition, lo, hi, told_)
        return cache[(lo, hi)]

    if condition.kind == "change" and definition["condition"].get("against") == "week_before":
        # The same weekday (and hour) a week before: a Monday is compared with a Monday, not a Sunday.
        before = [measured(start - WEEK, start - WEEK + length)]
    else:
        before = [measured(start - length * i, start - length * (i - 1)) for i in range(condition.history, 0, -1)]
    seen = measured(start, start + length, told)
    return seen, conditions.holds(condition, seen, before)


def next_step(
    conn: Connection,
    project_pk: int,
    definition: dict,
    state: State,
    start: datetime,
    told: frozenset[int] = frozenset(),
    cache: dict[tuple[datetime, datetime], Measurement] | None = None,
) -> Outcome:
    """The rule's decision for the window from ``start``. ``told``: the topics an emerging-topics rule has
    told of already (each topic is news once)."""
    seen, holding = judge(conn, project_pk, definition, start, told, cache)
    end = start + WINDOWS[definition["window"]]
    cooldown = timedelta(minutes=int(definition.get("cooldown_minutes", 0)))
    if definition["metric"] in EVENT_METRICS:
        # News, not a state: each window that holds fires (cooldown aside), and nothing is "resolved".
        state = State(False, state.last_fired_at)
    after, event = conditions.step(state, holding, end, cooldown)
    return Outcome((start, end), seen, holding, after, event)


def told_after(outcome: Outcome, told: frozenset[int]) -> frozenset[int]:
    """The topics told of once this window is decided: those it counted, if it fired (within the cooldown
    they stay news for later)."""
    return told | {pk for pk, _ in outcome.seen.topics} if outcome.event == "fired" else told


def replay(conn: Connection, project_pk: int, definition: dict, first: datetime, windows: int) -> list[Outcome]:
    """The rule decided window after window from ``first``, from a quiet state (no firing, no cooldown)."""
    state, found, told = State(), [], frozenset[int]()
    length = WINDOWS[definition["window"]]
    cache: dict[tuple[datetime, datetime], Measurement] = {}
    for i in range(windows):
        outcome = next_step(conn, project_pk, definition, state, first + length * i, told, cache)
        state, told = outcome.state, told_after(outcome, told)
        found.append(outcome)
    return found
