"""The Settings view: every field is checked when Save is pressed, a wrong one is named beside the
field (nothing is saved then), and what is saved takes effect at once (capture, hotkey, model)."""

from __future__ import annotations

import re

from mneme.app.qt import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QLineEdit,
                          QPlainTextEdit, QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)
from mneme.app.tasks import Latest
from mneme.core.config import Config
from mneme.core.errors import UserError

ERROR_STYLE = "color: #c62828;"
HOTKEY_PART = re.compile(r"<[A-Za-z0-9_]+>|[^<>+\s]")  # pynput's format: <ctrl>+<alt>+<space>, <cmd>+k


def check_hotkey(text: str) -> str:
    """The hotkey in pynput's format, or a UserError saying what is wrong with it."""
    text = text.strip()
    if not text:
        raise UserError("the hotkey is empty", "for example <ctrl>+<alt>+<space>")
    try:
        from pynput import keyboard  # needs a display; without one only the form is checked
    except Exception:
        keyboard = None
    if keyboard is not None:
        try:
            keys = keyboard.HotKey.parse(text)
        except ValueError as exc:
            raise UserError(f"{exc} is not a key pynput knows",
                            "write keys like <ctrl>+<alt>+<space>, <shift>+<f9> or <cmd>+k") from None
        if len(keys) < 2:
            raise UserError("a global hotkey needs a modifier", "for example <ctrl>+<alt>+<space>")
        return text
    parts = text.split("+")
    if len(parts) < 2 or not all(HOTKEY_PART.fullmatch(p) for p in parts):
        raise UserError(f"{text!r} is not a hotkey", "write keys like <ctrl>+<alt>+<space> or <cmd>+k")
    return text


def check_patterns(lines: list[str]) -> list[str]:
    for i, pattern in enumerate(lines, 1):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise UserError(f"line {i}, {pattern!r}: not a valid regular expression ({exc})",
                            r"escape special characters with \, e.g. Bank \(private\)") from None
    return lines


THEME_CHOICES = (("system", "Follow the desktop"), ("light", "Light"), ("dark", "Dark"))


