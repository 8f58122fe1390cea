"""Figures computed two ways (kept running, or recomputed from the base tables) agree to their last shown
digit, up to float summation order: an average of four-decimal scores that lands on a rounding boundary
(-0.5425) rounds to -0.542 from one sum and to -0.543 from the other."""

from __future__ import annotations

from typing import Any


def same_figures(a: Any, b: Any, last_digit: float) -> bool:
    """``a == b``, floats allowed to differ by one unit of their last shown digit (``last_digit``: 0.001
    for three places), at any depth of dicts, lists and tuples."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= last_digit * 1.000001
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_figures(a[k], b[k], last_digit) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(same_figures(x, y, last_digit) for x, y in zip(a, b, strict=True))
        )
    return a == b
