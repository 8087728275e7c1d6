"""Which windows are never captured: excluded apps, title patterns (private browsing, password
managers) and Mneme's own windows. What shows of them on screen (the stacking order decides) is
blacked out before a frame is looked at."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

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


def mask(rgb: np.ndarray, stack: Sequence[tuple[tuple[int, int, int, int], bool]],
         origin: tuple[int, int]) -> int:
    """Black out what shows of hidden windows on a monitor image whose top-left is *origin*.

    *stack* is every visible window's screen rectangle (x, y, w, h) and whether it is hidden, in
    stacking order, bottom first. A pixel is blacked out when the topmost window over it is hidden:
    a window raised over an excluded one is kept whole, and an excluded window covered by others
    masks nothing. Returns how many hidden windows show on this monitor."""
    ox, oy = origin
    h, w = rgb.shape[:2]
    boxes = []  # each window clipped to the monitor, in monitor coordinates (None: not on it)
    for (x, y, rw, rh), _ in stack:
        x0, y0, x1, y1 = max(0, x - ox), max(0, y - oy), min(w, x - ox + rw), min(h, y - oy + rh)
        boxes.append((x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None)
    hidden = [i for i, (_, hide) in enumerate(stack) if hide and boxes[i] is not None]
    if not hidden:
        return 0
    # Only the part of the monitor the hidden windows are on is looked at.
    bx0, by0 = min(boxes[i][0] for i in hidden), min(boxes[i][1] for i in hidden)
    bx1, by1 = max(boxes[i][2] for i in hidden), max(boxes[i][3] for i in hidden)
    top = np.full((by1 - by0, bx1 - bx0), -1, dtype=np.int32)  # the topmost window over each pixel
    for i, box in enumerate(boxes):
        if box is not None and i >= hidden[0]:  # windows below the lowest hidden one do not matter
            x0, y0, x1, y1 = box
            top[max(0, y0 - by0):max(0, y1 - by0), max(0, x0 - bx0):max(0, x1 - bx0)] = i
    shows = np.isin(top, hidden)
    rgb[by0:by1, bx0:bx1][shows] = 0
    return int(np.unique(top[shows]).size)
