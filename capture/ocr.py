"""OCR with tesseract (the only module that imports pytesseract or tesserocr). Words keep boxes.

Two engines, one result. The resident one (``tesserocr``, libtesseract in this process) loads the
model once per thread and reads a typed line in ~20 ms of CPU; the fallback runs the ``tesseract``
program per region (~130 ms, most of it loading the model), used when tesserocr is missing. Either
way the pixels stay in memory: the image goes to the library as raw bytes or to the program on its
standard input, never to a temporary file (pytesseract's own calls would write one).
Light-on-dark parts are inverted first, each by its own background (tesseract reads dark text on
light far better, and one region may hold a dark panel beside a light one), so tesseract's own
second pass over every doubtful word inverted (``tessedit_do_invert``) is off: a third less CPU
for the same words.
``OMP_THREAD_LIMIT=1`` keeps one OCR from taking every core.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import subprocess
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("OMP_THREAD_LIMIT", "1")
MIN_CONFIDENCE = 40
MIN_SIDE = 8  # px: a region narrower or lower than this holds no readable text
PAD = 10  # px of background added round every region before it is read
EDGE = 24  # grey step between neighbouring pixels that counts as an edge (ink)
ROW_INK = 4  # edges a row may cross and still be blank (window borders, a caret)
MIN_BAND = 4  # px: a strip lower than this is a rule or a border, not text
BAND_MARGIN = 2  # px kept round a strip's ink
POLARITY_BLOCK = 8  # px: the side of the blocks whose background decides inversion
THIN_STRIP = 48  # px: a region lower than this is a strip of a line or two
DARK_BELOW = 128  # a block whose median grey is below this has a dark background
TESSDATA_DIRS = ("/usr/share/tesseract-ocr/*/tessdata", "/usr/share/tessdata", "/usr/local/share/tessdata",
                 "/opt/homebrew/share/tessdata", r"C:\Program Files\Tesseract-OCR\tessdata")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Word:
    text: str
    left: int
    top: int
    width: int
    height: int

    @property
    def center(self) -> tuple[float, float]:
        return self.left + self.width / 2, self.top + self.height / 2


def available() -> str | None:
    """Tesseract's version, or None when it is not installed."""
    import pytesseract

    try:
        return str(pytesseract.get_tesseract_version())
    except (pytesseract.TesseractNotFoundError, OSError):
        return None


def prepare(rgb: np.ndarray) -> np.ndarray:
    """Grey, dark text on light everywhere: each part of the region is inverted by its own
    background, so a dark panel beside a light one (or a light window on a black desktop, or
    beside a masked rectangle) reads as well as either alone."""
    grey = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.uint8)
    dark = dark_background(grey)
    if not dark.any():
        return grey
    if dark.all():
        return 255 - grey
    return np.where(dark, 255 - grey, grey)


