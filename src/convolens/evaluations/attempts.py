"""``attempts_answer``: the response tries to answer rather than refuse or deflect (not yet built)."""

from __future__ import annotations

EVALUATORS: tuple = ()
