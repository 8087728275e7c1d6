"""The vector index: a Chroma collection of vectors and opaque chunk ids, held in memory only.

Chroma keeps text, metadata and vectors in plaintext files when it persists, so Mneme's index is
*derived*: an ``EphemeralClient`` (writes nothing to disk) filled at unlock from the vectors the
encrypted store already holds. Keyword search works while it warms up.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import chromadb
import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.config import Settings
from chromadb.utils.embedding_functions import register_embedding_function

from mneme.core import embedding as embedding_registry
from mneme.core.embedding import Embedder

log = logging.getLogger(__name__)
ADD_BATCH = 4000


@register_embedding_function
class MnemeEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma's view of a Mneme embedder (offline; never downloads anything)."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.embedder.embed(list(input)))

    @staticmethod
    def name() -> str:
        return "mneme"

    def get_config(self) -> dict[str, Any]:
        return {"embedder": self.embedder.id}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "MnemeEmbeddingFunction":
        return MnemeEmbeddingFunction(embedding_registry.create(config["embedder"]))

    def default_space(self) -> str:
        return "cosine"


_client_lock = threading.Lock()
_client = None


def _chroma():
    global _client
    with _client_lock:
        if _client is None:
            _client = chromadb.EphemeralClient(Settings(anonymized_telemetry=False, allow_reset=False))
        return _client


class Index:
    """In-memory ANN over chunk vectors of one embedder."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self._fn = MnemeEmbeddingFunction(embedder)
        self._name = f"mneme-{uuid.uuid4().hex}"
        self._col = _chroma().create_collection(
            self._name, embedding_function=self._fn, configuration={"hnsw": {"space": "cosine"}})
        self._lock = threading.Lock()
        self.loaded = 0
        self.total = 0
        self.ready = threading.Event()    # vector search may be used
        self.settled = threading.Event()  # warm-up has ended, ready or failed
        self.error: str | None = None     # why warm-up failed (keyword search still works)
        self.bad: list[int] = []          # chunk ids whose stored vectors are malformed

    def mark_ready(self) -> None:
        self.error = None
        self.ready.set()
        self.settled.set()

    def mark_failed(self, why: str) -> None:
        self.error = why
        self.settled.set()

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        for start in range(0, len(ids), ADD_BATCH):
            part = ids[start:start + ADD_BATCH]
            with self._lock:
                self._col.upsert(ids=[str(i) for i in part],
                                 embeddings=np.asarray(vectors[start:start + ADD_BATCH], dtype=np.float32))
            self.loaded += len(part)

    def delete(self, ids: Sequence[int]) -> None:
        if ids:
            with self._lock:
                for start in range(0, len(ids), ADD_BATCH):
                    self._col.delete(ids=[str(i) for i in ids[start:start + ADD_BATCH]])

    def count(self) -> int:
        with self._lock:
            return self._col.count()

    def ids(self) -> set[int]:
        out: set[int] = set()
        with self._lock:
            n = self._col.count()
            for offset in range(0, n, 10000):
                got = self._col.get(limit=10000, offset=offset, include=[])
                out.update(int(i) for i in got["ids"])
        return out

    def query(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(chunk_id, cosine similarity) best first."""
        return self._query(k, query_embeddings=[np.asarray(vector, dtype=np.float32)])

    def query_text(self, text: str, k: int) -> list[tuple[int, float]]:
        """Through the registered embedding function, as Chroma would do it itself."""
        return self._query(k, query_texts=[text])

    def _query(self, k: int, **query) -> list[tuple[int, float]]:
        with self._lock:
            n = self._col.count()
            if n == 0:
                return []
            res = self._col.query(n_results=min(k, n), include=["distances"], **query)
        return [(int(i), 1.0 - float(d)) for i, d in zip(res["ids"][0], res["distances"][0])]

    def close(self) -> None:
        with self._lock:
            try:
                _chroma().delete_collection(self._name)
            except Exception:  # already gone with the client
                log.debug("index collection already deleted")
