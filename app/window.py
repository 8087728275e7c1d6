"""The main window, the recall overlay and the tray icon."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from mneme.app.qt import (QByteArray, QAction, QColor, QFileDialog, QIcon, QLineEdit, QListWidget,
                          QMainWindow, QMenu, QPainter, QPixmap, QProgressDialog, QSystemTrayIcon, Qt,
                          QTabWidget, QVBoxLayout, QWidget, QGuiApplication, QListWidgetItem, QLabel,
                          QKeySequence, QMessageBox, QTextBrowser, QEvent, QApplication, QScrollArea)
from mneme.app.tasks import Latest
from mneme.app.settings import SettingsView
from mneme.app.results import ResultList
from mneme.app.timeline import TimelineView
from mneme.app.views import AnswerStream, AskView, SearchView, answer_html, when  # noqa: F401


log = logging.getLogger(__name__)


def app_icon(paused: bool = False) -> QIcon:
    pix = QPixmap(64, 64)
    pix.fill(Qt.transparent)
    p = QPainter(pix)
    p.setRenderHint(QPainter.Antialiasing)
    p.setBrush(QColor("#9e9e9e" if paused else "#5b4bd6"))
    p.setPen(Qt.NoPen)
    p.drawEllipse(4, 4, 56, 56)
    p.setPen(QColor("white"))
    font = p.font()
    font.setPixelSize(34)
    font.setBold(True)
    p.setFont(font)
    p.drawText(pix.rect(), Qt.AlignCenter, "II" if paused else "M")
    p.end()
    return QIcon(pix)


class MainWindow(QMainWindow):
    def __init__(self, controller):
        super().__init__()
        self.c = controller
        import platformdirs

        from mneme.core.paths import APP

        home = controller.memory.home
        default = Path(platformdirs.user_data_dir(APP, appauthor=False)).expanduser().resolve()
        # With another home open too, the title says which this is.
        self.setWindowTitle("Mneme" if home == default else f"Mneme — {home.name} ({home})")
        self.setWindowIcon(app_icon())
        self.restore_place()
        self.tabs = QTabWidget()
        self.ask = AskView(controller)
        self.search = SearchView(controller)
        self.timeline = TimelineView(controller)
        self.settings = SettingsView(controller)
        self.settings_page = QScrollArea()  # a long form: it scrolls on a small screen, never pushes the window
        self.settings_page.setWidget(self.settings)
        self.settings_page.setWidgetResizable(True)
        self.settings_page.setFrameShape(QScrollArea.NoFrame)
        for view, name in ((self.ask, "Ask"), (self.search, "Search"), (self.timeline, "Timeline"),
                           (self.settings_page, "Settings")):
            self.tabs.addTab(view, name)
        self.tabs.currentChanged.connect(self._tab_changed)
        self.setCentralWidget(self.tabs)
        menu = self.menuBar().addMenu("&File")
        for text, slot in (("Import chats…", self.import_chats), ("Import vault…", self.import_vault),
                           ("Export vault…", self.export_vault)):
            action = QAction(text, self)
            action.triggered.connect(slot)
            menu.addAction(action)
        for keys, slot in ([("Ctrl+%d" % (i + 1), lambda _=False, i=i: self.show_tab(self.tabs.tabText(i)))
                            for i in range(self.tabs.count())]
                           + [("Ctrl+F", self.find), ("Ctrl+K", controller.recall)]):
            shortcut = QAction(self)
            shortcut.setShortcut(QKeySequence(keys))
            shortcut.setShortcutContext(Qt.WindowShortcut)
            shortcut.triggered.connect(slot)
            self.addAction(shortcut)
        quit_action = QAction("Quit", self)
        quit_action.setShortcut(QKeySequence.Quit)
        quit_action.triggered.connect(controller.quit)
        menu.addAction(quit_action)
        self.capture_label = QLabel()  # the capture state, always in view
        self.capture_label.linkActivated.connect(controller.capture_link)
        self.statusBar().addPermanentWidget(self.capture_label)
        self.show_count()
        self._told_tray = False
        self.close_box = None
        self.refresh_capture()

    def show_count(self, notes: list[str] = ()) -> None:
        """'N moments remembered · HOME' (and any *notes*) in the status bar, counted off the GUI thread."""
        if self.c.memory.closed:
            return
        notes = list(notes)
        self.c.tasks.run(lambda _task: self.c.status_text(),
                         on_done=lambda text: self.statusBar().showMessage(" · ".join([text, *notes])),
                         on_failed=lambda exc, tb: log.warning("moments not counted: %s", exc))

    def restyle(self) -> None:
        """After a change of theme: rich text with links is set anew (Qt takes a link's colour from
        the palette when the text is set, and setting the same text again does nothing)."""
        self.capture_label.clear()
        self.settings.capture_state.clear()
        self.refresh_capture()

    def refresh_capture(self) -> None:
        shown = self.c.capture_status_html()
        self.capture_label.setText(shown)
        self.capture_label.setToolTip(self.c.capture_status().hint)
        self.settings.refresh_capture()

    def _tab_changed(self, i: int) -> None:
        if self.tabs.widget(i) is self.timeline:
            self.timeline.load()
        elif self.tabs.widget(i) is self.settings_page:
            self.settings.refresh_meter()

    # -- size and place, remembered in the home (no captured content) ------------------------------
    def _place_file(self) -> Path:
        return self.c.memory.home / "window.json"

    def restore_place(self) -> None:
        try:
            saved = json.loads(self._place_file().read_text())
            if not self.restoreGeometry(QByteArray.fromBase64(saved["geometry"].encode("ascii"))):
                raise ValueError("not a saved geometry")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.resize(1100, 700)

    def save_place(self) -> None:
        from mneme.core.paths import write_atomic

        try:
            write_atomic(self._place_file(), json.dumps({"geometry": bytes(self.saveGeometry().toBase64()).decode()}))
        except OSError as exc:  # not worth more than a line in the log
            log.warning("window size and place not saved: %s", exc)

    def find(self) -> None:
        """Ctrl+F: the search box, its text selected to type over."""
        self.c.memory.prepare_search()
        self.show_tab("Search")
        self.search.query.setFocus()
        self.search.query.selectAll()

    def open_moment(self, query: str, source_id: int) -> None:
        """A moment picked in the overlay: shown in Search, beside the query's other results."""
        self.show_tab("Search")
        self.search.open_moment(query, source_id)

    def show_tab(self, name: str) -> None:
        for i in range(self.tabs.count()):
            if self.tabs.tabText(i) == name:
                self.tabs.setCurrentIndex(i)
        self.show()
        self.raise_()
        self.activateWindow()

    # -- import / export, off the GUI thread with progress and cancel ----------------------------
    def run_with_progress(self, title: str, work, done_text, on_failed=None):
        dialog = QProgressDialog(title, "Cancel", 0, 100, self)
        dialog.setWindowModality(Qt.WindowModal)
        dialog.setMinimumDuration(0)
        failed = on_failed or self.c.error
        task = self.c.tasks.run(work, on_done=lambda r: (dialog.close(), self.statusBar().showMessage(done_text(r))),
                                on_failed=lambda exc, tb: (dialog.close(), failed(exc, tb)),
                                on_progress=lambda d, t: dialog.setValue(int(100 * d / max(t, 1))))
        dialog.canceled.connect(task.cancel.set)
        self.progress_dialog = dialog
        return task

    def import_chats(self, path: str | None = None, skip_bad: bool = False):
        path = path or QFileDialog.getOpenFileName(self, "Import chats", "", "Chats (*.jsonl *.json *.txt)")[0]
        if not path:
            return None

        def work(task):
            from mneme.capture.chats import parse_file

            parsed = parse_file(path, skip_bad=skip_bad)
            added = self.c.memory.import_messages(parsed.messages, progress=task.progress.emit)
            self.c.memory.embed_pending(progress=task.progress.emit, cancel=task.cancel)
            return added, parsed.skipped

        def done(r):
            (added, already), skipped = r
            self.after_import()
            self.skipped = skipped
            return f"Imported {added} messages ({already} already there)." + (
                f" Skipped {len(skipped)} bad {'line' if len(skipped) == 1 else 'lines'}: "
                + "; ".join(skipped[:3]) + (" …" if len(skipped) > 3 else "") if skipped else "")

        def failed(exc, tb):
            from mneme.capture.chats import BadItemError

            # A bad line: offer what the CLI's --skip-bad does, in words, instead of the flag.
            if isinstance(exc, BadItemError) and self.c.choose(
                    f"{exc.message}.\n\nImport the rest of the file, and list what was skipped?", "Import the rest"):
                self.pending_import = self.import_chats(path, skip_bad=True)
            else:
                self.c.error(exc, tb)

        return self.run_with_progress("Importing chats…", work, done, on_failed=failed)

    def after_import(self) -> None:
        """New moments: the storage meter, the day on the timeline and the count follow."""
        self.settings.refresh_meter()
        self.timeline.load()
        self.ask.load_history()

    def export_vault(self, path: str | None = None, passphrase: str | None = None):
        path = path or QFileDialog.getSaveFileName(self, "Export vault", "memory.mnemevault")[0]
        passphrase = passphrase or self.c.ask_new_passphrase("Vault passphrase")
        if not path or not passphrase:
            return None
        from mneme.core.vault import export_vault

        return self.run_with_progress("Exporting vault…", lambda task: export_vault(
            self.c.memory, path, passphrase, progress=task.progress.emit, cancel=task.cancel),
            lambda r: f"Exported {r['sources']} items to {path}.")

    def import_vault(self, path: str | None = None, passphrase: str | None = None, on_done=None, on_failed=None):
        """File › Import vault (and onboarding's restore, which passes *on_done*/*on_failed*): off
        the GUI thread with progress; the meter, the timeline and the count follow."""
        path = path or QFileDialog.getOpenFileName(self, "Import vault", "", "Mneme vault (*.mnemevault);;All (*)")[0]
        passphrase = passphrase or self.c.ask_passphrase("Vault passphrase")
        if not path or not passphrase:
            return None
        from mneme.core.vault import import_vault

        def done(r) -> str:
            self.after_import()
            if on_done is not None:
                on_done(r)
            return (f"Restored {r['added']} items." if r["restored_ids"] else
                    f"Imported {r['added']} items ({r['duplicates']} already there).")

        return self.run_with_progress("Importing vault…", lambda task: import_vault(
            self.c.memory, path, passphrase, progress=task.progress.emit, cancel=task.cancel), done,
            on_failed=on_failed)

    def closeEvent(self, event) -> None:
        """With a tray, closing hides the window (Mneme goes on in the tray, and says so once).
        Without one (a stock GNOME session), a hidden Mneme would go on capturing with nothing on
        screen: ask whether to quit or keep the window, minimised, and say how to quit later."""
        if not self.c.memory.closed:
            self.save_place()
        if self.c.quitting or self.c.memory.closed:  # Mneme is quitting: nothing to ask
            event.accept()
            return
        if self.c.tray_available():
            event.ignore()
            self.hide()
            if not self._told_tray:
                self._told_tray = True
                self.c.tray.icon.showMessage("Mneme is still running", "It goes on in the tray. Quit from "
                                             "the tray menu, or File › Quit (Ctrl+Q).")
            return
        choice = self.ask_close()
        event.ignore()
        if choice == "quit":
            self.c.quit()
        elif choice == "minimise":
            self.showMinimized()

    def ask_close(self) -> str:
        """'quit', 'minimise' or 'cancel'."""
        capturing = self.c.capture_status().state == "capturing"
        box = self.close_box = QMessageBox(QMessageBox.Question, "Close Mneme?",
                                           "There is no system tray on this desktop, so Mneme cannot hide in it.",
                                           parent=self)
        box.setInformativeText(("Mneme is capturing your screen. " if capturing else "")
                               + "Quit stops Mneme" + (" and its capture" if capturing else "") + ". "
                               "Keep running leaves this window minimised in the taskbar; quit later with "
                               "File › Quit or Ctrl+Q.")
        quit_button = box.addButton("Quit Mneme", QMessageBox.DestructiveRole)
        keep = box.addButton("Keep running", QMessageBox.AcceptRole)
        box.addButton(QMessageBox.Cancel)
        box.setDefaultButton(keep)
        box.exec()
        clicked = box.clickedButton()
        self.close_box = None
        return "quit" if clicked is quit_button else "minimise" if clicked is keep else "cancel"


