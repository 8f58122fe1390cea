"""Names for categories of topics, as a person would head a section of a report: "Billing and payments",
"Travel bookings", "Developer tools", not a phrase of one of its topics ("Card and loan").

A category spans several subjects, so no member phrase says what it is. Its name is chosen among AREAS,
broad areas of what users ask an assistant about, written for this (in English: the names are in the
project's language, and only English projects use this list): the area whose embedding is nearest to the
category's centre, less DISTINCT times its nearness to the nearest other category's centre, each area
used once. An area that fits no category well (under FIT) leaves the category its phrase name.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np

AREAS = (
    "Account and login", "Billing and payments", "Refunds and returns", "Orders and delivery",
    "Subscriptions and plans", "Pricing and discounts", "Cards and banking", "Money transfers",
    "Loans and mortgages", "Insurance and claims", "Investing and savings", "Taxes", "Travel bookings",
    "Flights", "Hotels and stays", "Trains and buses", "Food and cooking", "Health and symptoms",
    "Fitness and exercise", "Pets", "Home repairs", "Gardening and plants", "Smart home devices",
    "Internet and wifi", "Phones and mobile plans", "Cars and vehicles", "Programming", "Developer tools",
    "Databases", "Hosting and deployments", "Bugs and errors", "Data and privacy", "Language learning",
    "Writing and editing", "Math and homework", "Science questions", "Jobs and careers",
    "Work leave and HR", "Expenses", "Renting and housing", "Events and tickets", "Shopping",
    "Entertainment", "Sports", "Courses and learning", "Legal questions", "Security and fraud",
    "Weather", "Parenting and family", "Small talk",
)  # fmt: skip
DISTINCT = 0.5
# Cosine of an area's embedding to a category's centre below which the area is no name for it.
FIT = 0.2


@cache
def _areas(embed: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    return np.asarray(embed(list(AREAS)), dtype=np.float32)


def name_categories(centres: np.ndarray, embed: Callable[[list[str]], np.ndarray]) -> list[str | None]:
    """An area's name for each category (``centres``: unit vectors in the encoder's space), None where
    no area fits; no two categories get the same area."""
    if not len(centres):
        return []
    similarity = _areas(embed) @ np.asarray(centres, dtype=np.float32).T  # areas x categories
    scores = similarity.copy()
    if len(centres) > 1:
        for k in range(len(centres)):
            scores[:, k] -= DISTINCT * np.delete(similarity, k, axis=1).max(axis=1)
    names: list[str | None] = [None] * len(centres)
    taken: set[int] = set()
    # The surest pairs first: each category takes its best area that no surer category took.
    for flat in np.argsort(-scores, axis=None):
        area, k = np.unravel_index(flat, scores.shape)
        if names[k] is None and int(area) not in taken and similarity[area, k] >= FIT:
            names[k] = AREAS[int(area)]
            taken.add(int(area))
    return names
