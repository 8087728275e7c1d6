"""OCR with the real tesseract: both engines, both themes, boxes in screen coordinates."""

import threading

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from mneme.capture import ocr

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
LINES = ["Invoice 2291 for the Lisbon workshop", "reply to Margarethe before Thursday"]


def render(theme: str) -> np.ndarray:
    fg, bg = ("black", "white") if theme == "light" else ("#e0e0e0", "#1e1e1e")
    img = Image.new("RGB", (700, 90), bg)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(LINES):
        draw.text((12, 14 + i * 32), line, fill=fg, font=ImageFont.truetype(FONT, 18))
    return np.asarray(img)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_resident_engine_and_program_read_the_same_words(theme):
    assert ocr.engine() == "tesserocr"  # installed from pyproject: the light path is the one in use
    rgb = render(theme)
    resident = ocr.read(rgb, offset=(100, 200))
    program = ocr.read(rgb, offset=(100, 200), resident=False)
    assert ocr.to_text(resident) == "\n".join(LINES)
    assert [(w.text, w.left, w.top) for w in resident] == [(w.text, w.left, w.top) for w in program]
    first = resident[0]
    assert first.left >= 100 + 10 and first.top >= 200 + 10  # boxes are in screen coordinates


def test_each_thread_gets_its_own_engine():
    rgb = render("light")
    results = []
    threads = [threading.Thread(target=lambda: results.append(ocr.to_text(ocr.read(rgb)))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["\n".join(LINES)] * 3


def test_tessdata_is_found_or_named(monkeypatch, tmp_path):
    assert ocr.tessdata_dir() is not None
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path))
    (tmp_path / "eng.traineddata").write_bytes(b"")
    assert ocr.tessdata_dir() == str(tmp_path)


def test_a_strip_of_one_line_touching_its_edges_is_read():
    img = Image.new("RGB", (600, 40), "white")
    ImageDraw.Draw(img).text((0, 10), "Kilimanjaro itinerary draft", fill="black", font=ImageFont.truetype(FONT, 18))
    strip = np.asarray(img)[12:31, 1:]  # 19 rows: the glyphs touch the top, bottom and left edges
    words = ocr.read(strip, offset=(50, 300))
    assert ocr.to_text(words) == "Kilimanjaro itinerary draft"
    assert abs(words[0].left - 50) <= 2 and 298 <= words[0].top <= 304


def test_light_and_dark_panels_in_one_region_both_read():
    """A light window and a dark one on a black desktop beside a masked (black) rectangle, as one
    changed region: each part is inverted by its own background, not by the region's average."""
    img = Image.new("RGB", (1400, 560), "black")
    draw = ImageDraw.Draw(img)
    draw.rectangle((30, 30, 630, 330), fill="white")  # a light window, a fifth of the region
    draw.text((50, 50), "Harvest", fill="black", font=ImageFont.truetype(FONT.replace("Sans", "Sans-Bold"), 64))
    draw.text((50, 160), "visible notes about gardening", fill="black", font=ImageFont.truetype(FONT, 18))
    draw.rectangle((700, 30, 1300, 330), fill="#252526")  # a dark-themed editor
    draw.text((720, 160), "terminal output from Valparaiso", fill="#d4d4d4", font=ImageFont.truetype(FONT, 18))
    text = ocr.to_text(ocr.read(np.asarray(img)))
    assert "Harvest" in text  # a bold heading's ink is not taken for a dark panel
    assert "visible notes about gardening" in text and "terminal output from Valparaiso" in text


def page(lines: list[str], theme: str = "light") -> np.ndarray:
    fg, bg = ("black", "white") if theme == "light" else ("#d4d4d4", "#1e1e1e")
    img = Image.new("RGB", (760, 30 + 26 * len(lines)), bg)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((14, 14 + i * 26), line, fill=fg, font=ImageFont.truetype(FONT.replace("Sans", "SansMono"), 16))
    return np.asarray(img)


