"""The capture pipeline: grab → mask excluded windows → skip unchanged → (OCR worker) read changed
regions, carry over the rest → redact → store encrypted → embed soon after.

Capture never waits for OCR: the queue is bounded, and when it is full the frame is *deferred*
(the change baseline is not moved, so the next tick sees the same changes again) and counted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import queue
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from mneme.capture import change, ocr, redact
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
HOLD_AREA = 0.05  # share of a monitor: a change this small that is still changing waits a tick
MIN_IMAGE_GAP = 10.0  # s: the least time between two pictures of one monitor
PALETTE_COLOURS = 16
PALETTE_MAX_ERROR = 2.0  # mean absolute error per channel (0–255) a palette picture may have
MARGIN = 8  # px around a changed region, so words on its edge are read whole
WORD_GAP = 6  # px without ink that separate two words
LINE_REACH = 48  # px a strip to read may grow to reach a blank row (a line of text is less)
OCR_FAILURES_IN_A_ROW = 3  # frames that fail one after another before reading is given up as broken


class OCRStopped(RuntimeError):
    """The OCR worker has died: frames would queue up and never be stored, so capture stops too."""


@dataclass
class Pending:
    time: float
    monitor: int
    rgb: np.ndarray
    regions: list[tuple[int, int, int, int]]
    window: Window | None
    seen: float = 0.0  # when the change was first seen (a held change is older than its frame)


@dataclass
class Stats:
    ticks: int = 0
    frames_queued: int = 0
    frames_stored: int = 0
    unchanged: int = 0
    deferred: int = 0          # queue full: compared again next tick
    text_only: int = 0         # stored with text but no picture (image_interval)
    no_new_text: int = 0       # changed pixels but no new line of text and no picture due: not stored
    scrolls: int = 0           # regions recognised as scrolled: only their new rows were read
    held: int = 0              # small changes still changing, read a tick later (typing)
    lines_read: int = 0        # strips OCR'd
    lines_reused: int = 0      # strips seen before, their words taken from the line cache
    skipped: Counter = field(default_factory=Counter)  # paused, locked, idle, excluded
    masked: int = 0
    redacted: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # change first seen → stored, seconds

    def as_json(self) -> dict:
        return {"ticks": self.ticks, "frames_queued": self.frames_queued,
                "frames_stored": self.frames_stored, "unchanged": self.unchanged,
                "deferred": self.deferred, "text_only": self.text_only, "no_new_text": self.no_new_text,
                "scrolls": self.scrolls, "held": self.held, "lines_read": self.lines_read,
                "lines_reused": self.lines_reused, "skipped": dict(self.skipped), "masked": self.masked,
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
    """Screens are mostly flat colour and text. Such a screen fits a 16-colour palette with no
    visible loss (anti-aliased text included), and a palette PNG of a dense full-HD terminal is
    about half its lossless WebP. Other screens: lossless WebP at full size when small, else lossy
    WebP at 1280 px, whichever is smaller."""
    from PIL import Image

    img = Image.fromarray(rgb)
    small = rgb[::4, ::4]
    probe = Image.fromarray(small).quantize(PALETTE_COLOURS, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    if np.abs(np.asarray(probe.convert("RGB"), dtype=np.int16) - small).mean() <= PALETTE_MAX_ERROR:
        buf = io.BytesIO()  # the fast octree: 20 ms for a 1080p screen, a median cut 100 ms; same size
        img.quantize(PALETTE_COLOURS, Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
            buf, format="PNG", compress_level=6)
        return buf.getvalue()
    buf = io.BytesIO()
    img.save(buf, format="WEBP", lossless=True, quality=25, method=4)
    lossless = buf.getvalue()
    if len(lossless) <= LOSSLESS_MAX:
        return lossless
    lossy = encode_webp(rgb, IMAGE_MAX_WIDTH, IMAGE_QUALITY)
    return min(lossless, lossy, key=len)


def whole_lines(rgb: np.ndarray, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Row spans grown to the nearest blank row on each side (a row with no text crosses few edges),
    so no line of text is cut in two; spans that then touch are merged, and the result is cut
    again between its lines of text. Each line is then narrowed to its own changed columns: when
    typing wraps onto a new line, the line above is read from where it changed, not whole (a
    block caret spans the blank rows between two lines, so their changed rows run together)."""
    h, out = rgb.shape[0], []
    for a, b in spans:
        top, bottom = max(0, a - LINE_REACH), min(h, b + LINE_REACH)
        rows = np.concatenate([np.arange(top, a), np.arange(b, bottom)])  # only the rows it may grow into
        blank = dict(zip(rows.tolist(), (~ocr.inked_rows(rgb[rows])).tolist()))
        lo = next((i for i in range(a - 1, top - 1, -1) if blank[i]), top)
        hi = next((i + 1 for i in range(b, bottom) if blank[i]), bottom)
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return [line for lo, hi in out for line in _cut_between_lines(rgb, lo, hi)]


