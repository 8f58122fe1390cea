"""The evaluators a test set may name: the built-in ones and those other packages register.

A custom evaluator is an object (or a class made with no arguments) with ``name``, ``offline``,
``check_options`` and ``evaluate`` (base.py ``Evaluator``), published by its package under the entry
point group ``convolens.evaluators``, e.g. in its pyproject.toml::

    [project.entry-points."convolens.evaluators"]
    tone = "my_package.evaluators:PoliteTone"

Entry points are read once per process (the server to accept the name at upload, the workers to run
it). A plugin cannot replace a built-in evaluator, and one that fails to load is logged and left out.
"""

from __future__ import annotations

import logging
import threading
from importlib.metadata import entry_points
from typing import Any

from convolens.evaluations.base import Evaluator, OptionError

log = logging.getLogger("convolens.evaluations")

ENTRY_POINT_GROUP = "convolens.evaluators"
MAX_NAME_CHARS = 64

_registered: dict[str, Evaluator] = {}
_builtin_names: set[str] = set()
_lock = threading.Lock()
_loaded = False


def register(evaluator: Evaluator, *, builtin: bool = False) -> None:
    """Make ``evaluator`` available under its ``name`` (a test or a plugin loader calls this)."""
    name = getattr(evaluator, "name", None)
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise ValueError(f"an evaluator needs a name of 1 to {MAX_NAME_CHARS} characters, got {name!r}")
    for method in ("check_options", "evaluate"):
        if not callable(getattr(evaluator, method, None)):
            raise ValueError(f"evaluator {name!r} has no {method}()")
    with _lock:
        if name in _builtin_names:
            raise ValueError(f"{name!r} is a built-in evaluator and cannot be replaced")
        if builtin:
            _builtin_names.add(name)
        _registered[name] = evaluator


def _builtins() -> None:
    from convolens.evaluations import attempts, checks, golden, judge, phrase, semantic

    for module in (golden, phrase, semantic, checks, attempts, judge):
        for evaluator in module.EVALUATORS:
            register(evaluator, builtin=True)


def _plugins() -> None:
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found: Any = point.load()
            register(found() if isinstance(found, type) else found)
        except Exception:  # a broken plugin must not take the server or the workers down
            log.exception("evaluator entry point %r could not be loaded; left out", point.name)


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        _loaded = True
    _builtins()
    _plugins()


def get(name: str) -> Evaluator | None:
    _ensure_loaded()
    return _registered.get(name)


def names() -> list[str]:
    _ensure_loaded()
    return sorted(_registered)


def check(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """The options of evaluator ``name`` normalised; ``OptionError`` (field ``evaluator`` for an
    unknown name) otherwise."""
    evaluator = get(name)
    if evaluator is None:
        raise OptionError("evaluator", f"no evaluator named {name[:MAX_NAME_CHARS]!r} (known: {', '.join(names())})")
    return evaluator.check_options(dict(options or {}))


def calls_llm(spec: dict[str, Any]) -> bool:
    """Whether an evaluator spec ({evaluator, options}) asks the LLM provider: an evaluator that is not
    offline, or an offline one told to use the LLM (``method: llm``). Online evaluation spends the
    project's daily allowance on these only."""
    evaluator = get(str(spec.get("evaluator")))
    return evaluator is None or not evaluator.offline or (spec.get("options") or {}).get("method") == "llm"
