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


def test_a_change_in_the_bottom_edge_tiles_is_seen():
    det = change.ChangeDetector()
    img = np.full((1080, 1920, 3), 240, dtype=np.uint8)
    det.accept(1, det.compare(1, img)[0])
    status = img.copy()
    status[1050:1070, 100:1800] = 0  # a status line below the last whole 64-px tile row
    (x, y, w, h), = det.compare(1, status)[1]
    assert y <= 1050 and y + h == 1080 and x <= 100


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
    assert mask(img, [((1930, 10, 50, 50), True)], (1920, 0)) == 1  # a window on the second monitor
    assert img[10:60, 10:60].max() == 0 and img[70:, 70:].min() == 255


def test_masks_follow_the_stacking_order():
    """Only what shows of a hidden window is blacked out: a window above it stays whole, a window
    below it does not protect it, and a hidden window covered entirely masks nothing."""
    img = np.full((100, 200, 3), 255, dtype=np.uint8)
    stack = [((0, 0, 40, 40), False),     # below the hidden one: covered by it where they overlap
             ((20, 20, 100, 60), True),   # the excluded window
             ((80, 10, 60, 40), False)]   # raised over its right part
    assert mask(img, stack, (0, 0)) == 1
    assert img[20:80, 20:80].max() == 0                         # the part that shows is masked
    assert img[10:50, 80:140].min() == 255                      # the window above is kept whole
    assert img[50:80, 80:120].max() == 0                        # the excluded part below it is masked
    assert img[0:20, 0:40].min() == 255 and img[80:, :].min() == 255
    img = np.full((100, 200, 3), 255, dtype=np.uint8)
    covered = [((30, 30, 20, 20), True), ((0, 0, 100, 100), False)]
    assert mask(img, covered, (0, 0)) == 0 and img.min() == 255  # fully covered: nothing masked
    assert mask(img, [((300, 0, 20, 20), True)], (0, 0)) == 0 and img.min() == 255  # off this monitor


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
        img[20 * i % 200: 20 * i % 200 + 16, 10:200 + 10 * i] = 0  # new content, not the old moved
        out.append(img)
    return out


def test_full_queue_defers_without_blocking_and_reports(open_mem):
    mem = open_mem()
    ocr_calls = []

    def fake_ocr(rgb, offset):
        ocr_calls.append(offset)
        return line_ocr(rgb, offset)

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


def line_ocr(rgb, offset):
    """Reads each dark bar of frames() as one line naming its position (a stand-in for tesseract)."""
    from mneme.capture.ocr import Word

    rows = np.flatnonzero(rgb[:, :, 0].min(axis=1) < 128)
    if not rows.size:
        return []
    top = int(rows[0]) + offset[1]
    return [Word(f"bar{top}", offset[0] + 10, top, 80, 16), Word("text", offset[0] + 100, top, 40, 16)]


def test_small_changes_keep_text_but_not_every_picture(open_mem):
    mem = open_mem()
    screens = FakeScreen(frames(4))
    pipe = CapturePipeline(mem, FakeDesktop(), lambda: screens, idle_after=0, ocr_fn=line_ocr)
    for _ in range(3):
        assert pipe.tick() == 1
        pipe.drain()
    stored = mem.store.frames_between(0, 2e10)
    sizes = [len(mem.store.frame(sid)["image"]) for sid, *_ in stored]
    assert sizes[0] > 0 and sizes[1:] == [0, 0] and pipe.stats.text_only == 2
    # A text-only moment shows the screen's last picture, and only the line that was new then.
    assert mem.store.picture_for(stored[2][0])[0] == stored[0][0]
    assert mem.store.source_text(stored[2][0]) == "bar40 text"
    assert mem.search("bar40").hits[0].source_ids == [stored[2][0]]
    pipe.image_interval = 0
    assert pipe.tick() == 1
    pipe.drain()
    assert len(mem.store.frame(mem.store.frames_between(0, 2e10)[-1][0])["image"]) > 0


