"""Capture as a service: the one place that starts and stops screen capture, applies settings
changes at once and runs retention — used by the CLI's ``mneme capture`` and the desktop app
alike (each used to assemble capture itself, and the copies drifted).

A capture that cannot start, or whose capture or OCR thread dies, is not silent: it is logged
with its traceback, ``state`` says "failed" with the reason (``error``) and what to do (``hint``),
``on_change`` is called, and ``restart`` starts it again. ``status`` is what the app shows:
Capturing, Paused until …, Off, or the error and how to fix it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from mneme.capture.pipeline import CapturePipeline, OCRStopped
from mneme.capture.privacy import Exclusions
from mneme.core.errors import UserError
from mneme.core.pause import FOREVER, PauseState

log = logging.getLogger(__name__)
RETENTION_EVERY = 3600.0  # seconds between retention sweeps while capturing


@dataclass(frozen=True)
class CaptureStatus:
    state: str      # "capturing", "paused", "off" or "error"
    text: str       # as the user reads it: "Capturing", "Paused until 14:05", …
    hint: str = ""  # for "off" and "error": what to do


def until_text(until: float, clock=None, when=None) -> str:
    """"until 14:30" today, else with the date; *clock* and *when* format a time and a date-time
    as the user's locale writes them (the app passes Qt's), else Python's locale does."""
    if until == FOREVER:
        return "until you resume"
    at = datetime.fromtimestamp(until)
    if at.date() == datetime.now().date():
        return f"until {clock(until) if clock else f'{at:%H:%M}'}"
    return f"until {when(until) if when else f'{at:%x %H:%M}'}"


def status(config, service: "CaptureService | None", pause: PauseState, clock=None, when=None) -> CaptureStatus:
    """The real capture state, as the main window and the tray show it (*clock*, *when*: see
    ``until_text``)."""
    if service is not None and service.state == "failed":
        return CaptureStatus("error", f"Capture stopped: {service.error}", service.hint)
    if not config["capture_consent"]:
        return CaptureStatus("off", "Capture is off", "turn it on in Settings or the tray menu")
    if service is None or service.state != "running":
        return CaptureStatus("off", "Capture is not running", "restart capture from the tray menu or Settings")
    until = pause.paused_until()
    if until is not None:
        return CaptureStatus("paused", f"Paused {until_text(until, clock, when)}", "resume from the tray menu")
    return CaptureStatus("capturing", "Capturing")


def hint_for(exc: BaseException, log_dir=None) -> str:
    """What the user can do about a capture that stopped with *exc*."""
    where = f"{log_dir}/mneme.log" if log_dir else "the log"
    if isinstance(exc, UserError) and exc.hint:
        return exc.hint + ", then restart capture"
    if isinstance(exc, OCRStopped):
        return ("check that tesseract works (`tesseract --version`; packaging/system-deps.sh installs it), "
                f"then restart capture; {where} has the details")
    if isinstance(exc, (ConnectionError, OSError)):
        return f"check that the display is still there, then restart capture; {where} has the details"
    return f"restart capture; if it stops again, {where} says why"


class CaptureService:
    def __init__(self, memory, desktop_factory: Callable | None = None, screen_factory: Callable | None = None,
                 interval: float | None = None, on_change: Callable[[], None] | None = None, **pipeline_options):
        self.memory = memory
        self._desktop_factory = desktop_factory
        self._screen_factory = screen_factory
        self._interval = interval
        self._options = pipeline_options
        self.on_change = on_change
        self.pipeline: CapturePipeline | None = None
        self.desktop = None
        self.error: str | None = None
        self.hint: str = ""
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._retention: threading.Thread | None = None

    # -- state ------------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """'running', 'failed' (see ``error``) or 'stopped'."""
        if self.error:
            return "failed"
        if self._thread is not None and self._thread.is_alive():
            return "running"
        return "stopped"

    # -- life cycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start capturing in a thread (after a first retention sweep). Raises what building the
        capture raises (no display, no OCR); a failure later shows in ``state``."""
        if self.state == "running":
            return
        self.error, self.hint = None, ""
        try:
            self._build()
        except Exception as exc:  # shown as the error state; a fixed setting and restart retries
            self._failed(exc)
            self._release()
            raise
        self.sweep()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name="mneme-capture", daemon=True)
        self._thread.start()
        self._retention = threading.Thread(target=self._sweeps, args=(self._stop,), name="mneme-retention",
                                           daemon=True)
        self._retention.start()
        self._changed()

    def once(self) -> None:
        """One pass over every monitor, stored and embedded (``mneme capture --once``)."""
        self._build()
        self.sweep()
        self.pipeline.tick()
        self.pipeline.drain()
        self.memory.embed_pending()

    def _build(self) -> None:
        if self.pipeline is not None:
            return
        if self._desktop_factory is None or self._screen_factory is None:
            from mneme.capture.screen import Screen
            from mneme.capture.window import desktop

            self._desktop_factory = self._desktop_factory or desktop
            self._screen_factory = self._screen_factory or Screen
        self.desktop = self._desktop_factory()
        self.pipeline = CapturePipeline(self.memory, self.desktop, self._screen_factory,
                                        interval=self._interval, **self._options)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop, finishing the frames already queued for OCR."""
        if self._stop is not None:
            self._stop.set()
        for thread in (self._thread, self._retention):
            if thread is not None:
                thread.join(timeout)
        self._thread = self._retention = self._stop = None
        self._changed()

    def restart(self) -> None:
        """Start again after an error, with the current settings (raises what ``start`` raises)."""
        self.stop()
        self.error, self.hint = None, ""
        self._release()  # built afresh: a fixed setting or a display that is back is taken up
        self.start()

    def close(self) -> None:
        self.stop()
        self._release()

    def _release(self) -> None:
        if self.pipeline is not None and self.pipeline._screen is not None:
            self.pipeline._screen.close()
            self.pipeline._screen = None
        if self.desktop is not None and hasattr(self.desktop, "close"):
            self.desktop.close()
        self.desktop = self.pipeline = None

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # -- settings and retention -------------------------------------------------------------------
    def apply_settings(self) -> None:
        """Take the memory's current settings at once: exclusions (the next frame already obeys
        them), intervals and idle pause."""
        if self.pipeline is None:
            return
        config = self.memory.config
        self.pipeline.exclusions = Exclusions.from_config(config)
        if self._interval is None:
            self.pipeline.interval = config["capture_interval"]
        self.pipeline.idle_after = config["idle_pause_seconds"]
        self.pipeline.image_interval = config["image_interval"]
        if self.state == "running":  # retention settings too: a sweep now, off the caller's thread
            threading.Thread(target=self.sweep, name="mneme-retention-now", daemon=True).start()

    def sweep(self) -> int:
        """Delete frames past the retention settings; errors are logged, capture goes on."""
        try:
            return self.memory.apply_retention()
        except Exception:
            log.exception("retention sweep failed")
            return 0

    # -- threads ----------------------------------------------------------------------------------
    def _run(self, stop: threading.Event) -> None:
        try:
            self.pipeline.run(stop)
        except Exception as exc:
            log.exception("screen capture stopped by an error")
            stop.set()  # ends the retention thread too
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self.error = exc.message if isinstance(exc, UserError) else \
            str(exc) if isinstance(exc, OCRStopped) else f"{type(exc).__name__}: {exc}"
        self.hint = hint_for(exc, getattr(getattr(self.memory, "layout", None), "logs", None))
        self._changed()

    def _sweeps(self, stop: threading.Event) -> None:
        while not stop.wait(RETENTION_EVERY):
            self.sweep()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.exception("capture state listener failed")
