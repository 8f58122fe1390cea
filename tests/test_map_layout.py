"""The topic map's layout: bubbles that the projection puts on one spot are parted, and no label covers
another label or a bubble (issue 23: labels overlapped where alike topics sat close)."""

from __future__ import annotations

import random

from convolens.server.web import map_layout


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_bubbles_on_one_spot_are_parted_inside_the_map() -> None:
    circles = [(430.0, 140.0, 20.0)] * 4 + [(432.0, 141.0, 30.0)]
    moved = map_layout.spread(circles, 860, 280)
    for i, (x, y) in enumerate(moved):
        r = circles[i][2]
        assert r <= x <= 860 - r and r <= y <= 280 - r
        for j in range(i + 1, len(moved)):
            distance = ((x - moved[j][0]) ** 2 + (y - moved[j][1]) ** 2) ** 0.5
            assert distance >= r + circles[j][2], (i, j, distance)


def test_no_label_covers_another_label_or_a_bubble() -> None:
    rng = random.Random(7)
    circles = [(rng.uniform(100, 760), rng.uniform(40, 240), rng.uniform(7, 30)) for _ in range(14)]
    moved = map_layout.spread(circles, 860, 280)
    circles = [(x, y, c[2]) for (x, y), c in zip(moved, circles, strict=True)]
    labels = [f"Refunds for charges {i}" for i in range(len(circles))]
    places = map_layout.place_labels(circles, labels, 860, 280)
    boxes = [p.box for p in places if p is not None]
    assert len(boxes) >= 7  # half at least get a label; the rest keep their name in the tooltip
    for i, a in enumerate(boxes):
        assert a[0] >= 0 and a[2] <= 860 and a[1] >= 0 and a[3] <= 280
        assert not any(_overlap(a, b) for b in boxes[i + 1 :])
        for x, y, r in circles:
            nearest_x, nearest_y = min(max(x, a[0]), a[2]), min(max(y, a[1]), a[3])
            assert (nearest_x - x) ** 2 + (nearest_y - y) ** 2 >= r * r - 1e-6


def test_the_first_labels_get_the_place_under_their_bubble() -> None:
    places = map_layout.place_labels([(200.0, 100.0, 20.0), (600.0, 100.0, 20.0)], ["Refunds", "SQL joins"], 860, 280)
    assert [p.anchor for p in places if p] == ["middle", "middle"]
    assert all(p is not None and p.y > 120 for p in places)


def test_a_korean_label_is_measured_wider_than_as_many_latin_letters() -> None:
    korean, latin = "배열 중복을 제거하려면", "abcdefghijkl"
    assert len(korean) == len(latin)
    assert map_layout.label_width(korean) > 1.7 * map_layout.label_width(latin)
