"""Suggested topics at scale: wall time and peak RSS of clustering and naming N uncovered messages,
as the worker does it (suggest.cluster_pool: fitted on a sample, every message assigned a chunk at a time).

The N messages are synthetic: message p is the embedding of real message p mod 1,708 of
tests/data/topics*.jsonl (12 + 13 + 13 topics, several languages) plus Gaussian noise, stored as float16 like
message_embedding, with that message's text and detected language. Vectors are made a chunk at a time from a
seed per chunk, never all held, as the store reads them; the time to make them is measured apart and
subtracted. Purity: the share of a suggestion's members whose source message has the suggestion's majority
topic (a topic of the same name in two sets counts as one).

With ``--store DIR``, the same messages are first written to a new SQLite database in DIR (one
conversation each, with their texts, languages and float16 embeddings), and what is timed is the worker's
path: suggestions.read_pool (keys and a sample), suggest.cluster_pool over suggestions.pool_chunks (the
vectors read again chunk by chunk), and suggestions.conversation_ids for the members shown.

    python bench/suggest_scale.py [--n 100000] [--noise 0.35] [--store DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from convolens.enrich import embedding, suggest
from convolens.enrich import language as languages_of

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--noise", type=float, default=0.35, help="norm of the noise added to each vector")
    parser.add_argument("--store", type=Path, help="write the messages to a new SQLite database here, read them back")
    args = parser.parse_args()
    rows = [
        (json.loads(line), name)
        for name in ("topics", "topics_tune2", "topics_holdout")
        for line in (DATA / f"{name}.jsonl").read_text().splitlines()
    ]
    texts = [r["text"] for r, _ in rows]
    truth = np.unique([str(r.get("topic")) for r, _ in rows], return_inverse=True)[1]
    base = embedding.embed(texts).astype(np.float32)
    languages = [languages_of.detect(t) for t in texts]
    width, count = base.shape[1], len(texts)
    print(f"{args.n:,} messages from {count} real ones; after loading the model: peak RSS {peak_mb():.0f} MB")

    spent = [0.0, 0.0]  # wall and CPU seconds inside make(): synthesis, not clustering

    def make(start: int, stop: int) -> np.ndarray:
        began, cpu = time.perf_counter(), time.process_time()
        try:
            return _make(start, stop)
        finally:
            spent[0] += time.perf_counter() - began
            spent[1] += time.process_time() - cpu

    def _make(start: int, stop: int) -> np.ndarray:
        rng = np.random.default_rng(start)
        noise = rng.standard_normal((stop - start, width), dtype=np.float32) * (args.noise / np.sqrt(width))
        out = base[np.arange(start, stop) % count] + noise
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out.astype(np.float16)

    def chunks() -> Iterator[suggest.Chunk]:
        for start in range(0, args.n, suggest.CHUNK):
            stop = min(args.n, start + suggest.CHUNK)
            positions = np.arange(start, stop)
            yield positions, make(start, stop), [languages[p % count] for p in positions]

    if args.store is not None:
        store_path(args, chunks, texts, truth)
        return

    started, cpu = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(0)
    if args.n <= suggest.FIT_SAMPLE:
        chosen = np.arange(args.n)
    else:
        chosen = np.sort(rng.choice(args.n, suggest.FIT_SAMPLE, replace=False))
    parts = []
    for positions, vectors, _ in chunks():  # as the store reads the sample: only its rows are kept
        parts.append(vectors[np.isin(positions, chosen, assume_unique=True)])
    sample = suggest.Sample(
        vectors=np.concatenate(parts).astype(np.float32),
        texts=[texts[p % count] for p in chosen],
        languages=[languages[p % count] for p in chosen],
        positions=chosen,
    )
    clusters = suggest.cluster_pool(sample, args.n, chunks)
    took, took_cpu = time.perf_counter() - started - spent[0], time.process_time() - cpu - spent[1]
    print(f"clustering and naming: {took:.1f} s wall, {took_cpu:.1f} s CPU (making the vectors not counted)")
    report(clusters, args.n, truth, count)


def report(clusters: list[suggest.Cluster], n: int, truth: np.ndarray, count: int) -> None:
    sizes = [len(c.members) for c in clusters]
    pure = [np.bincount(truth[c.members % count]).max() / len(c.members) for c in clusters]
    print(f"peak RSS: {peak_mb():.0f} MB")
    print(f"{len(clusters)} suggestions, {sum(sizes):,} members ({sum(sizes) / n:.0%} of the messages)")
    print(f"purity, weighted by size: {np.average(pure, weights=sizes):.2f}")
    print("largest:", "; ".join(f"{c.name} ({len(c.members):,})" for c in clusters[:5]))


def store_path(args: argparse.Namespace, chunks, texts: list[str], truth: np.ndarray) -> None:
    """Write the messages to SQLite (not timed), then time the worker's read, cluster and name."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from convolens.store import migrate, projects, suggestions
    from convolens.store.db import Database
    from convolens.store.tables import conversation, message, message_embedding

    args.store.mkdir(parents=True, exist_ok=True)
    db = Database(f"sqlite:///{args.store / f'suggest-{args.n}.sqlite3'}")
    migrate.upgrade(db)
    now = datetime.now(UTC).replace(tzinfo=None)
    count = len(texts)
    with db.writer() as conn:
        project_pk, _ = projects.ensure_project(conn, f"scale-{args.n}")
    started = time.perf_counter()
    for positions, vectors, languages in chunks():
        with db.writer() as conn:
            first = int(positions[0]) + 1
            conn.execute(
                insert(conversation),
                [{"pk": first + i, "project_pk": project_pk, "id": f"c{p}", "started_at": now, "last_message_at": now,
                  "message_count": 1, "created_at": now} for i, p in enumerate(positions)],
            )  # fmt: skip
            conn.execute(
                insert(message),
                [{"pk": first + i, "project_pk": project_pk, "conversation_pk": first + i, "id": f"m{p}",
                  "position": 0, "role": "user", "kind": "message", "content": texts[p % count], "created_at": now,
                  "ingested_at": now, "language": languages[i], "enriched_version": 1}
                 for i, p in enumerate(positions)],
            )  # fmt: skip
            conn.execute(
                insert(message_embedding),
                [{"message_pk": first + i, "project_pk": project_pk, "vector": vectors[i].tobytes()}
                 for i in range(len(positions))],
            )  # fmt: skip
    print(f"written in {time.perf_counter() - started:.0f} s (not counted); peak RSS {peak_mb():.0f} MB")
    started, cpu = time.perf_counter(), time.process_time()
    with db.reader() as conn:
        pool = suggestions.read_pool(conn, project_pk)
    read = time.perf_counter() - started
    clusters = suggest.cluster_pool(pool.sample, pool.size, lambda: suggestions.pool_chunks(db.reader, pool))
    with db.reader() as conn:
        suggestions.conversation_ids(conn, sorted({int(k) for c in clusters for k in pool.pks[c.members[:50]]}))
    took, took_cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"read, cluster, name: {took:.1f} s wall ({read:.1f} s reading keys and sample), {took_cpu:.1f} s CPU")
    for c in clusters:  # members are positions in the pool: in pool.pks order, which is the order written
        c.members = pool.pks[c.members] - 1
    report(clusters, args.n, truth, count)
    db.dispose()


if __name__ == "__main__":
    main()
