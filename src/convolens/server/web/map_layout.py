"""Where the topic map's bubbles and labels go, so that none covers another.

The projection of the topics' centres puts alike topics close, often on top of each other, and a label
under each bubble then runs into its neighbours' (issue 23: "labels overlap in the map"). Bubbles are
first pushed apart a few pixels at a time, which keeps neighbours neighbours; then each label, largest
topic first, takes the first free place among below, above, right, left and the four diagonals. A label with
no free place is left off the map: the bubble still has its name in its tooltip and in the list below.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

CHAR_WIDTH = 6.6  # px per character of the map's 12 px labels (an average over mixed case)
LABEL_HEIGHT = 14
GAP = 3  # px between a bubble and its label, and kept between bubbles


@dataclass
class Placed:
    x: float
    y: float
    anchor: str  # the SVG text-anchor: start, middle or end
    box: tuple[float, float, float, float]  # left, top, right, bottom


def spread(
    circles: list[tuple[float, float, float]], width: float, height: float, rounds: int = 60
) -> list[tuple[float, float]]:
    """Centres of ``circles`` (x, y, radius) moved apart until no two overlap (or ``rounds`` ran out),
    each kept inside the ``width`` by ``height`` box. Small moves, so the picture stays the projection."""
    points = [[x, y] for x, y, _ in circles]
    radii = [r for _, _, r in circles]
    for _ in range(rounds):
        moved = False
        for i in range(len(points)):
            for j in range(i + 1, len(points)):
                dx, dy = points[j][0] - points[i][0], points[j][1] - points[i][1]
                distance = (dx * dx + dy * dy) ** 0.5
                wanted = radii[i] + radii[j] + GAP
                if distance >= wanted:
                    continue
                if distance < 1e-6:  # the same place: part them sideways, alternately
                    dx, dy, distance = (1.0 if (i + j) % 2 else -1.0), 0.0, 1.0
                push = (wanted - distance) / 2
                ux, uy = dx / distance, dy / distance
                points[i][0] -= ux * push
                points[i][1] -= uy * push
                points[j][0] += ux * push
                points[j][1] += uy * push
                moved = True
        for p, r in zip(points, radii, strict=True):
            p[0] = min(max(p[0], r), width - r)
            p[1] = min(max(p[1], r), height - r)
        if not moved:
            break
    return [(round(x, 1), round(y, 1)) for x, y in points]


def label_width(label: str) -> float:
    """The label's width in px: Korean, Japanese and Chinese characters are drawn about twice as wide
    (a Korean label was measured as half its width, and ran into its neighbour's)."""
    return CHAR_WIDTH * sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in label)


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _hits_circle(box: tuple[float, float, float, float], circle: tuple[float, float, float]) -> bool:
    x, y, r = circle
    nearest_x = min(max(x, box[0]), box[2])
    nearest_y = min(max(y, box[1]), box[3])
    return (nearest_x - x) ** 2 + (nearest_y - y) ** 2 < r * r


def place_labels(
    circles: list[tuple[float, float, float]], labels: list[str], width: float, height: float
) -> list[Placed | None]:
    """A free place for each label (None: no room), in the order given, which should be most important
    first. A place is free when its box is inside the map and covers no bubble and no placed label."""
    taken: list[tuple[float, float, float, float]] = []
    out: list[Placed | None] = []
    for (x, y, r), label in zip(circles, labels, strict=True):
        w = label_width(label)
        below, above = y + r + GAP, y - r - GAP
        d = 0.75 * r + GAP  # the diagonal places start just off the bubble's edge at 45 degrees
        options = [  # (text x, baseline y, anchor, box)
            (x, below + LABEL_HEIGHT - 3, "middle", (x - w / 2, below, x + w / 2, below + LABEL_HEIGHT)),
            (x, above - 3, "middle", (x - w / 2, above - LABEL_HEIGHT, x + w / 2, above)),
            (x + r + GAP, y + 4, "start", (x + r + GAP, y - LABEL_HEIGHT / 2, x + r + GAP + w, y + LABEL_HEIGHT / 2)),
            (x - r - GAP, y + 4, "end", (x - r - GAP - w, y - LABEL_HEIGHT / 2, x - r - GAP, y + LABEL_HEIGHT / 2)),
            (x + d, y + d + LABEL_HEIGHT - 3, "start", (x + d, y + d, x + d + w, y + d + LABEL_HEIGHT)),
            (x - d, y + d + LABEL_HEIGHT - 3, "end", (x - d - w, y + d, x - d, y + d + LABEL_HEIGHT)),
            (x + d, y - d - 3, "start", (x + d, y - d - LABEL_HEIGHT, x + d + w, y - d)),
            (x - d, y - d - 3, "end", (x - d - w, y - d - LABEL_HEIGHT, x - d, y - d)),
        ]  # fmt: skip
        chosen = None
        for tx, ty, anchor, box in options:
            inside = box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height
            if (
                inside
                and not any(_overlaps(box, other) for other in taken)
                and not any(_hits_circle(box, c) for c in circles)
            ):
                chosen = Placed(round(tx, 1), round(ty, 1), anchor, box)
                break
        if chosen is not None:
            taken.append(chosen.box)
        out.append(chosen)
    return out
