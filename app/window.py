"""The main window, the recall overlay and the tray icon."""

from __future__ import annotations

from mneme.app.qt import (QAction, QColor, QFileDialog, QIcon, QLineEdit, QListWidget,
                          QMainWindow, QMenu, QPainter, QPixmap, QProgressDialog, QSystemTrayIcon, Qt,
                          QTabWidget, QVBoxLayout, QWidget, QGuiApplication, QListWidgetItem, QLabel,
                          QKeySequence, QMessageBox)
from mneme.app.tasks import Latest
from mneme.app.settings import SettingsView
from mneme.app.views import AskView, SearchView, TimelineView, when


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
        self.setWindowTitle("Mneme — memory")
        self.setWindowIcon(app_icon())
        self.resize(1100, 700)
        self.tabs = QTabWidget()
        self.ask = AskView(controller)
        self.search = SearchView(controller)
        self.timeline = TimelineView(controller)
        self.settings = SettingsView(controller)
        for view, name in ((self.ask, "Ask"), (self.search, "Search"), (self.timeline, "Timeline"),
                           (self.settings, "Settings")):
            self.tabs.addTab(view, name)
        self.tabs.currentChanged.connect(self._tab_changed)
        self.setCentralWidget(self.tabs)
        menu = self.menuBar().addMenu("&File")
        for text, slot in (("Import chats…", self.import_chats), ("Import vault…", self.import_vault),
                           ("Export vault…", self.export_vault)):
            action = QAction(text, self)
            action.triggered.connect(slot)
            menu.addAction(action)
        quit_action = QAction("Quit", self)
        quit_action.setShortcut(QKeySequence.Quit)
        quit_action.triggered.connect(controller.quit)
        menu.addAction(quit_action)
        self.capture_label = QLabel()  # the capture state, always in view
        self.capture_label.linkActivated.connect(controller.capture_link)
        self.statusBar().addPermanentWidget(self.capture_label)
        self.statusBar().showMessage(controller.status_text())
        self._told_tray = False
        self.close_box = None
        self.refresh_capture()

    def refresh_capture(self) -> None:
        shown = self.c.capture_status_html()
        self.capture_label.setText(shown)
        self.capture_label.setToolTip(self.c.capture_status().hint)
        self.settings.refresh_capture()

    def _tab_changed(self, i: int) -> None:
        if self.tabs.widget(i) is self.timeline:
            self.timeline.load()
        elif self.tabs.widget(i) is self.settings:
            self.settings.refresh_meter()

    def show_tab(self, name: str) -> None:
        for i in range(self.tabs.count()):
            if self.tabs.tabText(i) == name:
                self.tabs.setCurrentIndex(i)
        self.show()
        self.raise_()
        self.activateWindow()

    # -- import / export, off the GUI thread with progress and cancel ----------------------------
    def run_with_progress(self, title: str, work, done_text):
        dialog = QProgressDialog(title, "Cancel", 0, 100, self)
        dialog.setWindowModality(Qt.WindowModal)
        dialog.setMinimumDuration(0)
        task = self.c.tasks.run(work, on_done=lambda r: (dialog.close(), self.statusBar().showMessage(done_text(r))),
                                on_failed=lambda exc, tb: (dialog.close(), self.c.error(exc, tb)),
                                on_progress=lambda d, t: dialog.setValue(int(100 * d / max(t, 1))))
        dialog.canceled.connect(task.cancel.set)
        self.progress_dialog = dialog
        return task

    def import_chats(self, path: str | None = None):
        path = path or QFileDialog.getOpenFileName(self, "Import chats", "", "Chats (*.jsonl *.json *.txt)")[0]
        if not path:
            return None

        def work(task):
            from mneme.capture.chats import parse_file

            parsed = parse_file(path)
            added = self.c.memory.import_messages(parsed.messages, progress=task.progress.emit)
            self.c.memory.embed_pending(progress=task.progress.emit, cancel=task.cancel)
            return added

        return self.run_with_progress("Importing chats…", work, lambda r: f"Imported {r[0]} messages ({r[1]} already there).")

    def export_vault(self, path: str | None = None, passphrase: str | None = None):
        path = path or QFileDialog.getSaveFileName(self, "Export vault", "memory.mnemevault")[0]
        passphrase = passphrase or self.c.ask_new_passphrase("Vault passphrase")
        if not path or not passphrase:
            return None
        from mneme.core.vault import export_vault

        return self.run_with_progress("Exporting vault…", lambda task: export_vault(
            self.c.memory, path, passphrase, progress=task.progress.emit, cancel=task.cancel),
            lambda r: f"Exported {r['sources']} items to {path}.")

    def import_vault(self, path: str | None = None, passphrase: str | None = None):
        path = path or QFileDialog.getOpenFileName(self, "Import vault", "", "Mneme vault (*.mnemevault);;All (*)")[0]
        passphrase = passphrase or self.c.ask_passphrase("Vault passphrase")
        if not path or not passphrase:
            return None
        from mneme.core.vault import import_vault

        return self.run_with_progress("Importing vault…", lambda task: import_vault(
            self.c.memory, path, passphrase, progress=task.progress.emit, cancel=task.cancel),
            lambda r: f"Imported {r['added']} items ({r['duplicates']} already there).")

    def closeEvent(self, event) -> None:
        """With a tray, closing hides the window (Mneme goes on in the tray, and says so once).
        Without one (a stock GNOME session), a hidden Mneme would go on capturing with nothing on
        screen: ask whether to quit or keep the window, minimised, and say how to quit later."""
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
    """Spotlight-like: type to search (results while typing), Enter asks, Esc closes."""

    def __init__(self, controller):
        super().__init__(None, Qt.FramelessWindowHint | Qt.WindowStaysOnTopHint | Qt.Tool)
        self.c = controller
        self.seq = 0
        self.setWindowTitle("Mneme recall")
        self.setObjectName("overlay")
        self.setStyleSheet("#overlay { background: #20202a; border-radius: 12px; } "
                           "QLineEdit { font-size: 22px; padding: 10px; background: #2c2c38; color: white; "
                           "border: none; } QListWidget { background: #20202a; color: #ddd; border: none; }")
        self.input = QLineEdit(placeholderText="Search your memory — Enter to ask")
        self.results = QListWidget()
        layout = QVBoxLayout(self)
        layout.addWidget(self.input)
        layout.addWidget(self.results)
        self.resize(720, 420)
        self.latest = Latest(controller.tasks, lambda seq, q: controller.memory.search(q, 8),
                             on_done=lambda args, result: self.show_results(*args, result),
                             on_failed=controller.error)
        self.input.textChanged.connect(self.search)
        self.input.returnPressed.connect(self.ask)

    def popup(self) -> None:
        screen = QGuiApplication.screenAt(self.cursor().pos()) or QGuiApplication.primaryScreen()
        geo = screen.availableGeometry()
        self.move(geo.x() + (geo.width() - self.width()) // 2, geo.y() + geo.height() // 5)
        self.input.clear()
        self.results.clear()
        self.show()
        self.raise_()
        self.activateWindow()
        self.input.setFocus()

    def keyPressEvent(self, event) -> None:
        if event.key() == Qt.Key_Escape:
            self.hide()
        else:
            super().keyPressEvent(event)

    def search(self) -> None:
        q = self.input.text().strip()
        self.seq += 1
        seq = self.seq
        if not q:
            self.results.clear()
            return
        self.latest.submit(seq, q)

    def show_results(self, seq, q, result) -> None:
        if seq != self.seq:
            return
        self.results.clear()
        for hit in result.hits:
            item = QListWidgetItem(f"{when(hit.time)} · {hit.app} — {' '.join(hit.text.split())[:120]}")
            item.setData(Qt.UserRole, hit.source_ids[0])
            self.results.addItem(item)
        if not result.hits:
            # The relevance floor left nothing: say so rather than show the nearest unrelated thing.
            self.results.addItem(QListWidgetItem("Nothing relevant in your memory — Enter asks anyway"))

    def ask(self) -> None:
        q = self.input.text().strip()
        if q:
            self.hide()
            window = self.c.window()
            window.ask.question.setText(q)
            window.show_tab("Ask")
            window.ask.ask()


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
