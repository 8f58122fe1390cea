"""What building the rollups costs the worker: thread CPU seconds (and wall seconds) to compute every
rolled-up day of a database again with ``rollups.compute``, by whichever code is on ``PYTHONPATH``. It
only reads, so one database (e.g. the SQLite file ``rollup_reads.py`` leaves in a temporary directory)
serves main and a branch, run alternately:

    PYTHONPATH=/work/main/src python bench/rollup_build.py sqlite:////tmp/…/bench.sqlite3
    PYTHONPATH=src python bench/rollup_build.py sqlite:////tmp/…/bench.sqlite3
"""

from __future__ import annotations

import sys
import time

from sqlalchemy import select

from convolens.store import rollups
from convolens.store.db import Database
from convolens.store.tables import rollup


def main() -> None:
    db = Database(sys.argv[1])
    with db.reader() as conn:
        days = conn.execute(select(rollup.c.project_pk, rollup.c.day).distinct()).all()
    cpu, wall = time.thread_time(), time.perf_counter()
    for project_pk, day in days:
        with db.snapshot() as conn:
            rollups.compute(conn, rollups.DueDay(project_pk, day))
    print(f"{len(days)} days: cpu {time.thread_time() - cpu:.2f} s, wall {time.perf_counter() - wall:.2f} s")


if __name__ == "__main__":
    main()
