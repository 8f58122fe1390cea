"""Classifiers trained at first use, kept on disk so that the next process loads them instead.

The sentiment classifier trains on ~6,300 example and labelled messages when a process first scores one:
~20 s of wall time (~40 s of CPU, 2 cores) in every worker process that starts, for the same result each time (its
training is deterministic). What it trained is kept here as plain arrays (``numpy.savez``, read back
without pickle), named by a hash of everything the training depends on: its examples and labels, its
settings, and the embedding model's answers to a few fixed texts (another encoder, or another tokenizer,
is another key). The wording classifier (``sentiment_wording``: 1-3 s of CPU) is kept the same way, as
``wording-<key>.npz``. A missing, unreadable or misshapen file is trained again; nothing here is ever required.

Every upgrade that changes a classifier's examples leaves its old file (~6 MB) behind: a load marks its file
used (its mtime), and a save deletes the files of the same classifier not used for ``STALE_SECONDS``. A
week, not at once: two versions side by side (a rolling upgrade) each keep their own.

The folder: ``CONVOLENS_MODEL_CACHE`` (``off``: train in every process), else
``$XDG_CACHE_HOME/convolens/classifiers`` (``~/.cache`` without it).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

log = logging.getLogger("convolens.enrich")

ENV = "CONVOLENS_MODEL_CACHE"
STALE_SECONDS = 7 * 24 * 3600
KEY_CHARS = 32


def folder() -> Path | None:
    configured = os.environ.get(ENV, "").strip()
    if configured.lower() == "off":
        return None
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "convolens" / "classifiers"


def key(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:KEY_CHARS]


def _path(name: str, of: str) -> Path | None:
    where = folder()
    return None if where is None else where / f"{name}-{of}.npz"


def load(name: str, of: str, shapes: dict[str, tuple[int | None, ...]]) -> dict[str, np.ndarray] | None:
    """The arrays saved as ``name`` for key ``of``, if there, readable and of these ``shapes`` (None: any
    length on that axis); else None."""
    path = _path(name, of)
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {field: np.array(saved[field]) for field in shapes}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        log.warning("a cached classifier could not be read (%s), training it again: %s", path, exc)
        return None
    for field, shape in shapes.items():
        got = arrays[field].shape
        if len(got) != len(shape) or any(want is not None and want != n for want, n in zip(shape, got, strict=True)):
            log.warning("a cached classifier has the wrong shape (%s), training it again", path)
            return None
    with contextlib.suppress(OSError):  # a read-only folder: the file may go stale, no matter
        os.utime(path)  # used: not stale for another STALE_SECONDS
    return arrays


def save(name: str, of: str, arrays: dict[str, np.ndarray]) -> None:
    """Keeps ``arrays`` for the next process: written beside, then renamed (a reader never sees half a
    file). A folder that cannot be written is no error: the next process trains again."""
    path = _path(name, of)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{name}-", suffix=".npz", delete=False) as out:
            np.savez(out, **arrays)
        os.replace(out.name, path)
    except OSError as exc:
        log.info("a trained classifier was not kept (%s): %s", path, exc)
        return
    _prune(path, name)


def _prune(kept: Path, name: str) -> None:
    """Deletes the files of classifier ``name`` other than ``kept`` that no process used for STALE_SECONDS."""
    stale_before = time.time() - STALE_SECONDS
    # Exactly this classifier's names (``_path``: the name, a dash, a key of KEY_CHARS hex digits): another
    # classifier's name may begin with this one's and a dash.
    for other in kept.parent.glob(f"{name}-{'[0-9a-f]' * KEY_CHARS}.npz"):
        try:
            if other != kept and other.stat().st_mtime < stale_before:
                other.unlink()
        except OSError:  # another process pruned it first, or the folder is read-only: no matter
            continue
