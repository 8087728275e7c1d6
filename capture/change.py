"""Cheap change detection: a downscaled grey copy of each monitor, compared tile by tile.

Unchanged frames are skipped entirely; changed tiles are merged into rectangles so only those are
OCR'd. Costs a few milliseconds for a 1080p frame.
"""

from __future__ import annotations

import numpy as np

SCALE = 8          # compare at 1/8 size
TILE = 8           # tile edge in downscaled pixels (64 px on screen)
THRESHOLD = 6.0    # mean absolute grey difference (0-255) for a tile to count as changed


def small_grey(rgb: np.ndarray) -> np.ndarray:
    h, w = (rgb.shape[0] // SCALE) * SCALE, (rgb.shape[1] // SCALE) * SCALE
    grey = rgb[:h, :w].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return grey.reshape(h // SCALE, SCALE, w // SCALE, SCALE).mean(axis=(1, 3))


def changed_tiles(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    h, w = (cur.shape[0] // TILE) * TILE, (cur.shape[1] // TILE) * TILE
    diff = np.abs(cur[:h, :w] - prev[:h, :w])
    return diff.reshape(h // TILE, TILE, w // TILE, TILE).mean(axis=(1, 3)) > THRESHOLD


def regions(tiles: np.ndarray, full_w: int, full_h: int) -> list[tuple[int, int, int, int]]:
    """Connected groups of changed tiles as (x, y, w, h) rectangles in screen pixels."""
    seen = np.zeros_like(tiles, dtype=bool)
    out = []
    step = TILE * SCALE
    for ty, tx in zip(*np.nonzero(tiles)):
        if seen[ty, tx]:
            continue
        stack, y0, y1, x0, x1 = [(ty, tx)], ty, ty, tx, tx
        seen[ty, tx] = True
        while stack:
            y, x = stack.pop()
            y0, y1, x0, x1 = min(y0, y), max(y1, y), min(x0, x), max(x1, x)
            for ny in range(y - 1, y + 2):
                for nx in range(x - 1, x + 2):
                    if 0 <= ny < tiles.shape[0] and 0 <= nx < tiles.shape[1] and tiles[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        x, y = x0 * step, y0 * step
        out.append((x, y, min(full_w, (x1 + 1) * step) - x, min(full_h, (y1 + 1) * step) - y))
    return out


class ChangeDetector:
    """Per monitor: what changed since the last frame that was *accepted*."""

    def __init__(self):
        self._prev: dict[int, np.ndarray] = {}

    def compare(self, monitor: int, rgb: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int, int]] | None]:
        """(small grey, changed rects); rects None means nothing changed; a first frame is all changed."""
        cur = small_grey(rgb)
        prev = self._prev.get(monitor)
        if prev is None or prev.shape != cur.shape:
            return cur, [(0, 0, rgb.shape[1], rgb.shape[0])]
        tiles = changed_tiles(prev, cur)
        if not tiles.any():
            return cur, None
        return cur, regions(tiles, rgb.shape[1], rgb.shape[0])

    def accept(self, monitor: int, small: np.ndarray) -> None:
        self._prev[monitor] = small

    def reset(self) -> None:
        self._prev.clear()
