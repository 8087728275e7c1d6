"""The synthetic memory the scale benchmarks unlock: chat messages of Zipf-distributed made-up
words, one text chunk each, with stored random unit vectors (so no embedding time is measured)."""

from __future__ import annotations

import os

import numpy as np

from mneme.core.records import Message

_rng = np.random.default_rng(0)
# A 5,000-word vocabulary drawn Zipf-like, as words are in real text (a few common, most rare).
WORDS = np.array(["".join(_rng.choice(list("abcdefghijklmnopqrstuvwxyz"), _rng.integers(3, 10)))
                  for _ in range(5000)])
ZIPF = 1.0 / np.arange(1, len(WORDS) + 1)
ZIPF /= ZIPF.sum()
IMPORT_BATCH = 50_000
VECTOR_BATCH = 20_000


def messages(n: int, rng: np.random.Generator, start: int = 0, at_once: bool = False) -> list[Message]:
    """*at_once* draws every word in one call (1M messages in seconds; other texts from the same
    seed than the message-by-message draw the earlier benchmarks used)."""
    if at_once:
        rows = (" ".join(row) for row in WORDS[rng.choice(len(WORDS), (n, 14), p=ZIPF)])
    else:
        rows = (" ".join(rng.choice(WORDS, 14, p=ZIPF)) for _ in range(n))
    return [Message(f"s{i}", f"conv {i % 50}", 1.6e9 + i * 30, "me", text + f" item{i}")
            for i, text in zip(range(start, start + n), rows)]


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs


def build_memory(home: str | os.PathLike[str], n: int, embedder, rng: np.random.Generator | None = None,
                 at_once: bool = False) -> None:
    """A memory of *n* synthetic messages in *home*, each chunk with a stored vector from
    *embedder*'s id (random, unit length); closed again, with no index snapshot. *at_once*: the
    words drawn at once (see ``messages``) and the keyword index built in one pass after the import
    (``rebuild``) instead of row by row by its trigger, which costs most of an import (~7 of 9 ms a
    message on the loaded machine): the same rows, an FTS index merged into fewer segments."""
    from mneme.core.memory import open_memory

    import sys
    import time

    rng = rng if rng is not None else np.random.default_rng(2)
    t0 = time.perf_counter()
    mem = open_memory(home, embedder=embedder, warm=False)
    try:
        trigger = None
        if at_once:
            with mem.store.transaction() as db:
                (trigger,) = db.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND "
                                        "name = 'chunks_ai'").fetchone()
                db.execute("DROP TRIGGER chunks_ai")
        for start in range(0, n, IMPORT_BATCH):
            mem.import_messages(messages(min(IMPORT_BATCH, n - start), rng, start, at_once))
            print(f"build: {min(n, start + IMPORT_BATCH):,} messages stored, {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)
        if trigger:
            with mem.store.transaction() as db:
                db.execute(trigger)
            mem.store.rebuild_fts()
            print(f"build: keyword index built, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        # the stored vectors, by chunk id in order (no scan for chunks without one at each batch)
        last = done = 0
        while True:
            ids = [cid for (cid,) in mem.store._q("SELECT id FROM chunks WHERE id > ? ORDER BY id LIMIT ?",
                                                   (last, VECTOR_BATCH))]
            if not ids:
                break
            last = ids[-1]
            mem.store.put_embeddings(embedder.id, list(zip(ids, unit_vectors(rng, len(ids), embedder.dim))))
            done += len(ids)
            if done % 100_000 < VECTOR_BATCH:
                print(f"build: {done:,} vectors stored, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        mem.close()
