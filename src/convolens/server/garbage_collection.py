"""The cycle collector's settings for a process that serves requests (an API process, the scrubbing child).

A 512-span OTLP export or a 100-conversation batch builds tens of thousands of container objects that
live as long as the request (spans, events, dicts, rows). With CPython's default thresholds (700, 10,
10) translating and writing one such export ran 32-40 young collections, 2-4 middle ones, and a full one
every few requests, which walks the whole heap: the app, its routes, pydantic's schemas, the PII rules.
With these settings it runs none or one young collection.

Measured with ``bench/otlp_ingest.py``, alternated with the defaults (bench/README.md, 2026-12-06): the
API process's CPU a span x0.81-0.91, p99 latency 311-328 ms → 186-227 ms; native batches
(``bench/ingest.py``) x0.95 CPU a message. Memory is not at stake: only reference cycles wait longer
(objects without cycles are freed by their reference counts as before), at most ``YOUNG`` container
objects more, and peak RSS did not move.

The objects alive once a process has started (modules, the app, compiled rules) are moved out of the
collector's sight (``gc.freeze``): they live as long as the process, and a full collection walked them
every time. Call ``tune()`` once, at the end of a process's start, never in a library or in a test
process that imports the app.
"""

from __future__ import annotations

import gc

# Young collections after this many new container objects: none or one per large request instead of 32-40.
# 10,000 was measured slower than 50,000, and so was 200,000 (a young generation larger than the caches).
YOUNG = 50_000
# Middle-generation collections per young one, and full collections per middle one (CPython's full
# collections also wait until the objects that outlived a middle collection reach a quarter of the heap).
MIDDLE = 20
OLD = 100


def tune() -> None:
    """Freeze what this process holds now and raise the thresholds (see the module's docstring)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