class SettingsView(QWidget):
    def __init__(self, controller):
        super().__init__()
        self.c = controller
        cfg = controller.memory.config
        self.capture_on = QCheckBox("Capture my screen")
        self.capture_on.setChecked(cfg["capture_consent"])
        self.capture_state = QLabel("")
        self.capture_state.setWordWrap(True)
        self.capture_state.linkActivated.connect(controller.capture_link)
        self.interval = QDoubleSpinBox(minimum=0.5, maximum=600, value=cfg["capture_interval"], suffix=" s")
        self.idle = QSpinBox(minimum=0, maximum=86400, value=cfg["idle_pause_seconds"], suffix=" s")
        self.days = QSpinBox(minimum=0, maximum=3650, value=cfg["retention_days"], suffix=" days")
        self.gb = QDoubleSpinBox(minimum=0, maximum=10000, value=cfg["retention_gb"], suffix=" GB")
        self.apps = QLineEdit(", ".join(cfg["excluded_apps"]))
        self.titles = QPlainTextEdit("\n".join(cfg["excluded_titles"]))  # a regex may hold a comma
        self.titles.setPlaceholderText("one regular expression a line, e.g. (?i)bank")
        self.titles.setFixedHeight(70)
        self.model = QLineEdit(cfg["model_path"], placeholderText="bundled Gemma 3 270M")
        self.hotkey = QLineEdit(cfg["hotkey"])
        from mneme.app.memory_budget import LlmMemoryField

        self.llm_memory = LlmMemoryField(cfg)  # the budget, and how the model is held under it
        self.theme = QComboBox()  # the look: the desktop's, or light or dark whatever it says
        for value, text in THEME_CHOICES:
            self.theme.addItem(text, value)
        self.theme.setCurrentIndex(max(0, self.theme.findData(cfg["theme"])))
        self.key_mode = QComboBox()
        self.key_mode.addItems(["keyring", "passphrase"])
        self.key_mode.setCurrentText(controller.memory.meta.mode)
        from mneme.app.autostart import autostart

        self.autostarter = autostart()
        self.autostart = QCheckBox("Start Mneme when I log in")
        self.autostart.setChecked(self.autostarter.enabled())
        self.meter = QProgressBar()
        self.meter.setFormat("Measuring…")
        self.meter_measured = 0  # how many times the meter was filled in (tests wait on it)
        self.meter_reader = Latest(controller.tasks, lambda: controller.memory.store.frame_usage(),
                                   on_done=self._meter_read, on_failed=self._meter_failed)
        self.saving = False  # a Save being checked off the GUI thread
        self.save_button = QPushButton("Save")
        self.save_button.clicked.connect(self.save)
        self.saved = QLabel("")
        self.errors: dict[str, QLabel] = {}
        outer = QVBoxLayout(self)
        form = QFormLayout()
        outer.addLayout(form)
        outer.addStretch(1)  # rows keep their height; the space left goes below them
        for name, label, w in (
                ("capture_consent", "Capture", self.capture_on), ("", "", self.capture_state),
                ("capture_interval", "Capture every", self.interval),
                ("idle_pause_seconds", "Pause when idle after", self.idle),
                ("retention_days", "Keep frames for", self.days), ("retention_gb", "…and at most", self.gb),
                ("excluded_apps", "Never capture apps", self.apps),
                ("excluded_titles", "…or window titles (regex)", self.titles),
                ("model_path", "Answer model (GGUF)", self.model),
                ("llm_memory_budget", "Model memory budget", self.llm_memory),
                ("hotkey", "Recall hotkey", self.hotkey),
                ("theme", "Look", self.theme),
                ("key_mode", "Key storage", self.key_mode), ("autostart", "", self.autostart),
                ("", "Storage", self.meter), ("", "", self.save_button), ("", "", self.saved)):
            if not name:
                form.addRow(label, w)
                continue
            error = QLabel("")
            error.setStyleSheet(ERROR_STYLE)
            error.setWordWrap(True)
            error.hide()
            self.errors[name] = error
            box = QWidget()
            column = QVBoxLayout(box)
            column.setContentsMargins(0, 0, 0, 0)
            column.addWidget(w)
            column.addWidget(error)
            form.addRow(label, box)
        self.refresh_meter()
        self.refresh_capture()

    def refresh_meter(self) -> None:
        """The storage meter, measured off the GUI thread (the old figure stays until the new one)."""
        if not self.c.memory.closed:
            self.meter_reader.submit()

    def _meter_read(self, _args: tuple, usage: tuple[int, int]) -> None:
        count, used = usage
        budget = self.c.memory.config["retention_gb"] * 1e9 or max(used, 1)
        self.meter.setRange(0, 1000)
        self.meter.setValue(int(min(1.0, used / budget) * 1000))
        self.meter.setFormat(f"{count} frames, {used / 1e6:.1f} MB of {budget / 1e9:.1f} GB")
        self.meter_measured += 1

    def _meter_failed(self, exc, tb) -> None:
        if not self.c.memory.closed:  # cut off by a lock or quit: nothing to say
            self.c.error(exc, tb)

    def show_values(self) -> None:
        """The fields as the settings are now (after a vault restore brought its own back)."""
        cfg = self.c.memory.config
        self.capture_on.setChecked(cfg["capture_consent"])
        self.interval.setValue(cfg["capture_interval"])
        self.idle.setValue(cfg["idle_pause_seconds"])
        self.days.setValue(cfg["retention_days"])
        self.gb.setValue(cfg["retention_gb"])
        self.apps.setText(", ".join(cfg["excluded_apps"]))
        self.titles.setPlainText("\n".join(cfg["excluded_titles"]))
        self.model.setText(cfg["model_path"])
        self.hotkey.setText(cfg["hotkey"])
        self.llm_memory.edit.setText(cfg["llm_memory_budget"])
        self.theme.setCurrentIndex(max(0, self.theme.findData(cfg["theme"])))
        self.show_errors({})
        self.refresh_meter()

    def refresh_capture(self) -> None:
        """The capture state beside the switch, with what to do when it is not capturing."""
        self.capture_state.setText(self.c.capture_status_html())

    def entered(self) -> dict:
        return {"capture_consent": self.capture_on.isChecked(),
                "capture_interval": float(self.interval.value()), "idle_pause_seconds": int(self.idle.value()),
                "retention_days": int(self.days.value()), "retention_gb": float(self.gb.value()),
                "excluded_apps": [a.strip() for a in self.apps.text().split(",") if a.strip()],
                "excluded_titles": [t.strip() for t in self.titles.toPlainText().splitlines() if t.strip()],
                "model_path": self.model.text().strip(), "hotkey": self.hotkey.text().strip(),
                "llm_memory_budget": self.llm_memory.edit.text().strip() or "auto",
                "theme": self.theme.currentData()}

    def check(self, values: dict) -> dict[str, str]:
        """Each wrong field's message; empty when every value may be saved."""
        trial = Config(self.c.memory.config.path, self.c.memory.config.as_dict())
        wrong = {}
        checks = {"excluded_titles": check_patterns, "hotkey": check_hotkey,
                  "model_path": lambda p: self._check_model(p)}
        for name, value in values.items():
            try:
                if name in checks:
                    checks[name](value)
                trial.set(name, value)  # the declared type and bounds
            except UserError as exc:
                wrong[name] = exc.message + (f" — {exc.hint}" if exc.hint else "")
        return wrong

    @staticmethod
    def _check_model(path: str) -> None:
        if path:
            from mneme.models.registry import check_gguf  # reads the file: on a worker (a slow disk)

            check_gguf(path)

    def show_errors(self, wrong: dict[str, str]) -> None:
        for name, label in self.errors.items():
            label.setText(wrong.get(name, ""))
            label.setVisible(name in wrong)

    def save(self) -> None:
        """Check everything off the GUI thread (the model file is read; a disk may be slow), then
        save all or nothing and apply it. ``saving`` is true until then; Save waits meanwhile."""
        if self.saving:
            return
        values = self.entered()
        self._busy(True)
        self.saved.setStyleSheet("")
        self.saved.setText("Checking…")
        self.c.tasks.run(lambda _task: self.check(values), on_done=lambda wrong: self._checked(values, wrong),
                         on_failed=self._check_failed)

    def _busy(self, on: bool) -> None:
        """A Save is in flight (checking, or re-encrypting under a new key): Save waits."""
        self.saving = on
        self.save_button.setEnabled(not on)

    def _change_key_mode(self, mode: str) -> None:
        """Re-encrypting runs on a worker; Save waits for it, and says how it ended."""
        def done(_result) -> None:
            self._busy(False)
            self.saved.setText("Saved. The key is now kept " +
                               ("in the OS keyring." if mode == "keyring" else "by your passphrase."))

        def failed(exc, tb) -> None:
            self._busy(False)
            self.key_mode.setCurrentText(self.c.memory.meta.mode)
            self.saved.setText("Saved, but the key was not changed.")
            self.show_errors({"key_mode": str(exc)})
            if not isinstance(exc, (UserError, OSError)):
                self.c.error(exc, tb)

        self._busy(True)
        self.saved.setText("Re-encrypting your memory under the new key…")
        if self.c.change_key_mode(mode, on_done=done, on_failed=failed) is None:
            failed(UserError("no new passphrase was given", "choose Save again to set one"), "")

    def _check_failed(self, exc, tb) -> None:
        self._busy(False)
        self.saved.setText("")
        self.c.error(exc, tb)

    def _checked(self, values: dict, wrong: dict[str, str]) -> bool:
        """On the GUI thread, with what the check found: save and apply, or show what is wrong."""
        self._busy(False)
        if self.c.memory.closed:
            return False
        self.show_errors(wrong)
        if wrong:
            self.saved.setStyleSheet(ERROR_STYLE)
            self.saved.setText("Not saved: fix the marked field" + ("s." if len(wrong) > 1 else "."))
            return False
        cfg = self.c.memory.config
        before = cfg.as_dict()
        try:
            for name, value in values.items():
                cfg.set(name, value)
            cfg.save()
        except Exception as exc:
            for name, value in before.items():
                cfg.set(name, value)
            self.c.error(exc)
            return False
        if self.autostart.isChecked() != self.autostarter.enabled():
            try:
                self.autostarter.set_enabled(self.autostart.isChecked())
            except (UserError, OSError) as exc:
                self.show_errors({"autostart": str(exc)})
        self.saved.setStyleSheet("")
        self.saved.setText("Saved.")
        if self.key_mode.currentText() != self.c.memory.meta.mode:
            self._change_key_mode(self.key_mode.currentText())
        self.c.settings_changed(before)
        self.refresh_capture()
        self.refresh_meter()
        self.llm_memory.refresh()
        return True
