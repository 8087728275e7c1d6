"""What core needs of an embedder, and a registry the model layer fills.

core never imports the model layer: callers hand an :class:`Embedder` in. ``register`` lets
``mneme.models`` (or a test's fake) publish factories under an id, so an index can be rebuilt by id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    id: str   # recorded with every vector; a different id means re-embedding, never mixing
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        ...


_FACTORIES: dict[str, Callable[[], Embedder]] = {}


def register(embedder_id: str, factory: Callable[[], Embedder]) -> None:
    _FACTORIES[embedder_id] = factory


def create(embedder_id: str) -> Embedder:
    try:
        return _FACTORIES[embedder_id]()
    except KeyError:
        raise LookupError(f"no embedder registered as {embedder_id!r}") from None
