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
import logging
import os
import subprocess
import threading
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("OMP_THREAD_LIMIT", "1")
MIN_CONFIDENCE = 40
MIN_SIDE = 8  # px: a region narrower or lower than this holds no readable text
PAD = 10  # px of background added round every region before it is read
POLARITY_BLOCK = 8  # px: the side of the blocks whose background decides inversion
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
    line: tuple[int, int, int] = (0, 0, 0)  # block, paragraph, line as tesseract numbers them

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
    specks smaller than three blocks (the ink of a bold heading is not a dark panel), broadcast
    back to pixels. A block's majority decides, so at most half a block's side next to a panel's
    edge can take its neighbour's polarity."""
    h, w = grey.shape
    b = POLARITY_BLOCK
    bh, bw = -(-h // b), -(-w // b)
    padded = np.pad(grey, ((0, bh * b - h), (0, bw * b - w)), mode="edge")
    blocks = padded.reshape(bh, b, bw, b).transpose(0, 2, 1, 3).reshape(bh, bw, b * b)
    dark = np.median(blocks, axis=2) < DARK_BELOW
    if bh >= 3 and bw >= 3:
        dark = _open(dark)  # dark specks in a light panel go
        dark = ~_open(~dark)  # light specks in a dark panel go
    return np.repeat(np.repeat(dark, b, axis=0), b, axis=1)[:h, :w]


def _open(mask: np.ndarray) -> np.ndarray:
    """Morphological opening with a 3x3 square: removes parts of *mask* narrower than 3 cells."""
    def erode(m):
        p = np.pad(m, 1, mode="edge")
        out = np.ones_like(m)
        for dy in range(3):
            for dx in range(3):
                out &= p[dy:dy + m.shape[0], dx:dx + m.shape[1]]
        return out

    def dilate(m):
        return ~erode(~m)

    return dilate(erode(mask))


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
                           "-c", "tessedit_do_invert=0", "tsv"], input=pgm, capture_output=True, env={**os.environ, "OMP_THREAD_LIMIT": "1"},
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"tesseract failed ({proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()[:200]}")
    return proc.stdout.decode("utf-8", "replace")


def read(rgb: np.ndarray, offset: tuple[int, int] = (0, 0), resident: bool = True) -> list[Word]:
    """Words in an RGB region, with boxes in screen coordinates (region origin at *offset*)."""
    if rgb.shape[0] < MIN_SIDE or rgb.shape[1] < MIN_SIDE:
        return []
    grey = prepare(rgb)
    # A margin of background round the crop: tesseract misses text that touches the image's edge,
    # and a strip of one line of text is read reliably only with room above and below it.
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    grey = np.pad(grey, PAD, constant_values=int(np.median(border)))
    tsv = _tsv_resident(grey) if resident and _api() is not None else _tsv_program(grey)
    ox, oy = offset[0] - PAD, offset[1] - PAD
    words = []
    for line in tsv.splitlines():
        cols = line.split("\t")
        if len(cols) < 12 or cols[0] != "5":  # level 5 = a word (the program adds a header line)
            continue
        text = cols[11].strip()
        if text and float(cols[10]) >= MIN_CONFIDENCE:
            words.append(Word(text, int(cols[6]) + ox, int(cols[7]) + oy, int(cols[8]), int(cols[9]),
                              (int(cols[2]), int(cols[3]), int(cols[4]))))
    return words


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