def dark_background(grey: np.ndarray) -> np.ndarray:
    """Per pixel, whether the background there is dark: block medians, thresholded, cleaned of
    patches under three blocks across (the ink of a bold heading is not a panel), broadcast back
    to pixels. A strip of a line or two is cut into columns as tall as the strip instead: there a
    block's median would be a glyph's. A block's majority decides, so at most half a block's side
    next to a panel's edge can take its neighbour's polarity."""
    h, w = grey.shape
    b = POLARITY_BLOCK
    bw = -(-w // b)
    if h < THIN_STRIP:
        cols = np.pad(grey, ((0, 0), (0, bw * b - w)), mode="edge").reshape(h, bw, b).transpose(1, 0, 2)
        dark = np.median(cols.reshape(bw, -1), axis=1)[None, :] < DARK_BELOW
        shape = (1, 3)
    else:
        bh = -(-h // b)
        padded = np.pad(grey, ((0, bh * b - h), (0, bw * b - w)), mode="edge")
        dark = np.median(padded.reshape(bh, b, bw, b).transpose(0, 2, 1, 3).reshape(bh, bw, b * b), axis=2) < DARK_BELOW
        shape = (3, 3)
    dark = _open(dark, shape)  # dark patches in a light panel go
    dark = ~_open(~dark, shape)  # light patches in a dark panel go
    return np.repeat(np.repeat(dark, b, axis=1), h if h < THIN_STRIP else b, axis=0)[:h, :w]


def _open(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Morphological opening with a rectangle of *shape* cells: the parts of *mask* the rectangle
    does not fit in go (beyond the edge counts as outside the mask). A mask with no room for the
    rectangle is left as it is."""
    sh, sw = shape
    if mask.shape[0] < sh or mask.shape[1] < sw:
        return mask

    def spread(m: np.ndarray, keep_all: bool) -> np.ndarray:  # erosion (all of the window) or dilation (any)
        p = np.pad(m, ((sh // 2, sh // 2), (sw // 2, sw // 2)), constant_values=False)
        out = np.full_like(m, keep_all)
        for dy in range(sh):
            for dx in range(sw):
                window = p[dy:dy + m.shape[0], dx:dx + m.shape[1]]
                out = out & window if keep_all else out | window
        return out

    return spread(spread(mask, True), False)


def tessdata_dir(lang: str = "eng") -> str | None:
    """Where *lang*.traineddata lives: ``TESSDATA_PREFIX``, then the usual system places."""
    candidates = [os.environ["TESSDATA_PREFIX"]] if os.environ.get("TESSDATA_PREFIX") else []
    for pattern in TESSDATA_DIRS:
        candidates.extend(sorted(glob.glob(pattern), reverse=True))
    return next((d for d in candidates if os.path.isfile(os.path.join(d, f"{lang}.traineddata"))), None)


class _Resident(threading.local):
    """One libtesseract instance per thread (an instance must not be shared between threads)."""
    api = None


_resident = _Resident()
_resident_broken: str | None = None


def engine() -> str:
    """'tesserocr' when the resident engine works here, else 'tesseract' (a process per call)."""
    return "tesserocr" if _api() is not None else "tesseract"


def _api():
    global _resident_broken
    if _resident.api is None and _resident_broken is None:
        try:
            import tesserocr

            path = tessdata_dir()
            if path is None:
                raise RuntimeError("no eng.traineddata found (install tesseract-ocr-eng)")
            _resident.api = tesserocr.PyTessBaseAPI(path=path, lang="eng", psm=tesserocr.PSM.SPARSE_TEXT)
            _resident.api.SetVariable("tessedit_do_invert", "0")
            _quiet_leptonica(tesserocr.__file__)
        except (ImportError, RuntimeError) as exc:
            _resident_broken = str(exc)
            log.info("resident OCR unavailable (%s); using the tesseract program", exc)
    return _resident.api


def _quiet_leptonica(module_file: str) -> None:
    """Leptonica prints clipping notices ("Error in boxClipToRectangle") for small regions straight
    to stderr; they are not errors of ours. Silence them in the copy the wheel bundles."""
    import ctypes

    libs = glob.glob(os.path.join(os.path.dirname(module_file), "tesserocr.libs", "libleptonica*.so*"))
    try:
        ctypes.CDLL(libs[0]).setMsgSeverity(6)  # L_SEVERITY_NONE
    except (IndexError, OSError, AttributeError):
        pass


def _tsv_resident(grey: np.ndarray) -> str:
    api = _api()
    api.SetImageBytes(np.ascontiguousarray(grey).tobytes(), grey.shape[1], grey.shape[0], 1, grey.shape[1])
    return api.GetTSVText(0)


def _tsv_program(grey: np.ndarray) -> str:
    import pytesseract

    pgm = b"P5 %d %d 255\n" % (grey.shape[1], grey.shape[0]) + np.ascontiguousarray(grey).tobytes()
    proc = subprocess.run([pytesseract.pytesseract.tesseract_cmd, "stdin", "stdout", "--psm", "11", "-l", "eng",
                           "-c", "tessedit_do_invert=0", "tsv"], input=pgm, capture_output=True, check=False,
                          env={**os.environ, "OMP_THREAD_LIMIT": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"tesseract failed ({proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()[:200]}")
    return proc.stdout.decode("utf-8", "replace")


def read(rgb: np.ndarray, offset: tuple[int, int] = (0, 0), resident: bool = True) -> list[Word]:
    """Words in an RGB region, with boxes in screen coordinates (region origin at *offset*)."""
    if rgb.shape[0] < MIN_SIDE or rgb.shape[1] < MIN_SIDE:
        return []
    return _read_grey(_padded(prepare(rgb)), (offset[0] - PAD, offset[1] - PAD), resident)


def _padded(grey: np.ndarray) -> np.ndarray:
    """A margin of background round the crop: tesseract misses text that touches the image's edge,
    and a strip of one line of text is read reliably only with room above and below it."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return np.pad(grey, PAD, constant_values=int(np.median(border)))


def _read_grey(grey: np.ndarray, origin: tuple[int, int], resident: bool = True) -> list[Word]:
    """Words of a prepared grey image; boxes shifted by *origin*."""
    tsv = _tsv_resident(grey) if resident and _api() is not None else _tsv_program(grey)
    ox, oy = origin
    words = []
    for line in tsv.splitlines():
        cols = line.split("\t")
        if len(cols) < 12 or cols[0] != "5":  # level 5 = a word (the program adds a header line)
            continue
        text = cols[11].strip()
        if text and float(cols[10]) >= MIN_CONFIDENCE:
            words.append(Word(text, int(cols[6]) + ox, int(cols[7]) + oy, int(cols[8]), int(cols[9])))
    return words


def edge_map(rgb: np.ndarray) -> np.ndarray:
    """Where neighbouring pixels in a row differ by more than EDGE (green channel): ink. A row with
    at most ROW_INK such edges is blank — a window's border crosses it, no text does."""
    return np.abs(np.diff(rgb[..., 1].astype(np.int16), axis=-1)) > EDGE


def inked_rows(rgb: np.ndarray, edges: np.ndarray | None = None) -> np.ndarray:
    """Per row, whether it crosses more than ROW_INK edges (text or a picture; else blank)."""
    return (edge_map(rgb) if edges is None else edges).sum(axis=1) > ROW_INK


@dataclass(frozen=True)
class Strip:
    """A strip of a region to read (top:bottom, left:right), and its ink within it (the rows and
    columns that cross edges, without the margin kept round them)."""
    top: int
    bottom: int
    left: int
    right: int
    ink: tuple[int, int, int, int]  # top, bottom, left, right


def bands(rgb: np.ndarray) -> list[Strip]:
    """The strips of a region with anything on them: runs of rows that cross edges, separated by
    blank rows, each cut to the columns its edges span (a line of text, a few touching lines, or a
    picture). A vertical rule — a window's border, a divider — is left out: its edges run on
    through the blank rows round the strip, a glyph's stop. Otherwise every strip of a bordered
    window would span the window and be read as '|text ... |'."""
    edges = edge_map(rgb)
    inked = np.concatenate([[False], inked_rows(rgb, edges), [False]])
    starts = np.flatnonzero(inked[1:] & ~inked[:-1])
    stops = np.flatnonzero(~inked[1:] & inked[:-1])
    out = []
    h, w = rgb.shape[:2]
    for a, b in zip(starts.tolist(), stops.tolist()):
        if b - a < MIN_BAND:
            continue
        rule = edges[max(0, a - BAND_MARGIN - 1):b + BAND_MARGIN + 1].all(axis=0)
        cols = np.flatnonzero(edges[a:b].any(axis=0) & ~rule)
        if not cols.size:  # rules only: nothing to read
            continue
        ink_left, ink_right = int(cols[0]), min(w, int(cols[-1]) + 2)
        rules = np.flatnonzero(rule)  # the margin round the ink stops short of a rule beside it
        before, after = rules[rules < ink_left], rules[rules >= ink_right - 1]
        left = max(ink_left - BAND_MARGIN, int(before[-1]) + 1 if before.size else 0)
        right = min(ink_right + BAND_MARGIN, int(after[0]) if after.size else w)
        out.append(Strip(max(0, a - BAND_MARGIN), min(h, b + BAND_MARGIN), left, right, (a, b, ink_left, ink_right)))
    return out


class LineCache:
    """OCR that remembers the words of every strip it has read, by the pixels of the strip's ink: a
    line that comes back exactly as it was (a window switched back to, a terminal echoing what was
    typed, a page scrolled back) is not read again. The strips not remembered are stacked into one
    image and read in one call. Words are kept in memory only, for the last *size* strips."""

    def __init__(self, size: int = 4096, resident: bool = True):
        self.size = size
        self.resident = resident
        self._words: OrderedDict[bytes, list[Word]] = OrderedDict()
        self.hits = self.misses = 0

    def __call__(self, rgb: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[Word]:
        return self.read_many([(rgb, offset)])[0]

    def read_many(self, regions: list[tuple[np.ndarray, tuple[int, int]]]) -> list[list[Word]]:
        """The words of each (region, offset), every strip not yet known read in one call."""
        places, todo = [], {}
        for rgb, offset in regions:
            grey, here = None, []
            for strip in bands(rgb):
                # A strip is known by its ink alone: the same line read in a taller or shorter region
                # (its margin clipped or not) is the same line. Its words are kept relative to its ink.
                top, bottom, left, right = strip.ink
                key = hashlib.blake2b(np.ascontiguousarray(rgb[top:bottom, left:right]).tobytes(), digest_size=16,
                                      person=b"%dx%d" % (bottom - top, right - left)).digest()
                here.append((key, offset[0] + left, offset[1] + top))
                if key not in self._words and key not in todo:  # a strip seen twice at once is read once
                    grey = prepare(rgb) if grey is None else grey  # polarity needs the strip's surroundings
                    todo[key] = (grey[strip.top:strip.bottom, strip.left:strip.right],
                                 (left - strip.left, top - strip.top))
            places.append(here)
        crops = [crop for crop, _ in todo.values()]
        for (key, (_, (dx, dy))), found in zip(todo.items(), self._read_stacked(crops)):
            self._words[key] = [_moved(wd, -dx, -dy) for wd in found]
        self.misses += len(todo)
        self.hits += sum(map(len, places)) - len(todo)
        out = []
        for here in places:
            words = []
            for key, x, y in here:
                self._words.move_to_end(key)
                words.extend(_moved(wd, x, y) for wd in self._words[key])
            out.append(words)
        while len(self._words) > self.size:
            self._words.popitem(last=False)
        return out

    def _read_stacked(self, crops: list[np.ndarray]) -> list[list[Word]]:
        """Each prepared crop's words, boxes relative to the crop, from one read of them stacked."""
        if not crops:
            return []
        greys = [_padded(c) for c in crops]
        width = max(g.shape[1] for g in greys)
        greys = [np.pad(g, ((0, 0), (0, width - g.shape[1])), mode="edge") for g in greys]
        tops = np.cumsum([0] + [g.shape[0] for g in greys])
        found = _read_grey(np.concatenate(greys), (0, 0), self.resident)
        out: list[list[Word]] = [[] for _ in crops]
        for wd in found:
            i = min(int(np.searchsorted(tops, wd.center[1], side="right")) - 1, len(crops) - 1)
            out[i].append(_moved(wd, -PAD, -PAD - int(tops[i])))
        return out


def _moved(wd: Word, dx: int, dy: int) -> Word:
    return Word(wd.text, wd.left + dx, wd.top + dy, wd.width, wd.height)


def lines(words: list[Word]) -> list[list[Word]]:
    """Words grouped into lines in reading order: top to bottom (by position), left to right."""
    if not words:
        return []
    ordered = sorted(words, key=lambda w: (w.top + w.height / 2, w.left))
    out, current, last_mid = [], [], None
    for w in ordered:
        mid = w.top + w.height / 2
        if last_mid is not None and abs(mid - last_mid) > max(6, w.height * 0.6):
            out.append(current)
            current = []
        current.append(w)
        last_mid = mid if last_mid is None or not current[:-1] else (last_mid + mid) / 2
    out.append(current)
    return [sorted(line, key=lambda w: w.left) for line in out]


def to_text(words: list[Word]) -> str:
    """Words in reading order, one line of text per line on screen."""
    return "\n".join(" ".join(w.text for w in line) for line in lines(words))
