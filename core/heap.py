"""Giving freed memory back: after a large transient allocation (a batch of long texts through the
embedder, an index opened and its log replayed) glibc keeps the freed pages in its arenas, where
they count as the process's resident memory until something reuses them."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") else None


def trim() -> bool:
    """``malloc_trim(0)``: return free heap pages to the system. False where there is no glibc."""
    lib = _libc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True
