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
    """Tiles whose mean difference passes THRESHOLD; partial tiles at the right and bottom edges
    count too (a status line at the bottom of a 1080-line screen is in one)."""
    diff = np.abs(cur - prev)
    pad = ((0, -diff.shape[0] % TILE), (0, -diff.shape[1] % TILE))
    th, tw = (diff.shape[0] + pad[0][1]) // TILE, (diff.shape[1] + pad[1][1]) // TILE
    sums = np.pad(diff, pad).reshape(th, TILE, tw, TILE).sum(axis=(1, 3))
    counts = np.pad(np.ones_like(diff), pad).reshape(th, TILE, tw, TILE).sum(axis=(1, 3))
    return sums / counts > THRESHOLD


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
        x, y = int(x0) * step, int(y0) * step
        out.append((x, y, min(full_w, (int(x1) + 1) * step) - x, min(full_h, (int(y1) + 1) * step) - y))
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


SCROLL_MIN_ROWS = 40     # px: regions shorter than this are just read again
SCROLLBAR = 24           # px at a region's right edge left out of row matching (a moving scrollbar thumb)


def row_signatures(rgb: np.ndarray) -> np.ndarray:
    """One number per pixel row; equal rows give equal numbers (a fixed random projection)."""
    flat = rgb.reshape(rgb.shape[0], -1)
    weights = np.random.default_rng(flat.shape[1]).random(flat.shape[1], dtype=np.float32)
    return flat.astype(np.float32) @ weights


def scroll_shift(prev: np.ndarray, cur: np.ndarray) -> tuple[int, list[tuple[int, int]]] | None:
    """How *cur* relates to *prev* row by row: (dy, row spans of *cur* that must be read again),
    where row i of *cur* shows what row i + dy of *prev* showed (dy 0: changed in place); None when
    too few rows agree at any shift.

    Rows are matched exactly, so a terminal or a page scrolled by whole pixels is found; the
    newly exposed rows and any row that also changed in place (a caret, a fixed header) are what is
    left to read. A scrolled screen then costs an OCR of a strip instead of the whole screen."""
    h = cur.shape[0]
    if h < SCROLL_MIN_ROWS or prev.shape != cur.shape:
        return None
    band = slice(0, max(1, cur.shape[1] - SCROLLBAR))
    sp, sc = row_signatures(prev[:, band]), row_signatures(cur[:, band])
    values, counts = np.unique(sc, return_counts=True)
    inked = sc != values[counts.argmax()]  # rows other than the background
    if inked.sum() < 8:
        return None
    best, best_dy = -1, 0
    for dy in range(-(h - h // 4), h - h // 4 + 1):
        i0, i1 = max(0, -dy), min(h, h - dy)
        score = int(np.count_nonzero((sc[i0:i1] == sp[i0 + dy:i1 + dy]) & inked[i0:i1]))
        if score > best or (score == best and abs(dy) < abs(best_dy)):
            best, best_dy = score, dy
    dy = best_dy
    overlap = np.arange(max(0, -dy), min(h, h - dy))
    if best < 0.5 * inked[overlap].sum():
        return None
    same = np.zeros(h, dtype=bool)
    same[overlap] = sc[overlap] == sp[overlap + dy]
    spans, start = [], None
    for i in range(h + 1):
        if i < h and not same[i]:
            start = i if start is None else start
        elif start is not None:
            spans.append((start, i))
            start = None
    return dy, spans
