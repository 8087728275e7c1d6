"""Capture logic without a display: change detection, redaction, exclusions, the queue."""

import numpy as np
import pytest

from mneme.capture import change
from mneme.capture.pipeline import CapturePipeline
from mneme.capture.privacy import Exclusions, mask
from mneme.capture.redact import iban_ok, luhn_ok, redact
from mneme.capture.screen import Monitor
from mneme.capture.window import Window
from mneme.core.pause import parse_duration


def test_change_detector_skips_same_and_finds_the_changed_region():
    det = change.ChangeDetector()
    img = np.full((1080, 1920, 3), 240, dtype=np.uint8)
    small, rects = det.compare(1, img)
    assert rects == [(0, 0, 1920, 1080)]  # a first frame is all new
    det.accept(1, small)
    assert det.compare(1, img.copy())[1] is None
    img2 = img.copy()
    img2[500:540, 700:900] = 0  # a word appears
    small, rects = det.compare(1, img2)
    assert len(rects) == 1
    x, y, w, h = rects[0]
    assert x <= 700 and y <= 500 and x + w >= 900 and y + h >= 540 and w * h < 1920 * 1080 / 20
    # Not accepted: the same change is still reported next time (deferred, not lost).
    assert det.compare(1, img2)[1] == rects


def test_tiny_noise_is_not_a_change():
    det = change.ChangeDetector()
    img = np.full((720, 1280, 3), 200, dtype=np.uint8)
    det.accept(1, det.compare(1, img)[0])
    noisy = img.copy()
    noisy[100, 100] = 0  # one pixel (a blinking caret is about this)
    assert det.compare(1, noisy)[1] is None


@pytest.mark.parametrize("text, kind", [
    ("card 4111 1111 1111 1111 exp 12/29", "card number"),
    ("pay with 5500-0000-0000-0004", "card number"),
    ("key AKIAIOSFODNN7EXAMPLE here", "aws key"),
    ("token ghp_" + "a1B2" * 9 + " pushed", "github token"),
    ("OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwx", "openai key"),
    ("xoxb-123456789012-abcdefghij", "slack token"),
    ("IBAN GB82 WEST 1234 5698 7654 32", "iban"),
    ("Password: hunter2!", "password"),
])
def test_secrets_are_redacted(text, kind):
    out, found = redact(text)
    assert found[kind] == 1 and f"[redacted {kind}]" in out


def test_ordinary_numbers_survive():
    text = "order 4111 1111 1111 1112 and phone 020 7946 0958 and GB00 NOTA REAL IBAN 00"
    assert redact(text)[0] == text
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE89370400440532013001")


def test_exclusions_and_masking():
    ex = Exclusions(["KeePassXC"], [r"(?i)bank"])
    assert ex.excluded(Window(1, "keepassxc", "Passwords.kdbx"))
    assert ex.excluded(Window(2, "firefox", "Mozilla Firefox Private Browsing"))
    assert ex.excluded(Window(3, "chromium", "New Tab - Chromium (Incognito)"))
    assert ex.excluded(Window(4, "firefox", "My Bank — Mozilla Firefox"))
    assert not ex.excluded(Window(5, "firefox", "News — Mozilla Firefox"))
    img = np.full((100, 200, 3), 255, dtype=np.uint8)
    assert mask(img, [(1930, 10, 50, 50)], (1920, 0)) == 1  # a window on the second monitor
    assert img[10:60, 10:60].max() == 0 and img[70:, 70:].min() == 255


def test_window_page_and_url():
    win = Window(1, "firefox", "https://example.org/a — Mozilla Firefox")
    assert win.page == "https://example.org/a" and win.url == "https://example.org/a"


def test_durations():
    assert parse_duration("15m") == 900 and parse_duration("1h") == 3600 and parse_duration("2h30m") == 9000
    with pytest.raises(Exception, match="cannot read"):
        parse_duration("soon")


class FakeScreen:
    def __init__(self, frames):
        self.frames = frames
        self.n = 0

    def monitors(self):
        return [Monitor(1, 0, 0, 320, 240)]

    def grab(self, mon):
        frame = self.frames[min(self.n, len(self.frames) - 1)].copy()
        self.n += 1
        return frame

    def close(self):
        pass


