"""The capture pipeline: grab → mask excluded windows → skip unchanged → (OCR worker) read changed
regions, carry over the rest → redact → store encrypted → embed soon after.

Capture never waits for OCR: the queue is bounded, and when it is full the frame is *deferred*
(the change baseline is not moved, so the next tick sees the same changes again) and counted.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from mneme.capture import ocr, redact
from mneme.capture.change import ChangeDetector
from mneme.capture.privacy import Exclusions, mask
from mneme.capture.window import Desktop, Window
from mneme.core.pause import PauseState
from mneme.core.records import FrameIn

log = logging.getLogger(__name__)
IMAGE_MAX_WIDTH = 1280
LOSSLESS_MAX = 200_000  # bytes; above this a lossy copy is tried
IMAGE_QUALITY = 45
THUMB_WIDTH = 240
MARGIN = 8  # px around a changed region, so words on its edge are read whole


@dataclass
class Pending:
    time: float
    monitor: int
    rgb: np.ndarray
    regions: list[tuple[int, int, int, int]]
    window: Window | None


@dataclass
class Stats:
    ticks: int = 0
    frames_queued: int = 0
    frames_stored: int = 0
    unchanged: int = 0
    deferred: int = 0          # queue full: compared again next tick
    text_only: int = 0         # stored with text but no picture (image_interval)
    skipped: Counter = field(default_factory=Counter)  # paused, locked, idle, excluded
    masked: int = 0
    redacted: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # capture → stored, seconds

    def as_json(self) -> dict:
        return {"ticks": self.ticks, "frames_queued": self.frames_queued,
                "frames_stored": self.frames_stored, "unchanged": self.unchanged,
                "deferred": self.deferred, "text_only": self.text_only, "skipped": dict(self.skipped), "masked": self.masked,
                "redacted": dict(self.redacted),
                "latency_p50": _pct(self.latencies, 50), "latency_p95": _pct(self.latencies, 95)}


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def encode_webp(rgb: np.ndarray, width: int, quality: int) -> bytes:
    from PIL import Image

    img = Image.fromarray(rgb)
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="WEBP", quality=quality, method=4)
    return buf.getvalue()


def encode_screen(rgb: np.ndarray) -> bytes:
    """Screens are mostly flat colour and text: lossless WebP at full size is both sharp and small
    (tens of KB). Photo-like screens compress badly that way; for them lossy at 1280 px is smaller."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="WEBP", lossless=True, quality=25, method=4)
    lossless = buf.getvalue()
    if len(lossless) <= LOSSLESS_MAX:
        return lossless
    lossy = encode_webp(rgb, IMAGE_MAX_WIDTH, IMAGE_QUALITY)
    return min(lossless, lossy, key=len)


def inside(word: ocr.Word, rects) -> bool:
    cx, cy = word.center
    return any(x <= cx < x + w and y <= cy < y + h for x, y, w, h in rects)


