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
from mneme.app.qt import QApplication, QObject, QTimer, Signal  # noqa: E402
from mneme.core.memory import open_memory  # noqa: E402
from mneme.core.records import Message  # noqa: E402

home, shots = Path(sys.argv[1]), Path(sys.argv[2])
app = QApplication([sys.argv[0]])
app.setQuitOnLastWindowClosed(False)
mem = open_memory(home, embedder=models.default_embedder())
now = time.time()
demo = [("Family", "Mum", "Grandma's birthday dinner is at the Italian place on Friday at 7"),
        ("Slack #launch", "Anna", "The launch moved to Thursday because QA found a payment bug"),
        ("Slack #launch", "Ben", "I'll tell the customer about the new launch date"),
        ("Notes", "me", "Cabin wifi password is in the blue notebook, not here"),
        ("Garden club", "Lena", "Tomato seedlings go out after the last frost in May")]
mem.import_messages([Message(f"demo{i}", c, now - 3600 * (10 - i), s, t, app="chat")
                     for i, (c, s, t) in enumerate(demo)])
mem.embed_pending()


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


def shots_now():
    shots.mkdir(parents=True, exist_ok=True)
    window.ask.question.setText("When is grandma's birthday dinner?")
    window.ask.answer.setHtml("<p>Grandma's birthday dinner is at the Italian place on Friday at 7 [1].</p>"
                              "<h4>Sources</h4><ol><li><a href='mneme://source/1'>[1] Family · Mum</a></li></ol>")
    window.ask.open_citation(__import__("PySide6.QtCore", fromlist=["QUrl"]).QUrl("mneme://source/1"))
    window.search.query.setText("launch")
    window.search.search()
    for name in ("Ask", "Search", "Timeline", "Settings"):
        window.show_tab(name)
        for _ in range(20):
            app.processEvents()
            time.sleep(0.02)
        window.grab().save(str(shots / f"{name.lower()}.png"))
    controller.recall()
    controller.overlay.input.setText("launch")
    for _ in range(30):
        app.processEvents()
        time.sleep(0.02)
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