def _cut_between_lines(rgb: np.ndarray, lo: int, hi: int) -> list[tuple[int, int]]:
    """Rows lo:hi cut in the middle of each run of blank rows between two inked ones: pieces that
    cover lo:hi together, each with one line of text (or a few touching ones) in it."""
    inked = np.flatnonzero(ocr.inked_rows(rgb[lo:hi]))
    gaps = np.flatnonzero(np.diff(inked) > 1)
    cuts = [lo] + [lo + (int(inked[i]) + int(inked[i + 1]) + 1) // 2 for i in gaps] + [hi]
    return list(zip(cuts[:-1], cuts[1:]))


def changed_columns(before: np.ndarray, now: np.ndarray, dy: int, lo: int, hi: int) -> tuple[int, int] | None:
    """The columns of rows lo:hi of *now* worth reading, grown to a gap between words on each side:
    where the rows can be compared with *before* (shifted by dy), the columns that differ; where a
    scroll brought them in, the columns with anything on them. Typing at the end of a line reads
    the word being typed, and a new line at the bottom of a terminal reads its few words."""
    w = now.shape[1]
    ink = _inked_columns(now[lo:hi])
    a, b = max(lo, -dy), min(hi, before.shape[0] - dy)  # the rows that have a counterpart
    wanted = np.zeros(w, dtype=bool)
    if a < b:
        wanted |= (now[a:b] != before[a + dy:b + dy]).any(axis=(0, 2))
    if a > lo or b < hi or a >= b:  # rows brought in: whatever is on them
        brought = np.concatenate([np.arange(lo, min(a, hi)), np.arange(max(b, lo), hi)]) if a < b else np.arange(lo, hi)
        wanted |= _inked_columns(now[brought])
    cols = np.flatnonzero(wanted)
    if not cols.size:
        return None
    c0, run = int(cols[0]), 0
    while c0 > 0 and run < WORD_GAP:
        c0 -= 1
        run = 0 if ink[c0] else run + 1
    c1, run = int(cols[-1]) + 1, 0
    while c1 < w and run < WORD_GAP:
        run = 0 if ink[c1] else run + 1
        c1 += 1
    return c0, c1


def _inked_columns(rows: np.ndarray) -> np.ndarray:
    """Per column, whether its pixels in *rows* span more than an edge's step of grey (anything on it)."""
    green = rows[..., 1]
    return (green.max(axis=0).astype(np.int16) - green.min(axis=0)) > ocr.EDGE


def inside(word: ocr.Word, rects) -> bool:
    cx, cy = word.center
    return any(x <= cx < x + w and y <= cy < y + h for x, y, w, h in rects)


class CapturePipeline:
    def __init__(self, memory, desktop: Desktop, screen_factory, exclusions: Exclusions | None = None,
                 interval: float | None = None, idle_after: float | None = None, queue_size: int = 4,
                 ocr_fn=None):
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
        self.ocr_fn = ocr_fn or ocr.LineCache()
        self._words: dict[int, list[ocr.Word]] = {}
        self.image_interval = memory.config["image_interval"]
        self._last_image: dict[int, float] = {}
        self._frames: dict[int, np.ndarray] = {}  # each monitor's last frame read (to recognise a scroll)
        self._seen: dict[int, set[str]] = {}      # lines on each monitor at its last frame
        self._context: dict[int, tuple | None] = {}  # (app, page) of each monitor's last frame
        self._screen = None
        self._worker: threading.Thread | None = None
        self.worker_error: BaseException | None = None  # why the OCR worker died
        self._last_window: int | None = None
        self._last_small: dict[int, np.ndarray] = {}   # each monitor's last grab, downscaled
        self._first_seen: dict[int, float] = {}        # when a change not yet queued was first seen
        self._window_of: dict[int, int | None] = {}    # active window id at each monitor's last frame
        self._flushing = False

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
        windows = self.desktop.visible()  # bottom to top
        stack = [(w.rect, self.exclusions.excluded(w)) for w in windows]
        if self.exclusions.excluded(active) and active.id not in {w.id for w in windows}:
            stack.append((active.rect, True))  # not listed (no window manager): the active one is on top
        hidden = any(hide for _, hide in stack)
        window = None if self.exclusions.excluded(active) else active
        now = time.time()
        queued = 0
        for mon in self._screen.monitors():
            rgb = self._screen.grab(mon)
            masked = mask(rgb, stack, (mon.left, mon.top))
            self.stats.masked += masked
            small, changed = self.detector.compare(mon.index, rgb)
            last, self._last_small[mon.index] = self._last_small.get(mon.index), small
            if changed is None:
                self.stats.unchanged += 1
                self._first_seen.pop(mon.index, None)
                continue
            seen = self._first_seen.setdefault(mon.index, now)
            if self._hold(mon.index, rgb, changed, last, small, now - seen, window):
                self.stats.held += 1
                continue
            try:
                self.queue.put_nowait(Pending(now, mon.index, rgb, changed, window, seen))
            except queue.Full:
                self.stats.deferred += 1
                log.warning("OCR queue full: frame of monitor %d deferred", mon.index)
                continue
            self.detector.accept(mon.index, small)
            self._first_seen.pop(mon.index, None)
            self._window_of[mon.index] = window.id if window else None
            self.stats.frames_queued += 1
            queued += 1
        if hidden and not window:
            self.stats.skipped["excluded"] += 1
        return queued

    def _hold(self, monitor, rgb, changed, last, small, waited, window) -> bool:
        """Whether to wait one tick with a small change that is still changing (a line being typed):
        the next tick reads it once, as it then is, instead of each keystroke's state. Only the first
        sight of a change is held (it is read a tick later at most); a new window never is."""
        if self._flushing or last is None or last.shape != small.shape or waited > 0:
            return False
        if self._window_of.get(monitor) != (window.id if window else None):
            return False
        area = sum(w * h for _, _, w, h in changed) / (rgb.shape[0] * rgb.shape[1])
        return area <= HOLD_AREA and bool(change.changed_tiles(last, small).any())

    def window_changed(self) -> bool:
        if hasattr(self.desktop, "active_id"):
            wid = self.desktop.active_id()
        else:
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
                self.check_worker()
                if time.monotonic() >= next_at or self.window_changed():
                    self.tick()
                    next_at = time.monotonic() + self.interval
                stop.wait(poll)
        finally:
            if self._first_seen:  # a change held back for a tick: take it now (nothing seen is lost)
                self._flushing = True
                self.tick()
            self.stop_worker()
            if self._screen is not None:
                self._screen.close()
                self._screen = None

    # -- OCR side (worker thread) ---------------------------------------------------------------
    def start_worker(self) -> None:
        if self._worker is None:
            self.worker_error = None
            self._worker = threading.Thread(target=self._work, name="mneme-ocr", daemon=True)
            self._worker.start()

    def check_worker(self) -> None:
        """Raise ``OCRStopped`` if the OCR worker has died (capture must not go on storing nothing)."""
        if self._worker is not None and not self._worker.is_alive():
            exc = self.worker_error
            raise OCRStopped(f"reading text from the screen failed: "
                             f"{type(exc).__name__ + ': ' + str(exc) if exc else 'the OCR worker ended'}") from exc

    def stop_worker(self) -> None:
        """Finish every queued frame (nothing captured is lost), then stop."""
        if self._worker is not None:
            if self._worker.is_alive():
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
        """Read and store queued frames. One frame that fails is logged and skipped; a few failing
        in a row (tesseract gone, the store closed) end the worker, and ``check_worker`` says why."""
        failures = 0
        try:
            while True:
                item = self.queue.get()
                if item is None:
                    return
                try:
                    self.process(item)
                    failures = 0
                except Exception:
                    failures += 1
                    log.exception("processing a frame failed; it was not stored")
                    if failures >= OCR_FAILURES_IN_A_ROW:
                        raise
        except BaseException as exc:
            self.worker_error = exc
            log.error("the OCR worker stopped (%s)", type(exc).__name__)

    def process(self, p: Pending) -> int | None:
        h, w = p.rgb.shape[:2]
        grown = [(max(0, x - MARGIN), max(0, y - MARGIN), min(w, x + rw + MARGIN) - max(0, x - MARGIN),
                  min(h, y + rh + MARGIN) - max(0, y - MARGIN)) for x, y, rw, rh in p.regions]
        previous = self._words.get(p.monitor, [])
        words = [wd for wd in previous if not inside(wd, grown)]
        before = self._frames.get(p.monitor)
        fresh_area = 0  # pixels read anew (a scroll's carried rows are not new)
        to_read: list[tuple[int, int, int, int]] = []
        for x, y, rw, rh in grown:
            area = (x, y, rw, rh)
            shift = None if before is None or before.shape != p.rgb.shape else \
                change.scroll_shift(before[y:y + rh, x:x + rw], p.rgb[y:y + rh, x:x + rw])
            if shift is None:
                reads = [area]
            else:  # scrolled: carry the words along, read only what is new or changed in place
                dy, spans = shift
                self.stats.scrolls += dy != 0
                was, now = before[y:y + rh, x:x + rw], p.rgb[y:y + rh, x:x + rw]
                reads = [(x + cols[0], y + a, cols[1] - cols[0], b - a) for a, b in whole_lines(now, spans)
                         if (cols := changed_columns(was, now, dy, a, b))]
                for wd in previous:
                    if inside(wd, [area]):
                        moved = dataclasses.replace(wd, top=wd.top - dy)
                        if y <= moved.top and moved.top + moved.height <= y + rh and not inside(moved, reads):
                            words.append(moved)
            fresh_area += sum(rrw * rrh for _, _, rrw, rrh in reads)
            to_read.extend(reads)
        crops = [(p.rgb[ry:ry + rrh, rx:rx + rrw], (rx, ry)) for rx, ry, rrw, rrh in to_read]
        if isinstance(self.ocr_fn, ocr.LineCache):  # every new strip of the frame in one call
            found = self.ocr_fn.read_many(crops)
            self.stats.lines_read, self.stats.lines_reused = self.ocr_fn.misses, self.ocr_fn.hits
        else:
            found = [self.ocr_fn(crop, offset) for crop, offset in crops]
        for rect, got in zip(to_read, found):
            words.extend(wd for wd in got if inside(wd, [rect]))
        self._words[p.monitor] = words
        self._frames[p.monitor] = p.rgb
        # Words grouped into lines once (in memory only): for redaction, blanking and the new lines.
        lines = [(" ".join(wd.text for wd in line), line) for line in ocr.lines(words)]
        _, found = redact.redact("\n".join(t for t, _ in lines))
        self.stats.redacted.update(found)
        clean = set(redact.redact(" ".join(wd.text for wd in words))[0].split()) if found else None

        def shown(wd: ocr.Word) -> str:  # a redacted word keeps its box but not its text
            return wd.text if clean is None or wd.text in clean else "[redacted]"

        if found:
            self._blank_secrets(p.rgb, [line for _, line in lines], clean)
        # Only lines not already on this monitor's screen (in this window) are stored as the frame's
        # text: what stays on screen is remembered once, at the moment it appeared.
        win = p.window
        context = (win.app, win.page) if win else None
        seen = self._seen.get(p.monitor) if self._context.get(p.monitor) == context else None
        new = [(t, line) for t, line in lines if seen is None or t not in seen]
        self._seen[p.monitor] = {t for t, _ in lines}
        # The picture: every image_interval per monitor; sooner (not within MIN_IMAGE_GAP) for a new
        # window or over a third of the screen new (a scroll's carried rows are not new) — typing and
        # scrolling do not fill the disk.
        changed_area = fresh_area / (w * h)
        since = p.time - self._last_image.get(p.monitor, float("-inf"))
        new_window = self._context.get(p.monitor) != context
        self._context[p.monitor] = context
        keep_image = since >= self.image_interval or (
            since >= MIN_IMAGE_GAP and (changed_area > 1 / 3 or new_window))
        if not new and not keep_image:
            self.stats.no_new_text += 1
            return None
        text = redact.redact("\n".join(t for t, _ in new))[0]
        secret = {wd.text for _, line in new for wd in line if shown(wd) != wd.text}
        if secret:  # found only with context from lines stored earlier: still never stored
            text = re.sub(r"\S+", lambda m: "[redacted]" if m.group() in secret else m.group(), text)
        # Boxes locate words in a picture; a text-only frame has none of its own, so it keeps none.
        words_json = [[shown(wd), wd.left, wd.top, wd.width, wd.height] for wd in words] if keep_image else []
        if keep_image:
            log.debug("picture of monitor %d: %.0f s since the last, %.0f%% changed, window %s", p.monitor, since,
                      changed_area * 100, "new" if new_window else "same")
            self._last_image[p.monitor] = p.time
            image = encode_screen(p.rgb)
            thumb = encode_webp(p.rgb, THUMB_WIDTH, 40)
        else:
            image = thumb = b""
            self.stats.text_only += 1
        digest = hashlib.sha256(image).hexdigest()[:16]
        sid = self.memory.add_frame(FrameIn(
            external_id=f"{p.time:.3f}-{p.monitor}-{digest}", time=p.time, monitor=p.monitor,
            app=win.app if win else "", title=(win.page if win else ""), width=w, height=h,
            image=image, thumb=thumb, text=text, words_json=json.dumps(words_json, separators=(",", ":"))))
        self.stats.frames_stored += 1
        self.stats.latencies.append(time.time() - (p.seen or p.time))
        return sid

    @staticmethod
    def _blank_secrets(rgb: np.ndarray, lines: list[list[ocr.Word]], clean: set[str]) -> None:
        """Pixels of redacted words are blacked out too (their whole line): the stored image keeps no secret."""
        for line in lines:
            if any(wd.text not in clean for wd in line):
                for wd in line:
                    rgb[wd.top:wd.top + wd.height, wd.left:wd.left + wd.width] = 0
