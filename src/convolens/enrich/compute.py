"""One lock around the numeric work of the models (BLAS and OpenMP calls), held across ``fork()``.

OpenBLAS can deadlock a ``fork()`` made while another thread is inside a BLAS call (its at-fork
handler waits for its thread pool). A process that runs the embedded worker and also forks —
gunicorn-style servers, a test harness, an app that embeds ``serve`` — would hang. So every model call
holds ``compute_lock``, and a fork waits until the call in progress is done.
"""

from __future__ import annotations

import os
import threading

# Reentrant: the sentiment classifier embeds its training examples on first use, inside its own call.
compute_lock = threading.RLock()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=compute_lock.acquire, after_in_parent=compute_lock.release, after_in_child=compute_lock.release
    )