class RecallOverlay(QWidget):
    """Like the launchers people know: type to search (results while typing), arrows move through
    the results, Enter or a double-click opens the moment in the main window, Enter with none
    picked asks (the answer, with the quote that backs it, appears here), Esc or clicking elsewhere
    closes."""

    PLACEHOLDER = "Search your memory — ↓ picks a moment, Enter opens it; Enter alone asks"

    def __init__(self, controller):
        super().__init__(None, Qt.FramelessWindowHint | Qt.WindowStaysOnTopHint | Qt.Tool)
        self.c = controller
        self.seq = 0
        self.setWindowTitle("Mneme recall")
        self.setObjectName("overlay")
        self.setStyleSheet("#overlay { background: #20202a; border-radius: 12px; } "
                           "QLineEdit { font-size: 22px; padding: 10px; background: #2c2c38; color: white; "
                           "border: none; } QListWidget { background: #20202a; color: #ddd; border: none; } "
                           "QListWidget::item:selected { background: #3d3a6b; } "
                           "QTextBrowser { background: #2a2a36; color: #eee; border: none; padding: 6px; } "
                           "QLabel { color: #ddd; }")
        self.input = QLineEdit(placeholderText=self.PLACEHOLDER)
        self.input.installEventFilter(self)
        self.results = ResultList(dark=True)
        self.results.itemActivated.connect(self.open_item)  # Enter on a row, double-click
        self.answer = QTextBrowser(openLinks=False)
        self.answer.anchorClicked.connect(self.open_citation)
        self.answer.hide()
        self.status = QLabel("")
        self.status.hide()
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.input)
        layout.addWidget(self.status)
        layout.addWidget(self.answer, 2)
        layout.addWidget(self.results, 3)
        self.resize(760, 480)
        self.latest = Latest(controller.tasks, self._query, on_done=lambda args, out: self.show_results(*args, *out),
                             on_failed=controller.error)
        self.stream = AnswerStream(controller, self, self._streamed, self._answered, self._failed)
        self.input.textChanged.connect(self.search)
        self.input.returnPressed.connect(self.enter)
        QApplication.instance().focusWindowChanged.connect(self._focus_moved)

    def _query(self, seq, q):  # on a worker thread
        result = self.c.memory.search(q, 8)
        return result, self.c.memory.store.thumbs([h.source_ids[0] for h in result.hits if h.kind == "frame"])

    def popup(self) -> None:
        self.c.memory.prepare_search()
        screen = QGuiApplication.screenAt(self.cursor().pos()) or QGuiApplication.primaryScreen()
        geo = screen.availableGeometry()
        self.move(geo.x() + (geo.width() - self.width()) // 2, geo.y() + geo.height() // 5)
        self.input.clear()
        self.results.clear()
        self.answer.hide()
        self.answer.clear()
        self.say("")
        self.show()
        self.raise_()
        self.activateWindow()
        self.input.setFocus()

    def _focus_moved(self, window) -> None:
        """Another window took the focus (or none has it): close, as a launcher does."""
        if self.isVisible() and window is not None and not self.isActiveWindow():
            self.hide()

    def eventFilter(self, obj, event) -> bool:
        if obj is self.input and event.type() == QEvent.KeyPress:
            key = event.key()
            if key in (Qt.Key_Down, Qt.Key_Up, Qt.Key_PageDown, Qt.Key_PageUp):
                self.results.move({Qt.Key_Down: 1, Qt.Key_Up: -1, Qt.Key_PageDown: 5, Qt.Key_PageUp: -5}[key])
                return True
            if key == Qt.Key_Escape:
                self.hide()
                return True
        return super().eventFilter(obj, event)

    def keyPressEvent(self, event) -> None:
        if event.key() == Qt.Key_Escape:
            self.hide()
        elif event.key() in (Qt.Key_Return, Qt.Key_Enter):
            self.enter()
        else:
            super().keyPressEvent(event)

    def hideEvent(self, event) -> None:
        self.stream.stop()  # an answer nobody sees is not worth the CPU
        super().hideEvent(event)

    def search(self) -> None:
        q = self.input.text().strip()
        self.seq += 1
        seq = self.seq
        if not q:
            self.results.clear()
            return
        self.latest.submit(seq, q)

    def show_results(self, seq, q, result, thumbs=None) -> None:
        if seq != self.seq:
            return
        self.results.show_hits(result.hits, result.parsed.text or q, thumbs, empty="Nothing relevant in your memory — Enter asks anyway")

    def enter(self) -> None:
        sid = self.results.current_source()
        if sid is not None:
            self.open(sid)
        else:
            self.ask()

    def open_item(self, item) -> None:
        if item.data(Qt.UserRole) is not None:
            self.open(item.data(Qt.UserRole))

    def open(self, source_id: int) -> None:
        """The moment in the main window: the frame, or the message in its conversation."""
        q = self.input.text().strip()
        self.hide()
        self.c.window().open_moment(q, source_id)

    def open_citation(self, url) -> None:
        m = re.match(r"mneme://source/(\d+)", url.toString())
        if m:
            self.open(int(m.group(1)))

    def ask(self) -> None:
        """Answer here, off the GUI thread: the checked answer and the quotes that back it."""
        q = self.input.text().strip()
        if not q or not self.stream.start(q):
            return
        self.answer.clear()
        self.answer.show()
        self.say("Searching your memory…" if self.c.llm_loaded() else "Loading the model, then searching your memory…")

    def _streamed(self, text: str) -> None:
        self.answer.setPlainText(text)
        self.say("Writing; checking each sentence against your memory…")

    def _answered(self, answer) -> None:
        self.answer.setHtml(answer_html(answer))
        self.say("Stopped." if answer.cancelled else "Click a source to open it.")

    def _failed(self, exc, tb) -> None:
        self.say("")
        self.c.error(exc, tb)

    def say(self, text: str) -> None:
        self.status.setText(text)
        self.status.setVisible(bool(text))


class Tray:
    """The tray icon's logic (menu, pause state, icon) — testable where no tray is available."""

    def __init__(self, controller):
        self.c = controller
        self.menu = QMenu()
        self.actions = {}
        self.state = QAction("", self.menu)  # what capture is doing, as a line of the menu
        self.state.setEnabled(False)
        self.menu.addAction(self.state)
        for key, text, slot in (("open", "Open Mneme", lambda: controller.window().show_tab("Ask")),
                                ("recall", "Recall…", controller.recall),
                                ("capture_on", "Turn capture on", lambda: controller.set_capture(True)),
                                ("capture_off", "Turn capture off", lambda: controller.set_capture(False)),
                                ("pause", "Pause capture", lambda: controller.pause(None)),
                                ("pause15", "Pause for 15 minutes", lambda: controller.pause(15 * 60)),
                                ("pause60", "Pause for 1 hour", lambda: controller.pause(3600)),
                                ("resume", "Resume capture", controller.resume),
                                ("restart", "Restart capture", controller.restart_capture),
                                ("quit", "Quit", controller.quit)):
            action = QAction(text, self.menu)
            action.triggered.connect(slot)
            self.menu.addAction(action)
            self.actions[key] = action
        self.icon = None
        if QSystemTrayIcon.isSystemTrayAvailable():
            self.icon = QSystemTrayIcon(app_icon())
            self.icon.setContextMenu(self.menu)
            self.icon.activated.connect(lambda reason: controller.window().show_tab("Ask"))
            self.icon.show()
        self.refresh()

    def refresh(self) -> None:
        """The menu offers what fits the real capture state; the tooltip says it, with the fix."""
        st = self.c.capture_status()
        on = self.c.memory.config["capture_consent"]
        paused = self.c.capture_paused()  # home-wide: a `mneme capture` in a terminal obeys it too
        for key in ("pause", "pause15", "pause60"):
            self.actions[key].setVisible(not paused)
        self.actions["resume"].setVisible(paused)
        self.actions["capture_on"].setVisible(not on)
        self.actions["capture_off"].setVisible(on)
        self.actions["restart"].setVisible(st.state == "error" or (on and st.state == "off"))
        self.state.setText(st.text)
        self.tooltip = f"Mneme — {st.text}" + (f"; {st.hint}" if st.state == "error" and st.hint else "")
        if paused and st.state != "paused":
            self.tooltip += "; capture paused"
        self.grey_icon = st.state != "capturing"
        if self.icon is not None:
            self.icon.setIcon(app_icon(self.grey_icon))
            self.icon.setToolTip(self.tooltip)
