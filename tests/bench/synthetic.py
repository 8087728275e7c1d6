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


def messages(n: int, rng: np.random.Generator, start: int = 0) -> list[Message]:
    return [Message(f"s{i}", f"conv {i % 50}", 1.6e9 + i * 30, "me",
                    " ".join(rng.choice(WORDS, 14, p=ZIPF)) + f" item{i}") for i in range(start, start + n)]


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs


def build_memory(home: str | os.PathLike[str], n: int, embedder, rng: np.random.Generator | None = None) -> None:
    """A memory of *n* synthetic messages in *home*, each chunk with a stored vector from
    *embedder*'s id (random, unit length); closed again, with no index snapshot."""
    from mneme.core.memory import open_memory

    rng = rng if rng is not None else np.random.default_rng(2)
    mem = open_memory(home, embedder=embedder, warm=False)
    try:
        for start in range(0, n, IMPORT_BATCH):
            mem.import_messages(messages(min(IMPORT_BATCH, n - start), rng, start))
        while chunks := mem.store.chunks_without_embedding(embedder.id, VECTOR_BATCH):
            vecs = unit_vectors(rng, len(chunks), embedder.dim)
            mem.store.put_embeddings(embedder.id, [(c.id, v) for c, v in zip(chunks, vecs)])
    finally:
        mem.close()