PAGE = ["Invoice 2291 for the Lisbon workshop", "reply to Margarethe before Thursday",
        "quarterly analysis of the delivery contract", "Invoice 2291 for the Lisbon workshop"]


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_line_cache_reads_what_a_plain_read_does_and_reads_a_line_once(theme):
    rgb = page(PAGE, theme)
    cache = ocr.LineCache()
    words = cache(rgb, offset=(300, 40))
    assert ocr.to_text(words) == ocr.to_text(ocr.read(rgb, offset=(300, 40))) == "\n".join(PAGE)
    assert (cache.misses, cache.hits) == (3, 1)  # the repeated line was read once
    plain = {(w.text, w.top) for w in ocr.read(rgb, offset=(300, 40))}
    assert {(w.text, w.top) for w in words} == plain  # same boxes, in screen coordinates


def test_line_cache_reads_only_lines_it_has_not_seen():
    cache = ocr.LineCache()
    cache(page(PAGE[:3]))
    assert cache.misses == 3
    moved = page(["a new line about Kilimanjaro"] + PAGE[:3])  # everything one line down, one line new
    words = cache(moved, offset=(0, 500))
    assert (cache.misses, cache.hits) == (4, 3)
    assert ocr.to_text(words) == "\n".join(["a new line about Kilimanjaro"] + PAGE[:3])
    assert min(w.top for w in words if w.text == "Invoice") == min(
        w.top for w in ocr.read(moved, offset=(0, 500)) if w.text == "Invoice")


def test_line_cache_forgets_the_oldest_lines_past_its_size():
    cache = ocr.LineCache(size=2)
    cache(page(PAGE[:3]))
    cache(page(PAGE[:1]))
    assert cache.misses == 4  # the first line had been dropped to keep two


def test_a_window_border_beside_the_text_is_not_read_as_part_of_its_lines():
    """A terminal's 1 px border runs 2 px from its text: each strip is cut to the text alone, so
    neither '|' nor the width of the window is read with every line."""
    rgb = page(PAGE[:3]).copy()
    rgb[:, 10], rgb[:, 700] = 80, 80  # borders left and right, through the blank rows too
    strips = ocr.bands(rgb)
    assert len(strips) == 3
    text_right = 14 + ImageFont.truetype(FONT.replace("Sans", "SansMono"), 16).getlength(PAGE[2])
    for strip in strips:
        assert strip.left > 10 and strip.right < text_right + 8
    assert ocr.to_text(ocr.LineCache()(rgb)) == "\n".join(PAGE[:3])
    framed = rgb.copy()
    framed[:, 10] = 255  # a stroke only as tall as the text (a glyph, '|'): kept
    framed[17:29, 10] = 80
    assert ocr.bands(framed)[0].left <= 10


def test_a_line_is_known_again_whether_its_blank_margin_was_cut_or_not():
    """The same line in a region cut tight round it (one blank row) and in a roomier one is one
    strip to the cache, and its words land in the same place either way."""
    rgb = page(PAGE[:1])
    strip = ocr.bands(rgb)[0]
    top, bottom = strip.ink[0], strip.ink[1]
    cache = ocr.LineCache()
    roomy = cache(rgb[top - 6:bottom + 6], offset=(0, top - 6))
    tight = cache(rgb[top - 1:bottom + 1], offset=(0, top - 1))
    assert (cache.misses, cache.hits) == (1, 1)
    assert [(w.text, w.left, w.top) for w in tight] == [(w.text, w.left, w.top) for w in roomy]
    assert ocr.to_text(tight) == PAGE[0]


def test_strips_of_several_regions_are_read_in_one_call(monkeypatch):
    calls = []
    real = ocr._read_grey
    monkeypatch.setattr(ocr, "_read_grey", lambda grey, *a: calls.append(grey.shape) or real(grey, *a))
    light, dark = page(PAGE[:2]), page(PAGE[2:3], "dark")
    got = ocr.LineCache().read_many([(light, (0, 0)), (dark, (900, 300))])
    assert len(calls) == 1
    assert [ocr.to_text(words) for words in got] == ["\n".join(PAGE[:2]), PAGE[2]]
    assert [(w.text, w.left, w.top) for w in got[1]] == [(w.text, w.left, w.top) for w in ocr.read(dark, (900, 300))]
