"""Screen grabs with mss (the only module that imports it): every monitor, as RGB numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Monitor:
    index: int
    left: int
    top: int
    width: int
    height: int


class Screen:
    """Owns one mss instance; use it from one thread (mss handles are thread-bound)."""

    def __init__(self):
        import mss

        self._sct = (getattr(mss, "MSS", None) or mss.mss)()

    def monitors(self) -> list[Monitor]:
        return [Monitor(i, m["left"], m["top"], m["width"], m["height"])
                for i, m in enumerate(self._sct.monitors[1:], 1)]

    def grab(self, mon: Monitor) -> np.ndarray:
        from PIL import Image

        shot = self._sct.grab({"left": mon.left, "top": mon.top, "width": mon.width, "height": mon.height})
        # BGRX -> RGB by Pillow's unpacker: 2.5 ms for a 1080p screen, a numpy channel copy 7 ms.
        return np.array(Image.frombuffer("RGB", shot.size, shot.raw, "raw", "BGRX", 0, 1))

    def close(self) -> None:
        self._sct.close()