class CapturePipeline:
    def __init__(self, memory, desktop: Desktop, screen_factory, exclusions: Exclusions | None = None,
                 interval: float | None = None, idle_after: float | None = None, queue_size: int = 4,
                 ocr_fn=ocr.read):
        self.memory = memory
        self.desktop = desktop
        self.screen_factory = screen_factory
        self.exclusions = exclusions or Exclusions.from_config(memory.config)
        self.interval = interval if interval is not None else memory.config["capture_interval"]
        self.idle_after = idle_after if idle_after is not None else memory.config["idle_pause_seconds"]
        self.pause = PauseState(memory.home)
        self.detector = ChangeDetector()
        self.queue: queue.Queue[Pending | None] = queue.Queue(maxsize=queue_size)
        self.stats = Stats()
        self.ocr_fn = ocr_fn
        self._words: dict[int, list[ocr.Word]] = {}
        self.image_interval = memory.config["image_interval"]
        self._last_image: dict[int, float] = {}
        self._screen = None
        self._worker: threading.Thread | None = None
        self._last_window: int | None = None

    # -- capture side (one thread) --------------------------------------------------------------
    def why_not(self) -> str | None:
        if self.pause.paused():
            return "paused"
        if self.desktop.locked():
            return "locked"
        if self.idle_after and self.desktop.idle_seconds() >= self.idle_after:
            return "idle"
        return None

    def tick(self) -> int:
        """One pass over every monitor; returns how many frames were queued for OCR."""
        self.stats.ticks += 1
        reason = self.why_not()
        if reason:
            self.stats.skipped[reason] += 1
            self.detector.reset()  # what changed meanwhile is read afresh on return
            return 0
        if self._screen is None:
            self._screen = self.screen_factory()
        active = self.desktop.active()
        hidden = [w.rect for w in self.desktop.visible() if self.exclusions.excluded(w)]
        if self.exclusions.excluded(active) and active.rect not in hidden:
            hidden.append(active.rect)
        window = None if self.exclusions.excluded(active) else active
        now = time.time()
        queued = 0
        for mon in self._screen.monitors():
            rgb = self._screen.grab(mon)
            masked = mask(rgb, hidden, (mon.left, mon.top))
            self.stats.masked += masked
            small, changed = self.detector.compare(mon.index, rgb)
            if changed is None:
                self.stats.unchanged += 1
                continue
            try:
                self.queue.put_nowait(Pending(now, mon.index, rgb, changed, window))
            except queue.Full:
                self.stats.deferred += 1
                log.warning("OCR queue full: frame of monitor %d deferred", mon.index)
                continue
            self.detector.accept(mon.index, small)
            self.stats.frames_queued += 1
            queued += 1
        if hidden and not window:
            self.stats.skipped["excluded"] += 1
        return queued

    def window_changed(self) -> bool:
        win = self.desktop.active()
        wid = win.id if win else None
        changed = wid != self._last_window
        self._last_window = wid
        return changed

    def run(self, stop: threading.Event, poll: float = 0.25) -> None:
        """Capture every *interval* seconds and at once when the active window changes."""
        self.start_worker()
        next_at = 0.0
        try:
            while not stop.is_set():
                if time.monotonic() >= next_at or self.window_changed():
                    self.tick()
                    next_at = time.monotonic() + self.interval
                stop.wait(poll)
        finally:
            self.stop_worker()
            if self._screen is not None:
                self._screen.close()
                self._screen = None

    # -- OCR side (worker thread) ---------------------------------------------------------------
    def start_worker(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="mneme-ocr", daemon=True)
            self._worker.start()

    def stop_worker(self) -> None:
        """Finish every queued frame (nothing captured is lost), then stop."""
        if self._worker is not None:
            self.queue.put(None)
            self._worker.join()
            self._worker = None

    def drain(self) -> None:
        """Process queued frames on this thread (for --once and tests)."""
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self.process(item)

    def _work(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            try:
                self.process(item)
            except Exception:
                log.exception("processing a frame failed; it was not stored")

    def process(self, p: Pending) -> int | None:
        h, w = p.rgb.shape[:2]
        grown = [(max(0, x - MARGIN), max(0, y - MARGIN), min(w, x + rw + MARGIN) - max(0, x - MARGIN),
                  min(h, y + rh + MARGIN) - max(0, y - MARGIN)) for x, y, rw, rh in p.regions]
        kept = [wd for wd in self._words.get(p.monitor, []) if not inside(wd, grown)]
        fresh = []
        for x, y, rw, rh in grown:
            fresh.extend(wd for wd in self.ocr_fn(p.rgb[y:y + rh, x:x + rw], (x, y)) if inside(wd, grown))
        words = kept + fresh
        self._words[p.monitor] = words
        text, found = redact.redact(ocr.to_text(words))
        self.stats.redacted.update(found)
        if found:  # boxes of redacted words must not keep the secret either
            clean = set(redact.redact(" ".join(wd.text for wd in words))[0].split())
            words_json = [[wd.text if wd.text in clean else "[redacted]", wd.left, wd.top, wd.width, wd.height]
                          for wd in words]
        else:
            words_json = [[wd.text, wd.left, wd.top, wd.width, wd.height] for wd in words]
        if found:
            self._blank_secrets(p.rgb, words, clean)
        # Text is kept for every change; the picture only every image_interval seconds per monitor,
        # or when much of the screen changed (a new window, a page) — typing does not fill the disk.
        changed_area = sum(rw * rh for _, _, rw, rh in p.regions) / (w * h)
        keep_image = (changed_area > 1 / 3 or
                      p.time - self._last_image.get(p.monitor, float("-inf")) >= self.image_interval)
        if keep_image:
            self._last_image[p.monitor] = p.time
            image = encode_screen(p.rgb)
            thumb = encode_webp(p.rgb, THUMB_WIDTH, 40)
        else:
            image = thumb = b""
            self.stats.text_only += 1
        win = p.window
        digest = hashlib.sha256(image).hexdigest()[:16]
        sid = self.memory.add_frame(FrameIn(
            external_id=f"{p.time:.3f}-{p.monitor}-{digest}", time=p.time, monitor=p.monitor,
            app=win.app if win else "", title=(win.page if win else ""), width=w, height=h,
            image=image, thumb=thumb, text=text, words_json=json.dumps(words_json)))
        self.stats.frames_stored += 1
        self.stats.latencies.append(time.time() - p.time)
        return sid

    @staticmethod
    def _blank_secrets(rgb: np.ndarray, words: list[ocr.Word], clean: set[str]) -> None:
        """Pixels of redacted words are blacked out too: the stored image keeps no secret."""
        lines: dict[tuple, list[ocr.Word]] = {}
        for wd in words:
            lines.setdefault(wd.line, []).append(wd)
        for line in lines.values():
            if any(wd.text not in clean for wd in line):
                for wd in line:
                    rgb[wd.top:wd.top + wd.height, wd.left:wd.left + wd.width] = 0
