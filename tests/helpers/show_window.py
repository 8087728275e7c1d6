"""A real X11 window showing known text, for capture tests: show_window.py TITLE THEME [GEOMETRY] [CLASS]
and the text on stdin. THEME is light or dark. Prints 'shown' once mapped."""

import sys

from PySide6.QtCore import QTimer
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QApplication, QLabel

title, theme = sys.argv[1], sys.argv[2]
geometry = sys.argv[3] if len(sys.argv) > 3 else "40,40,900,500"
app = QApplication([sys.argv[0], "-name", sys.argv[4] if len(sys.argv) > 4 else "mnemetest"])
if len(sys.argv) > 4:
    app.setApplicationName(sys.argv[4])
    app.setDesktopFileName(sys.argv[4])
label = QLabel(sys.stdin.read())
label.setWindowTitle(title)
label.setFont(QFont("DejaVu Sans", 22))
fg, bg = ("#111111", "#ffffff") if theme == "light" else ("#e8e8e8", "#1e1e1e")
label.setStyleSheet(f"QLabel {{ color: {fg}; background: {bg}; padding: 24px; }}")
x, y, w, h = (int(v) for v in geometry.split(","))
label.setGeometry(x, y, w, h)
label.show()
label.activateWindow()
QTimer.singleShot(300, lambda: print("shown", flush=True))
app.exec()
