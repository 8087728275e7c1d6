"""OCR with tesseract (the only module that imports pytesseract). Words keep their boxes.

The image goes to tesseract on its standard input and the words come back on its standard output:
no screen content is ever written to a temporary file (pytesseract's own calls would do that).
Light-on-dark regions are inverted first (tesseract reads dark text on light far better).
``OMP_THREAD_LIMIT=1`` keeps one OCR from taking every core.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("OMP_THREAD_LIMIT", "1")
MIN_CONFIDENCE = 40
UPSCALE_BELOW = 20  # px: regions this small are too small to read


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
    grey = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.uint8)
    if grey.mean() < 110:  # mostly dark: light text on a dark theme
        grey = 255 - grey
    return grey


def _tesseract() -> str:
    import pytesseract

    return pytesseract.pytesseract.tesseract_cmd


def read(rgb: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[Word]:
    """Words in an RGB region, with boxes in screen coordinates (region origin at *offset*)."""
    if rgb.shape[0] < UPSCALE_BELOW or rgb.shape[1] < UPSCALE_BELOW:
        return []
    grey = prepare(rgb)
    pgm = b"P5 %d %d 255\n" % (grey.shape[1], grey.shape[0]) + np.ascontiguousarray(grey).tobytes()
    proc = subprocess.run([_tesseract(), "stdin", "stdout", "--psm", "11", "-l", "eng", "tsv"], input=pgm,
                          capture_output=True, env={**os.environ, "OMP_THREAD_LIMIT": "1"}, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"tesseract failed ({proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()[:200]}")
    ox, oy = offset
    words = []
    for line in proc.stdout.decode("utf-8", "replace").splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) < 12:
            continue
        text = cols[11].strip()
        if text and float(cols[10]) >= MIN_CONFIDENCE:
            words.append(Word(text, int(cols[6]) + ox, int(cols[7]) + oy, int(cols[8]), int(cols[9]),
                              (int(cols[2]), int(cols[3]), int(cols[4]))))
    return words


def to_text(words: list[Word]) -> str:
    """Words in reading order: lines top to bottom (by position), words left to right."""
    if not words:
        return ""
    ordered = sorted(words, key=lambda w: (w.top + w.height / 2, w.left))
    lines, current, last_mid = [], [], None
    for w in ordered:
        mid = w.top + w.height / 2
        if last_mid is not None and abs(mid - last_mid) > max(6, w.height * 0.6):
            lines.append(current)
            current = []
        current.append(w)
        last_mid = mid if last_mid is None or not current[:-1] else (last_mid + mid) / 2
    lines.append(current)
    return "\n".join(" ".join(w.text for w in sorted(line, key=lambda w: w.left)) for line in lines)
