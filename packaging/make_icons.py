"""Render the SVG icon to the PNG sizes desktops ask for (run once when the icon changes)."""

import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

here = Path(__file__).resolve().parent / "linux" / "icons"
app = QGuiApplication(sys.argv[:1])
renderer = QSvgRenderer(str(here / "mneme.svg"))
for size in (16, 32, 48, 64, 128, 256, 512):
    img = QImage(size, size, QImage.Format_ARGB32)
    img.fill(Qt.transparent)
    painter = QPainter(img)
    renderer.render(painter)
    painter.end()
    img.save(str(here / f"mneme-{size}.png"))
print("icons written to", here)
