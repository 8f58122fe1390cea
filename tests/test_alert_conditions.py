"""The alert conditions and the state step, alone (alerts/conditions.py): what each kind compares, how
the minimum volume keeps small windows undecided, and the cooldown."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from convolens.alerts.conditions import Condition, Measurement, State, holds, quantity, step

M = Measurement


def test_change_is_in_percent_of_the_previous_window_and_undecided_without_one() -> None:
    rise = Condition("change", "above", 50)
    assert quantity(rise, M(15, 15), [M(10, 10)]) == 50.0
    assert holds(rise, M(16, 16), [M(10, 10)]) is True
    assert holds(rise, M(15, 15), [M(10, 10)]) is False  # not above 50 %
    assert quantity(rise, M(15, 15), [M(0, 0)]) is None  # from nothing: no percentage
    fall = Condition("change", "below", -30)
    assert holds(fall, M(6, 6), [M(10, 10)]) is True


def test_min_volume_keeps_two_of_three_from_reading_as_67_percent() -> None:
    share = Condition("threshold", "above", 0.5, min_volume=20)
    assert holds(share, M(2 / 3, 3), []) is None
    assert holds(share, M(0.6, 40), []) is True


def test_anomaly_is_a_z_score_over_the_windows_with_enough_volume() -> None:
    z = Condition("anomaly", "above", 3, periods=5, min_volume=10)
    history = [M(0.10, 50), M(0.12, 50), M(0.08, 50), M(0.9, 2), M(0.11, 50)]  # the 0.9 of 2 is left out
    usual = quantity(z, M(0.10, 50), history)
    assert usual is not None and abs(usual) < 0.5  # it would be far off had the 0.9 of 2 counted
    assert holds(z, M(0.30, 50), history) is True
    assert holds(z, M(0.30, 50), history[:2]) is None  # fewer than 3 usable windows
    assert quantity(z, M(0.2, 50), [M(0.1, 50)] * 3) == math.inf  # a flat history, then a change


def test_the_step_fires_on_the_edge_suppresses_in_the_cooldown_and_resolves() -> None:
    t, day, cooldown = datetime(2026, 1, 1), timedelta(days=1), timedelta(days=3)
    state, event = step(State(), True, t, cooldown)
    assert (state, event) == (State(True, t), "fired")
    assert step(state, True, t + day, cooldown) == (state, None)  # still true: nothing new
    assert step(state, None, t + day, cooldown) == (state, None)  # undecided: nothing changes
    state, event = step(state, False, t + 2 * day, cooldown)
    assert (state, event) == (State(False, t), "resolved")
    assert step(state, True, t + 2 * day, cooldown) == (state, "suppressed")
    assert step(state, True, t + 3 * day, cooldown)[1] == "fired"