class FakeDesktop:
    def __init__(self):
        self.is_locked = False
        self.idle = 0.0
        self.win = Window(7, "editor", "notes.txt", 0, 0, 320, 240)

    def active(self):
        return self.win

    def visible(self):
        return [self.win]

    def idle_seconds(self):
        return self.idle

    def locked(self):
        return self.is_locked


def frames(n):
    out = []
    for i in range(n):
        img = np.full((240, 320, 3), 255, dtype=np.uint8)
        img[20 * i % 200: 20 * i % 200 + 16, 10:300] = 0
        out.append(img)
    return out


def test_full_queue_defers_without_blocking_and_reports(open_mem):
    mem = open_mem()
    ocr_calls = []

    def fake_ocr(rgb, offset):
        ocr_calls.append(offset)
        return []

    screens = FakeScreen(frames(6))
    pipe = CapturePipeline(mem, FakeDesktop(), lambda: screens, queue_size=1, idle_after=0, ocr_fn=fake_ocr)
    assert pipe.tick() == 1          # queued
    assert pipe.tick() == 0 and pipe.stats.deferred == 1   # queue full: deferred, capture went on
    pipe.drain()
    assert pipe.tick() == 1          # the deferred change is seen again
    pipe.drain()
    assert pipe.stats.frames_stored == 2 and mem.store.frame_usage()[0] == 2


def test_pause_lock_idle_and_exclusion_stop_capture(open_mem):
    mem = open_mem()
    desk = FakeDesktop()
    screens = FakeScreen(frames(10))
    pipe = CapturePipeline(mem, desk, lambda: screens, idle_after=60, ocr_fn=lambda rgb, off: [])
    pipe.pause.pause(None)
    assert pipe.tick() == 0
    pipe.pause.resume()
    desk.is_locked = True
    assert pipe.tick() == 0
    desk.is_locked, desk.idle = False, 120
    assert pipe.tick() == 0
    assert dict(pipe.stats.skipped) == {"paused": 1, "locked": 1, "idle": 1}
    assert screens.n == 0            # nothing was even grabbed
    desk.idle = 0
    desk.win = Window(8, "keepassxc", "Passwords", 0, 0, 320, 240)
    assert pipe.tick() == 1
    pipe.drain()
    frame = mem.store.frame(mem.store.frames_between(0, 2e10)[0][0])
    assert frame["app"] == "" and frame["title"] == ""  # excluded window: no name kept
    from io import BytesIO

    from PIL import Image

    assert np.asarray(Image.open(BytesIO(frame["image"]))).max() < 10  # its pixels are black


def test_retention_deletes_oldest_frames(open_mem):
    from mneme.core.records import FrameIn

    mem = open_mem()
    for i in range(5):
        mem.add_frame(FrameIn(f"f{i}", 1_000_000 + i * 86400, 1, "app", "t", 10, 10, b"x" * 1000,
                              b"y" * 100, f"frame text {i}", "[]"))
    mem.config.set("retention_days", 2)
    mem.config.set("retention_gb", 0.0)
    assert mem.apply_retention(now=1_000_000 + 4 * 86400 + 1) > 0
    assert [r[0] for r in mem.store.frames_between(0, 2e10)] and mem.store.frame_usage()[0] == 2
    mem.config.set("retention_days", 0)
    mem.config.set("retention_gb", 1.5e-6)  # 1,500 bytes: room for one frame
    mem.apply_retention()
    assert mem.store.frame_usage()[0] == 1
    assert mem.search("frame text 4").hits[0].kind == "frame"


def test_small_changes_keep_text_but_not_every_picture(open_mem):
    mem = open_mem()
    screens = FakeScreen(frames(4))
    pipe = CapturePipeline(mem, FakeDesktop(), lambda: screens, idle_after=0,
                           ocr_fn=lambda rgb, off: [])
    for _ in range(3):
        assert pipe.tick() == 1
        pipe.drain()
    sizes = [len(mem.store.frame(sid)["image"]) for sid, *_ in mem.store.frames_between(0, 2e10)]
    assert sizes[0] > 0 and sizes[1:] == [0, 0] and pipe.stats.text_only == 2
    pipe.image_interval = 0
    assert pipe.tick() == 1
    pipe.drain()
    assert len(mem.store.frame(mem.store.frames_between(0, 2e10)[-1][0])["image"]) > 0
