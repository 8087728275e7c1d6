"""Capture as a service: the one place that starts and stops screen capture, applies settings
changes at once and runs retention — used by the CLI's ``mneme capture`` and the desktop app
alike (each used to assemble capture itself, and the copies drifted).

A capture thread that dies is not silent: it is logged with its traceback, ``state`` says
"failed" with the reason, ``on_change`` is called, and ``restart`` starts it again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from mneme.capture.pipeline import CapturePipeline
from mneme.capture.privacy import Exclusions

log = logging.getLogger(__name__)
RETENTION_EVERY = 3600.0  # seconds between retention sweeps while capturing


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
        self._build()
        self.error = None
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
        self.stop()
        self.error = None
        self.start()

    def close(self) -> None:
        self.stop()
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
            self.error = f"{type(exc).__name__}: {exc}"
            stop.set()  # ends the retention thread too
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
