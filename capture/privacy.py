"""Which windows are never captured: excluded apps, title patterns (private browsing, password
managers) and Mneme's own windows. Their rectangles are blacked out before a frame is looked at."""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from mneme.capture.window import Window

PRIVATE_TITLES = [r"(?i)\bprivate browsing\b", r"(?i)\bincognito\b", r"(?i)\binprivate\b",
                  r"(?i)\bprivate window\b", r"(?i)\bmneme\b.*\b(recall|memory)\b"]


class Exclusions:
    def __init__(self, apps: Iterable[str] = (), titles: Iterable[str] = ()):
        self.apps = {a.lower() for a in apps}
        try:
            self.titles = [re.compile(p) for p in [*titles, *PRIVATE_TITLES]]
        except re.error as exc:
            from mneme.core.errors import BadInputError

            raise BadInputError(f"excluded title pattern is not a valid regular expression: {exc}",
                                "fix the setting excluded_titles") from None

    @classmethod
    def from_config(cls, config) -> "Exclusions":
        return cls(config["excluded_apps"], config["excluded_titles"])

    def excluded(self, win: Window | None) -> bool:
        """An excluded app's window, or any window whose title names an excluded app (a terminal
        titled "KeePassXC - Passwords"), or a private window."""
        if win is None:
            return False
        title = win.title.lower()
        return (win.app.lower() in self.apps or any(p.search(win.title) for p in self.titles)
                or any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", title) for a in self.apps if a))


def mask(rgb: np.ndarray, rects: Iterable[tuple[int, int, int, int]], origin: tuple[int, int]) -> int:
    """Black out screen rectangles (x, y, w, h) on a monitor image whose top-left is *origin*.
    Returns how many rectangles touched this monitor."""
    ox, oy = origin
    h, w = rgb.shape[:2]
    hit = 0
    for x, y, rw, rh in rects:
        x0, y0 = max(0, x - ox), max(0, y - oy)
        x1, y1 = min(w, x - ox + rw), min(h, y - oy + rh)
        if x0 < x1 and y0 < y1:
            rgb[y0:y1, x0:x1] = 0
            hit += 1
    return hit
