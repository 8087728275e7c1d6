"""Pause and resume capture, shared by every Mneme process of a home (CLI, app, capture loop).

Kept in a small JSON file in the home: it holds only a time, nothing captured.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from mneme.core.errors import BadInputError
from mneme.core.paths import write_atomic

FOREVER = float("inf")


def parse_duration(text: str) -> float:
    """'15m', '1h', '90s', '2h30m' -> seconds."""
    parts = re.fullmatch(r"\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m(?:in)?)?\s*(?:(\d+)\s*s)?\s*", text.lower())
    if not text.strip() or not parts or not any(parts.groups()):
        raise BadInputError(f"cannot read {text!r} as a duration", "use e.g. 15m, 1h or 2h30m")
    h, m, s = (int(g) if g else 0 for g in parts.groups())
    return h * 3600 + m * 60 + s


class PauseState:
    def __init__(self, home: Path):
        self.path = home / "pause.json"

    def pause(self, seconds: float | None = None) -> float:
        until = FOREVER if seconds is None else time.time() + seconds
        write_atomic(self.path, json.dumps({"paused_until": None if until == FOREVER else until}))
        return until

    def resume(self) -> None:
        self.path.unlink(missing_ok=True)

    def paused_until(self) -> float | None:
        """None when capturing; a time (or inf) while paused."""
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        until = raw.get("paused_until")
        if until is None:
            return FOREVER
        if until <= time.time():
            self.resume()
            return None
        return float(until)

    def paused(self) -> bool:
        return self.paused_until() is not None