def test_text_still_on_screen_is_stored_once_per_window(open_mem):
    mem = open_mem()
    base = np.full((240, 320, 3), 255, dtype=np.uint8)
    base[20:36, 10:300] = 0
    caret = base.copy()
    caret[200:216, 10:300] = 0  # a second line appears, the first stays
    blink = base.copy()        # the second line goes away again: nothing new to remember
    desk = FakeDesktop()
    screens = FakeScreen([base, caret, blink, blink])
    pipe = CapturePipeline(mem, desk, lambda: screens, idle_after=0, ocr_fn=line_ocr)
    for _ in range(3):
        pipe.tick()
        pipe.drain()
    texts = [mem.store.source_text(sid) for sid, *_ in mem.store.frames_between(0, 2e10)]
    assert texts == ["bar20 text", "bar200 text"] and pipe.stats.no_new_text == 1
    desk.win = Window(9, "browser", "Other page", 0, 0, 320, 240)  # same pixels, another window
    pipe.detector.reset()
    pipe.tick()
    pipe.drain()
    last = mem.store.frames_between(0, 2e10)[-1]
    assert last[2] == "browser" and mem.store.source_text(last[0]) == "bar20 text"


def test_text_screens_are_stored_as_palette_pictures_and_photos_are_not():
    from io import BytesIO

    from PIL import Image, ImageDraw, ImageFont

    from mneme.capture.pipeline import encode_screen

    img = Image.new("RGB", (1280, 720), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf", 15)
    for i in range(40):
        draw.text((6, 4 + 17 * i), f"{i:03d} quarterly invoice deadline review schedule {i * 37}", fill="#202020",
                  font=font)
    text_screen = np.asarray(img)
    out = Image.open(BytesIO(encode_screen(text_screen)))
    assert out.format == "PNG" and out.mode == "P"
    assert np.abs(np.asarray(out.convert("RGB"), dtype=np.int16) - text_screen).mean() < 2
    photo = np.random.default_rng(1).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    assert Image.open(BytesIO(encode_screen(photo))).format == "WEBP"



def bars_screen(first: int, n: int = 11) -> np.ndarray:
    """Lines of 'text' 20 px apart, each row of a line a little different (as glyph rows are)."""
    img = np.full((240, 320, 3), 255, dtype=np.uint8)
    for k in range(n):
        top = 10 + 20 * k
        for r in range(12):
            row = img[top + r, 10:10 + 12 * (first + k) + r]
            row[(np.arange(len(row)) // 3) % 2 == 0] = 0  # dashes: many edges, as glyphs have
    return img


def bars_ocr(rgb, offset):
    """Reads every line of bars_screen as one word naming it (by its width)."""
    from mneme.capture.ocr import Word

    dark = rgb[:, :, 0] < 128
    rows = np.flatnonzero(dark.any(axis=1))
    words, start = [], None
    for i, r in enumerate(rows):
        if start is None:
            start = r
        if i + 1 == len(rows) or rows[i + 1] != r + 1:
            cols = np.flatnonzero(dark[start])
            width = int(cols[-1] - cols[0] + 1)
            if r - start >= 6:  # a whole line, not a sliver at the region's edge
                words.append(Word(f"line{round(width / 12)}", offset[0] + int(cols[0]), offset[1] + int(start),
                                  width, int(r - start + 1)))
            start = None
    return words


def test_a_scroll_reads_only_the_new_rows_and_carries_the_rest(open_mem):
    mem = open_mem()
    screens = FakeScreen([bars_screen(first=1), bars_screen(first=2)])  # one line scrolled up
    reads = []

    def ocr(rgb, offset):
        reads.append(rgb.shape[0])
        return bars_ocr(rgb, offset)

    pipe = CapturePipeline(mem, FakeDesktop(), lambda: screens, idle_after=0, ocr_fn=ocr)
    for _ in range(2):
        pipe.tick()
        pipe.drain()
    assert pipe.stats.scrolls == 1 and sum(reads[1:]) <= 80  # strips, not the 240-row screen
    carried = sorted((w.text, w.top) for w in pipe._words[1])
    assert carried == sorted((w.text, w.top) for w in bars_ocr(bars_screen(first=2), (0, 0)))
    texts = [mem.store.source_text(sid) for sid, *_ in mem.store.frames_between(0, 2e10)]
    assert texts[1] == "line12"  # only the line the scroll brought in is new


def test_a_changed_screen_that_is_not_a_scroll_is_read_whole():
    from mneme.capture.change import scroll_shift

    a, b = bars_screen(first=1), bars_screen(first=1)[::-1].copy()
    assert scroll_shift(a, b) is None
    assert scroll_shift(a, bars_screen(first=3))[0] == 40


def test_typing_at_the_end_of_a_line_reads_only_the_word_being_typed():
    from PIL import Image, ImageDraw, ImageFont

    from mneme.capture.pipeline import changed_columns

    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf", 15)

    def line(text):
        img = Image.new("RGB", (800, 24), "white")
        ImageDraw.Draw(img).text((4, 3), text, fill="black", font=font)
        return np.asarray(img)

    before, now = line("alpha beta gamma del"), line("alpha beta gamma delta")
    c0, c1 = changed_columns(before, now, 0, 0, 24)
    gamma_end = 4 + font.getlength("alpha beta gamma")
    assert gamma_end <= c0 < 4 + font.getlength("alpha beta gamma ") + 1 and c1 >= 4 + font.getlength("alpha beta gamma delta")
    c0, c1 = changed_columns(before, now, 30, 0, 24)  # rows a scroll brought in: what is on them
    assert c0 <= 4 and 4 + font.getlength("alpha beta gamma delta") <= c1 < 4 + font.getlength("alpha beta gamma delta") + 20


def test_a_finished_line_and_the_new_line_below_it_are_each_read_from_their_own_changes():
    """Typing wraps onto a new line: the line above is read from where it was last read, not whole,
    though the block caret that moved spans the blank rows between the two lines."""
    from PIL import Image, ImageDraw, ImageFont

    from mneme.capture.change import scroll_shift
    from mneme.capture.pipeline import changed_columns, whole_lines

    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf", 15)

    def screen(*lines):
        img = Image.new("RGB", (800, 160), "white")
        draw = ImageDraw.Draw(img)
        for i, text in enumerate(lines):
            draw.text((4, 4 + 20 * i), text, fill="black", font=font)
        caret = 4 + font.getlength(lines[-1] + " ")
        draw.rectangle((caret, 5 + 20 * (len(lines) - 1), caret + 8, 24 + 20 * (len(lines) - 1)), fill="black")
        return np.asarray(img)

    above = ("notes on the harbour survey", "the tide tables for March", "and the pilot's phone number")
    before = screen(*above, "alpha beta gamma del")
    now = screen(*above, "alpha beta gamma delta epsilon", "zeta eta lift")
    dy, spans = scroll_shift(before, now)
    assert dy == 0 and len(spans) == 1  # the caret joins the changed rows of both lines
    lines = [(a, b) for a, b in whole_lines(now, spans) if changed_columns(before, now, dy, a, b)]
    assert len(lines) == 2
    (a0, a1), (b0, b1) = lines
    c0, _ = changed_columns(before, now, dy, a0, a1)
    assert c0 >= 4 + font.getlength("alpha beta gamma")  # only the end of the finished line
    c0, c1 = changed_columns(before, now, dy, b0, b1)
    assert c0 <= 4 and c1 >= 4 + font.getlength("zeta eta lift")


def test_a_line_still_being_typed_is_read_once_a_tick_later_and_flushed_at_stop(open_mem):
    import threading

    mem = open_mem()
    base = np.full((480, 640, 3), 255, dtype=np.uint8)
    typing = [base.copy() for _ in range(4)]
    for i, img in enumerate(typing):
        img[100:112, 20:60 + 10 * i] = 0  # a few more letters each tick
    screens = FakeScreen([base] + typing)
    pipe = CapturePipeline(mem, FakeDesktop(), lambda: screens, idle_after=0, ocr_fn=line_ocr)
    assert pipe.tick() == 1             # the first screen is all new: never held
    assert pipe.tick() == 0 and pipe.stats.held == 1    # letters appear: wait a tick
    assert pipe.tick() == 1             # read now, with what was typed meanwhile
    held = pipe.queue.queue[-1]
    assert held.seen < held.time        # its latency counts from when the change was first seen
    pipe.drain()
    assert pipe.tick() == 0 and pipe.stats.held == 2
    stop = threading.Event()
    stop.set()
    pipe.run(stop)                      # stopping takes the held change instead of dropping it
    assert pipe.stats.frames_stored == 3 and screens.n == 5
