"""Model prices for cost estimates, in USD per million input and output tokens.

The defaults are list prices of common hosted models as published by their vendors in 2025; they
change, so ``CONVOLENS_MODEL_PRICES`` (a JSON object ``{"model": [input, output]}``) overrides or adds
entries, and a model that is in neither is reported as unpriced rather than counted as free.
"""

from __future__ import annotations

import json
import os

DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o3-mini": (1.10, 4.40),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "gemini-1.5-flash": (0.075, 0.30),
    "gemini-2.0-flash": (0.10, 0.40),
    "mistral-small": (0.20, 0.60),
}


def price_table(env: dict[str, str] | None = None) -> dict[str, tuple[float, float]]:
    """The defaults with ``CONVOLENS_MODEL_PRICES`` applied; ValueError naming the variable if malformed."""
    env = os.environ if env is None else env
    prices = dict(DEFAULT_PRICES)
    raw = env.get("CONVOLENS_MODEL_PRICES")
    if raw:
        try:
            overrides = json.loads(raw)
            for model, pair in overrides.items():
                prices[str(model)] = (float(pair[0]), float(pair[1]))
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise ValueError('CONVOLENS_MODEL_PRICES must be a JSON object {"model": [input, output]}') from exc
    return prices
