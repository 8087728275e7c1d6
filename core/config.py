"""Settings: each declared once, with type, default and a one-line description.

Stored as JSON in the home (``config.json``); never holds secrets or captured content.
Loading validates every value and names the one that is wrong.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mneme.core.errors import BadInputError
from mneme.core.paths import write_atomic


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    description: str
    minimum: float | None = None
    check: Callable[[Any], Any] | None = None  # raises ValueError with what is wrong
    pattern: str | None = None  # a string setting must match this regular expression


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_memory_budget(text: str) -> tuple[str, float]:
    """("bytes", n) for "1.5G"/"800M"/"2000000000", ("share", 0.5) for "50%", ("auto", 0)."""
    t = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    if t == "AUTO":
        return "auto", 0
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(%|[KMGT]?)", t)
    if not m:
        raise ValueError(f"{text!r} is not a size like 1.5G or 800M, a share like 50%, or auto")
    number, unit = float(m.group(1)), m.group(2)
    if unit == "%":
        if not 0 < number <= 100:
            raise ValueError(f"{text!r}: a share of memory must be above 0% and at most 100%")
        return "share", number / 100
    n = number * _UNITS[unit]
    if n < 64 << 20:
        raise ValueError(f"{text!r} is under 64M, too little for any model")
    return "bytes", int(n)


SETTINGS: tuple[Setting, ...] = (
    Setting("model_path", str, "", "GGUF file for answers; empty means the bundled Gemma 3 270M."),
    Setting("n_ctx", int, 4096, "Context window (tokens) the model is given.", 512),
    Setting("n_threads", int, 0, "Threads for the model; 0 means the CPUs this process may use.", 0),
    Setting("max_answer_tokens", int, 256, "Longest answer, in tokens.", 16),
    Setting("low_memory", bool, False, "Keep model weights file-backed (no repacking) to save RAM."),
    Setting("llm_memory_budget", str, "auto",
            "Memory the LLM may use: a size (1.5G), a share of RAM (50%) or auto (available memory "
            "less a margin); a model larger than this streams its weights from the file.",
            check=parse_memory_budget),
    Setting("search_limit", int, 10, "Hits shown by default.", 1),
    Setting("capture_interval", float, 3.0, "Seconds between screen captures.", 0.2),
    Setting("image_interval", float, 60.0,
            "Keep a screen picture this often per monitor (new text is kept at every change); a new "
            "window or a change of over a third of the screen keeps one sooner, at most every 10 s.", 0),
    Setting("idle_pause_seconds", int, 300, "Stop capturing after this long without input; 0 = never.", 0),
    Setting("retention_days", int, 90, "Delete screen frames older than this; 0 = keep forever.", 0),
    Setting("retention_gb", float, 10.0, "Delete oldest frames past this size; 0 = no limit.", 0),
    Setting("excluded_apps", list, ["keepassxc", "1password", "bitwarden", "mneme"],
            "Apps whose windows are never captured (case-insensitive)."),
    Setting("excluded_titles", list, [],
            "More window-title patterns (regular expressions) never captured; private and incognito "
            "browser windows and Mneme's own are never captured in any case."),
    Setting("capture_consent", bool, False, "The user agreed to screen capture (asked on first run)."),
    Setting("lock_idle_minutes", int, 15, "Lock the app after this long idle (passphrase mode); 0 = never.", 0),
    Setting("hotkey", str, "<ctrl>+<alt>+<space>", "Global shortcut that opens the recall overlay."),
    Setting("theme", str, "system", "The app's look: light, dark, or system (follows the desktop; light "
            "when it gives no hint).", pattern=r"system|light|dark"),
    Setting("index_server", str, "",
            "A Chroma server (http://HOST:PORT) that holds the vector index instead of this machine's "
            "memory; empty: on this machine, saved as an encrypted snapshot.",
            pattern=r"(https?://[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}/?)?"),
)
BY_NAME = {s.name: s for s in SETTINGS}
PASSWORD_MANAGERS = ("keepassxc", "1password", "bitwarden")  # the onboarding checkbox's exclusions


def _check(setting: Setting, value: Any, where: str) -> Any:
    if setting.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, setting.type) or (setting.type is int and isinstance(value, bool)):
        raise BadInputError(
            f"{where}: setting {setting.name!r} must be {setting.type.__name__}, got {value!r}",
            f"fix or remove it; default is {setting.default!r}")
    if setting.pattern is not None and not re.fullmatch(setting.pattern, value):
        raise BadInputError(f"{where}: setting {setting.name!r} is {value!r}, which is not valid",
                            f"{setting.description} Default is {setting.default!r}")
    if setting.minimum is not None and value < setting.minimum:
        raise BadInputError(f"{where}: setting {setting.name!r} must be at least {setting.minimum}",
                            f"default is {setting.default!r}")
    if setting.check is not None:
        try:
            setting.check(value)
        except ValueError as exc:
            raise BadInputError(f"{where}: setting {setting.name!r}: {exc}",
                                f"default is {setting.default!r}") from None
    return value


class Config:
    def __init__(self, path: Path, values: dict[str, Any] | None = None):
        self.path = path
        self._values = {s.name: s.default for s in SETTINGS}
        self._values.update(values or {})

    @classmethod
    def load(cls, path: Path) -> "Config":
        if not path.exists():
            return cls(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})",
                                "fix the file or delete it to get the defaults") from None
        if not isinstance(raw, dict):
            raise BadInputError(f"{path}: expected a JSON object of settings", "delete it to reset")
        values = {}
        for key, value in raw.items():
            if key not in BY_NAME:
                raise BadInputError(f"{path}: unknown setting {key!r}",
                                    "known settings: " + ", ".join(BY_NAME))
            values[key] = _check(BY_NAME[key], value, str(path))
        return cls(path, values)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def set(self, name: str, value: Any) -> None:
        if name not in BY_NAME:
            raise BadInputError(f"unknown setting {name!r}", "known settings: " + ", ".join(BY_NAME))
        self._values[name] = _check(BY_NAME[name], value, "setting")

    def set_from_text(self, name: str, text: str) -> None:
        setting = BY_NAME.get(name)
        if setting is None:
            raise BadInputError(f"unknown setting {name!r}", "known settings: " + ", ".join(BY_NAME))
        try:
            value = json.loads(text) if setting.type is not str else text
        except json.JSONDecodeError:
            raise BadInputError(f"{name}: {text!r} is not a valid {setting.type.__name__}") from None
        self.set(name, value)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def save(self) -> None:
        changed = {k: v for k, v in self._values.items() if v != BY_NAME[k].default}
        write_atomic(self.path, json.dumps(changed, indent=2))

    def threads(self) -> int:
        return self["n_threads"] or max(1, len(os.sched_getaffinity(0)))
