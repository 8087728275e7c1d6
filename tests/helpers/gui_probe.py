"""Runs the desktop app on a real X display for tests and screenshots.

gui_probe.py HOME SHOTS_DIR — fills a demo memory, shows the window, listens for the global
hotkey; prints 'ready', then 'overlay <ms>' each time the overlay appears. Reads commands on
stdin: 'shots' saves a PNG of each view into SHOTS_DIR, 'quit' exits.
"""

import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("MNEME_PASSPHRASE", "probe")

from mneme import models  # noqa: E402
from mneme.app.main import Controller  # noqa: E402
from mneme.app.qt import QApplication, QLocale, QObject, QTimer, Signal  # noqa: E402
from mneme.app.theme import apply_theme  # noqa: E402
from mneme.core.memory import open_memory  # noqa: E402
from tests.helpers import demo_memory  # noqa: E402

home, shots = Path(sys.argv[1]), Path(sys.argv[2])
app = QApplication([sys.argv[0]])
app.setQuitOnLastWindowClosed(False)
if QLocale.system().name() == "C":  # a bare test display has no locale: dates as in the UK
    QLocale.setDefault(QLocale(QLocale.English, QLocale.UnitedKingdom))
mem = open_memory(home, embedder=models.default_embedder())
demo_memory.fill(mem)  # three days of chats and screens


class Commands(QObject):
    line = Signal(str)


controller = Controller(mem, interactive=False)
window = controller.window()
window.show()
pressed = {}
controller.hotkey_pressed.connect(lambda: pressed.setdefault("t", time.perf_counter()))


def on_shown():
    t = pressed.pop("t", None)
    print(f"overlay {(time.perf_counter() - t) * 1000 if t else -1:.1f}", flush=True)


controller.overlay.installEventFilter(controller)
orig_popup = controller.overlay.popup


def popup():
    orig_popup()
    QTimer.singleShot(0, on_shown)


controller.overlay.popup = popup
controller.hotkey_pressed.disconnect()
controller.hotkey_pressed.connect(lambda: pressed.setdefault("t", time.perf_counter()))
controller.hotkey_pressed.connect(controller.recall)
note = controller.start_hotkey()


def settle(seconds: float, until=lambda: False) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end and not until():
        app.processEvents()
        time.sleep(0.02)


def shots_now():
    """Each view as a user sees it: a real answer with its sources, search results with their
    chips, a day of frames, Settings with the capture state, the overlay with results."""
    shots.mkdir(parents=True, exist_ok=True)
    window.resize(1280, 780)
    window.show_tab("Ask")
    window.ask.question.setText("When is grandma's birthday dinner?")
    window.ask.ask()
    settle(300, lambda: window.ask.task is None)
    window.search.query.setText("launch in Slack")
    settle(10, lambda: bool(window.search.results.rows()) and bool(window.search.chips))
    timeline = window.timeline
    for name in ("Ask", "Search", "Timeline", "Settings"):
        window.show_tab(name)
        if name == "Timeline":
            settle(10, timeline.is_idle)
            timeline.slider.setValue(timeline.slider.maximum())  # a line typed after the last picture
            settle(10, timeline.is_idle)  # the frame's picture and all its text, read off the GUI thread
        settle(0.5)
        window.grab().save(str(shots / f"{name.lower()}.png"))
    # The dark theme (as a desktop in dark mode asks): Search with a chat's emoji, and Timeline.
    apply_theme("dark")
    window.restyle()  # the status line's link in the theme's colour (Settings › Look does this)
    window.search.query.setText("book a table for six")
    settle(10, lambda: bool(window.search.results.rows()))
    settle(0.3)
    for name in ("Search", "Timeline"):
        window.show_tab(name)
        if name == "Timeline":
            timeline.changed_text.click()  # what changed at this moment, beside All text
            settle(10, timeline.is_idle)
        settle(0.5)
        window.grab().save(str(shots / f"{name.lower()}-dark.png"))
    timeline.all_text.click()
    apply_theme(controller.memory.config["theme"])
    controller.recall()
    controller.overlay.input.setText("lemon tart")
    settle(10, lambda: bool(controller.overlay.results.rows()))
    controller.overlay.results.move(1)
    settle(0.3)
    controller.overlay.grab().save(str(shots / "recall-overlay.png"))
    controller.overlay.hide()
    print("shots done", flush=True)


cmds = Commands()
def command(line):
    if line == "shots":
        shots_now()
    elif line == "model":  # load the answer model, as the first question would
        controller.assistant()
        print("model loaded", flush=True)
    else:
        controller.shutdown()
        app.quit()


cmds.line.connect(command)
threading.Thread(target=lambda: [cmds.line.emit(l.strip()) for l in sys.stdin], daemon=True).start()
QTimer.singleShot(500, lambda: print(f"ready {note or ''}", flush=True))
app.exec()
