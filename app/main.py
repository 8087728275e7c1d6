"""The desktop app: one instance per home, tray, global hotkey, recall overlay, background capture.

``Controller`` is what views call; it owns the memory, the task manager, the model and capture.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import traceback

from mneme.app.qt import (QApplication, QInputDialog, QLineEdit, QLocalServer, QLocalSocket,
                          QMessageBox, QObject, QProgressDialog, QTimer, Signal)
from mneme.app.dialogs import Onboarding, UnlockDialog, passphrase_problem, show_error
from mneme.app.tasks import TaskManager
from mneme.app.window import MainWindow, RecallOverlay, Tray
from mneme.core import keys
from mneme.core import memory as memory_api
from mneme.core.errors import UserError
from mneme.core.pause import PauseState
from mneme.core.paths import HomeLayout, resolve_home

log = logging.getLogger(__name__)


def instance_name(home) -> str:
    return "mneme-" + hashlib.sha1(str(home).encode()).hexdigest()[:12]


def raise_running(home) -> bool:
    """If Mneme already runs for this home, ask it to show itself and say so."""
    sock = QLocalSocket()
    sock.connectToServer(instance_name(home))
    if sock.waitForConnected(300):
        sock.write(b"raise\n")
        sock.waitForBytesWritten(300)
        sock.disconnectFromServer()
        return True
    return False


class Controller(QObject):
    hotkey_pressed = Signal()
    capture_state = Signal()  # emitted from the capture thread; the tray refreshes on the GUI thread

    def __init__(self, memory, embedder_factory=None, llm_factory=None, interactive: bool = True):
        super().__init__()
        self.memory = memory
        self.interactive = interactive
        self.tasks = TaskManager(self)
        self.pause_state = PauseState(memory.home)
        self._llm = None
        self._llm_factory = llm_factory
        self._llm_lock = threading.Lock()
        self._llm_settings: tuple | None = None  # what the loaded model was loaded with
        self._assistant = None
        self._window = None
        self.capture = None           # capture.service.CaptureService, once started
        self.capture_factory = None   # how to build it (tests give one with a fake screen)
        self.overlay = RecallOverlay(self)
        self.tray = Tray(self)
        self.hotkey_pressed.connect(self.recall)
        self._hotkey = None
        self.capture_state.connect(self.capture_changed)
        self._status_timer = QTimer(self, interval=15_000)  # "Paused until …" runs out; a CLI may pause
        self._status_timer.timeout.connect(self.capture_changed)
        self._status_timer.start()
        self.server = None
        self.errors: list[BaseException] = []
        self.locked = False
        self.quitting = False
        self.saving = None            # the task closing the memory (saving its index) at lock or quit
        self._after_saving = None     # what runs on the GUI thread once it is done
        self.unlock_dialog = None
        self._desktop = None          # for idle time, used on the GUI thread only
        self._idle_lock_broken = False  # told the user once that idle time cannot be read
        self._idle_timer = QTimer(self, interval=30_000)
        self._idle_timer.timeout.connect(self.check_idle_lock)
        self._idle_timer.start()
        from mneme.app.theme import apply_theme, emoji_font

        apply_theme(memory.config["theme"])  # before any window: light or dark as the desktop says
        emoji_font()

    # -- what views call -------------------------------------------------------------------------
    def window(self) -> MainWindow:
        if self._window is None:
            self._window = MainWindow(self)
        return self._window

    def error(self, exc: BaseException, tb: str = "") -> None:
        self.errors.append(exc)
        if not isinstance(exc, UserError):
            log.error("error shown to the user: %s", tb or repr(exc))
        if self.interactive:
            show_error(self._window, exc, tb)

    def confirm(self, text: str) -> bool:
        if not self.interactive:
            return True
        return QMessageBox.question(self._window, "Mneme", text) == QMessageBox.Yes

    def choose(self, text: str, action: str) -> bool:
        """Ask whether to do *action* (the button's words); Cancel declines."""
        if not self.interactive:
            return True
        box = QMessageBox(QMessageBox.Question, "Mneme", text, parent=self._window)
        yes = box.addButton(action, QMessageBox.AcceptRole)
        box.addButton(QMessageBox.Cancel)
        box.exec()
        return box.clickedButton() is yes

    def ask_passphrase(self, title: str) -> str:
        text, ok = QInputDialog.getText(self._window, "Mneme", title, QLineEdit.Password)
        return text if ok else ""

    def ask_new_passphrase(self, title: str) -> str:
        first = self.ask_passphrase(title)
        weak = passphrase_problem(first) if first else None
        if weak:
            self.error(UserError(weak, "choose a longer passphrase"))
            return ""
        if first and self.ask_passphrase("Repeat: " + title) != first:
            self.error(UserError("the two passphrases differ", "try again"))
            return ""
        return first

    def llm_loaded(self) -> bool:
        return self._llm is not None

    def assistant(self):
        """The assistant, loading the model on first use (on a worker thread), and again when the
        settings it was loaded with changed (see unload_llm_if_changed)."""
        from mneme.core.assistant import Assistant

        self.unload_llm_if_changed()
        with self._llm_lock:
            if self._llm is None:
                if self._llm_factory is not None:
                    self._llm = self._llm_factory(self.memory)
                else:
                    from mneme.models.registry import load_llm

                    self._llm = load_llm(self.memory.config)
                self._llm_settings = self._llm_key()
                self._assistant = Assistant(self.memory, self._llm,
                                            max_answer_tokens=self.memory.config["max_answer_tokens"])
            return self._assistant

    def recall(self) -> None:
        self.overlay.popup()

    def capture_paused(self) -> bool:
        return self.pause_state.paused()

    def pause(self, seconds) -> None:
        self.pause_state.pause(seconds)
        self.capture_changed()

    def resume(self) -> None:
        """Resume, and start again a capture that stopped or could not start (with the settings as
        they are now: a fixed setting and Resume capture again)."""
        self.pause_state.resume()
        if self.memory.config["capture_consent"] and (self.capture is None or self.capture.state != "running"):
            self.restart_capture()
        self.capture_changed()

    def capture_status(self):
        from mneme.app.results import clock, when
        from mneme.capture.service import status

        return status(self.memory.config, self.capture, self.pause_state, clock=clock, when=when)

    def capture_status_html(self) -> str:
        """The capture state with a link that does what the hint says (main window, Settings)."""
        import html

        st = self.capture_status()
        link = {"error": ("restart", "Restart capture"), "off": ("on", "Turn capture on"),
                "paused": ("resume", "Resume")}.get(st.state)
        if st.state == "off" and self.memory.config["capture_consent"]:
            link = ("restart", "Start capture")
        colour = {"capturing": "#2e7d32", "paused": "#9e6a00", "off": "#757575", "error": "#c62828"}[st.state]
        text = f'<span style="color:{colour}">●</span> {html.escape(st.text)}'
        if st.state == "error" and st.hint:
            text += f" — {html.escape(st.hint)}"
        return text + (f' · <a href="{link[0]}">{link[1]}</a>' if link else "")

    def capture_link(self, href: str) -> None:
        {"restart": self.restart_capture, "on": lambda: self.set_capture(True),
         "resume": self.resume}.get(href, lambda: None)()

    def capture_changed(self) -> None:
        """The capture state changed (or may have): the tray, the window and Settings show it."""
        self.tray.refresh()
        if self._window is not None:
            self._window.refresh_capture()

    def set_capture(self, on: bool) -> str | None:
        """The capture switch (Settings and the tray): on starts capturing now, off stops it."""
        self.memory.config.set("capture_consent", on)
        self.memory.config.save()
        if on:
            note = self.start_capture()
        else:
            note = None
            self.stop_capture()
        if self._window is not None:  # the switch in Settings follows the tray's
            self._window.settings.capture_on.setChecked(on)
        self.capture_changed()
        return note

    def stop_capture(self) -> None:
        if self.capture is not None:
            self.capture.close()
            self.capture = None

    def tray_available(self) -> bool:
        return self.tray.icon is not None

    def status_text(self) -> str:
        s = self.memory.store.counts("")
        return f"{s['sources']} moments remembered · {self.memory.home}"

    def settings_changed(self, before: dict | None = None) -> None:
        """Saved settings take effect at once: the capture switch; exclusions, intervals and retention
        on the running capture (one that had stopped starts again with them); the hotkey; the model."""
        cfg = self.memory.config
        changed = {k for k, v in cfg.as_dict().items() if before is None or before.get(k) != v}
        if "capture_consent" in changed and not cfg["capture_consent"]:
            self.stop_capture()
        elif cfg["capture_consent"] and (self.capture is None or self.capture.state != "running"):
            self.restart_capture()
        elif self.capture is not None:
            self.capture.apply_settings()
        if before is None or "hotkey" in changed:
            note = self.start_hotkey()
            if note and self._window is not None:
                self._window.statusBar().showMessage(note)
        if before is None or "theme" in changed:
            from mneme.app.theme import apply_theme

            apply_theme(cfg["theme"])
            if self._window is not None:
                self._window.restyle()
        self.capture_changed()
        self.unload_llm_if_changed()

    def _llm_key(self) -> tuple:
        cfg = self.memory.config
        return cfg["model_path"], cfg["llm_memory_budget"], cfg["low_memory"], cfg["n_ctx"]

    def unload_llm_if_changed(self) -> bool:
        """The one place a changed model setting (file, memory budget, low memory, context) takes
        effect: the loaded model is let go, the next answer loads it anew under the settings as they
        are now; the old one is closed on a thread once it finishes what it is writing. Called when
        settings are saved and before each answer. Returns whether a model was let go."""
        key = self._llm_key()
        with self._llm_lock:
            old = self._llm
            if old is None or self._llm_settings == key:
                return False
            self._llm = self._assistant = None
        threading.Thread(target=old.close, name="mneme-llm-close", daemon=True).start()
        return True

    def restore_vault(self, restore: dict):
        """Onboarding's "Restore from a vault": the vault is imported with progress, its settings
        come back (but not over the capture choice just made), then capture starts as chosen."""
        window = self.window()
        window.show()

        def restored(result: dict) -> None:
            self.memory.config.set("capture_consent", restore["consent"])
            self.memory.config.save()
            window.settings.show_values()
            self.settings_changed()  # every setting as the vault brought it; capture starts if chosen

        def failed(exc, tb) -> None:
            self.error(exc, tb)
            self.start_capture()

        return window.import_vault(restore["path"], restore["passphrase"], on_done=restored, on_failed=failed)

    def storage_changed(self) -> None:
        """Something was added or forgotten: the storage meter follows."""
        if self._window is not None:
            self._window.settings.refresh_meter()

    def capture_problem(self) -> str | None:
        """Why capture that should be running is not (shown in the tray, restartable)."""
        if self.capture is not None and self.capture.state == "failed":
            return f"capture stopped: {self.capture.error}"
        return None

    def restart_capture(self) -> None:
        """Start capture again with the current settings; a failure shows as the error state."""
        if self.capture is not None:
            try:
                self.capture.restart()
            except Exception as exc:
                log.warning("capture not restarted: %s", exc)
        else:
            self.start_capture()
        self.capture_changed()

    def change_key_mode(self, mode: str, on_done=None, on_failed=None):
        """Keep the master key in *mode* from now on. The passphrase is asked here; the store is
        re-encrypted and the index sealed again on a worker (seconds for a large memory). Returns
        the task, or None when the user gave no passphrase."""
        passphrase = None
        if mode == "passphrase":
            p = self.ask_new_passphrase("New passphrase")
            if not p:
                return None
            passphrase = lambda q: p  # noqa: E731
        return self.tasks.run(lambda _task: self.memory.change_key_mode(mode, passphrase),
                              on_done=on_done, on_failed=on_failed)

    # -- lock ------------------------------------------------------------------------------------
    def lockable(self) -> bool:
        return self.memory.meta.mode == "passphrase"

    def check_idle_lock(self, idle_seconds: float | None = None) -> bool:
        """Lock when idle past lock_idle_minutes (passphrase mode only). Returns whether it locked."""
        minutes = self.memory.config["lock_idle_minutes"]
        if not minutes or not self.lockable() or self.locked:
            return False
        if idle_seconds is None:
            try:
                if self._desktop is None:
                    from mneme.capture.window import desktop

                    self._desktop = desktop()
                idle_seconds = self._desktop.idle_seconds()
            except Exception as exc:  # idle lock cannot work: say so, once, and log why
                if not self._idle_lock_broken:
                    self._idle_lock_broken = True
                    log.exception("cannot read the idle time, so idle lock is off")
                    self.error(UserError(f"Mneme cannot tell how long you have been away ({exc}), so it "
                                         "cannot lock itself when idle",
                                         "lock it from the tray menu when you leave, or set "
                                         "lock_idle_minutes to 0 to stop this message"))
                return False
        if idle_seconds >= minutes * 60:
            self.lock()
            return True
        return False

    def lock(self) -> None:
        """Close the memory (the key leaves RAM), hide every window, ask for the passphrase again.
        Closing saves the vector index as an encrypted snapshot, which takes seconds on a large
        memory: it runs on the task runner, and the passphrase is asked for once it is done."""
        if self.locked or self.saving is not None:
            return
        home, embedder = self.memory.home, self.memory.embedder
        capture_was_on = self.capture is not None and self.capture.state == "running"
        self._stop_services(keep_server=True)
        self.locked = True
        self.overlay.hide()
        if self._window is not None:
            self._window.hide()
            self._window.deleteLater()
            self._window = None
        self.unlock_dialog = None
        self.close_memory(lambda: self._ask_unlock(home, embedder, capture_was_on))

    def _ask_unlock(self, home, embedder, capture_was_on: bool) -> None:
        self.unlock_dialog = UnlockDialog(
            lambda p: memory_api.open_memory(home, embedder=embedder, passphrase=lambda q: p), str(home))
        self.unlock_dialog.accepted.connect(lambda: self._unlocked(self.unlock_dialog.result_value, capture_was_on))
        if self.interactive:
            self.unlock_dialog.open()

    def close_memory(self, then=None):
        """Close the memory on the task runner, saying "Saving the encrypted index…" while it takes
        longer than a moment; *then* runs on the GUI thread once it is closed (also when saving
        failed: the memory is closed all the same, and the next unlock rebuilds the index). A kill
        meanwhile leaves the previous snapshot in place (``snapshot.write`` replaces it atomically)."""
        memory = self.memory
        dialog = QProgressDialog()
        dialog.setWindowTitle("Mneme")
        dialog.setLabelText("Saving the encrypted index…")
        dialog.setCancelButton(None)  # a save is not cut short: a kill already leaves the old one
        dialog.setRange(0, 0)         # busy: its progress is not known
        dialog.setMinimumDuration(300 if self.interactive else 2**31 - 1)  # no flash for a quick save
        self._after_saving = then

        def finished(*_args) -> None:
            dialog.reset()
            dialog.deleteLater()
            self.saving = None
            after, self._after_saving = self._after_saving, None
            if after is not None:
                after()

        self.saving = self.tasks.run(lambda _task: memory.close(), on_done=finished, on_failed=finished)
        self.saving.dialog = dialog
        return self.saving

    def _unlocked(self, memory, restart_capture: bool) -> None:
        self.memory = memory
        self._idle_timer.start()
        self._status_timer.start()
        self.pause_state = PauseState(memory.home)
        self.locked = False
        self._assistant = None
        if restart_capture:
            self.start_capture()
        self.start_hotkey() if self.interactive else None
        self.window().show()

    # -- background services ---------------------------------------------------------------------
    def start_capture(self) -> str | None:
        """Start capture if the user agreed and a display is there; else say why not."""
        if not self.memory.config["capture_consent"]:
            return "capture is off until you agree to it (first-run or Settings)"
        from mneme.capture.service import CaptureService

        if self.capture is None:
            self.capture = (self.capture_factory or CaptureService)(self.memory, on_change=self.capture_state.emit)
        try:
            self.capture.start()  # retention runs at start and hourly while capturing
        except Exception as exc:  # the service keeps the error and its hint: shown, restartable
            log.warning("capture not started: %s", exc)
            return f"capture could not start: {self.capture.error}"
        finally:
            self.capture_changed()
        self.pipeline = self.capture.pipeline
        return None

    def start_hotkey(self) -> str | None:
        from mneme.capture.window import session_warning

        if self._hotkey is not None:
            self._hotkey.stop()
            self._hotkey.join(2)  # its X connection closed before the display may go
            self._hotkey = None
        try:
            from pynput import keyboard  # needs a display; imported only here
        except Exception as exc:
            return f"global hotkey unavailable: {exc}"
        warning = session_warning()
        try:
            self._hotkey = keyboard.GlobalHotKeys({self.memory.config["hotkey"]: self.hotkey_pressed.emit})
            self._hotkey.start()
        except Exception as exc:
            return f"global hotkey unavailable: {exc}"
        return warning or None

    def listen_single_instance(self) -> None:
        name = instance_name(self.memory.home)
        QLocalServer.removeServer(name)
        self.server = QLocalServer(self)
        self.server.newConnection.connect(self._other_instance)
        self.server.listen(name)

    def _other_instance(self) -> None:
        conn = self.server.nextPendingConnection()
        conn.readyRead.connect(lambda: (conn.readAll(), self.window().show_tab("Ask")))

    def quit(self) -> None:
        """Quit once the memory is closed (its index saved, off the GUI thread); a quit while a
        lock is saving waits for that save."""
        self.quitting = True
        app = QApplication.instance()
        if self.saving is not None:
            self._after_saving = app.quit
            return
        if self._window is not None and not self.memory.closed:
            self._window.save_place()
            self._window.hide()
        self._stop_services()
        if self.memory.closed:
            app.quit()
        else:
            self.close_memory(app.quit)

    def _stop_services(self, keep_server: bool = False) -> None:
        """Everything but the memory: hotkey, capture, timers, running tasks, the model."""
        if self._hotkey is not None:
            self._hotkey.stop()
            self._hotkey.join(2)  # its X connection closed before the display may go
            self._hotkey = None
        if self.capture is not None:
            self.capture.close()
            self.capture = None
        if self._desktop is not None and hasattr(self._desktop, "close"):
            self._desktop.close()
        self._desktop = None
        self._idle_timer.stop()
        self._status_timer.stop()
        others = [t for t in list(self.tasks.running) if t is not self.saving]
        for task in others:
            task.cancel.set()
        for task in others:
            if task.thread is not None:
                task.thread.join(30.0)
        if self._llm is not None:
            self._llm.close()
            self._llm = None
        if self.server is not None and not keep_server:
            self.server.close()

    def shutdown(self, keep_server: bool = False) -> None:
        """Stop everything and close the memory here and now (at the application's very end, and
        in tests); a save that lock or quit started is waited for."""
        self._stop_services(keep_server)
        saving = self.saving
        if saving is not None and saving.thread is not None:
            saving.thread.join()
        if not self.memory.closed:
            self.memory.close()


def apply_onboarding(config, password_managers: bool, consent: bool) -> None:
    """The first-run choices. Unticking the password managers removes exactly those from the
    excluded apps; private windows and Mneme's own stay excluded (capture.privacy)."""
    from mneme.core.config import PASSWORD_MANAGERS

    config.set("capture_consent", consent)
    apps = [a for a in config["excluded_apps"] if password_managers or a.lower() not in PASSWORD_MANAGERS]
    if password_managers:
        apps += [a for a in PASSWORD_MANAGERS if a not in apps]
    config.set("excluded_apps", apps)
    config.save()


def first_run(dialog: Onboarding, home, embedder):
    """The memory the onboarding's choices make, and what to restore into it (or None)."""
    phrase = dialog.passphrase.text()
    mem = memory_api.open_memory(home, embedder=embedder, key_mode=dialog.mode(), passphrase=lambda q: phrase)
    apply_onboarding(mem.config, dialog.exclusions.isChecked(), dialog.consent.isChecked())
    return mem, dialog.restore()


def unlock(home, embedder, parent=None):
    """Open the memory: onboarding on first run, the unlock dialog in passphrase mode. Returns
    (memory, a vault to restore or None), or None when the user gave up."""
    layout = HomeLayout(resolve_home(home))
    if not memory_api.home_exists(home):
        dialog = Onboarding(str(layout.root), keys.keyring_available(), parent)
        if dialog.exec() != Onboarding.Accepted:
            return None
        return first_run(dialog, home, embedder)
    meta = keys.KeyMeta.load(layout.meta)
    if meta.mode == "keyring" or os.environ.get("MNEME_PASSPHRASE"):
        return memory_api.open_memory(home, embedder=embedder), None
    dialog = UnlockDialog(lambda p: memory_api.open_memory(home, embedder=embedder, passphrase=lambda q: p),
                          str(layout.root), parent)
    return (dialog.result_value, None) if dialog.exec() == UnlockDialog.Accepted else None


def run(home=None) -> int:
    from mneme import models

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Mneme")
    app.setDesktopFileName("mneme")
    app.setQuitOnLastWindowClosed(False)
    if raise_running(resolve_home(home)):
        print("Mneme is already running; its window was raised.")
        return 0
    try:
        opened = unlock(home, models.default_embedder())
    except UserError as exc:
        show_error(None, exc).exec()
        return 2
    if opened is None:
        return 1
    mem, restore = opened
    controller = Controller(mem)

    def excepthook(kind, exc, tb):  # a crash is logged, shown, and loses no data
        text = "".join(traceback.format_exception(kind, exc, tb))
        log.critical("unhandled error: %s", text)
        controller.error(exc, text)

    sys.excepthook = excepthook
    controller.listen_single_instance()
    window = controller.window()
    if restore is not None:  # capture starts once the vault's settings (its exclusions) are back
        controller.restore_vault(restore)
    else:
        controller.start_capture()  # its state (and what to do when it cannot run) is in the status bar
    notes = [n for n in (controller.start_hotkey(),) if n]
    window.show_count(notes)
    window.show()
    app.aboutToQuit.connect(controller.shutdown)  # also waits for a save lock or quit started
    QTimer.singleShot(0, controller.tray.refresh)
    return app.exec()


def gui_main() -> int:
    """Entry point of the ``mneme-app`` GUI script."""
    from mneme.app.cli import main

    return main([*sys.argv[1:], "app"])
