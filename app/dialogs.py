"""Dialogs: errors with "Copy details", passphrase unlock, first-run onboarding."""

from __future__ import annotations

import logging

from pathlib import Path

from mneme.app.qt import (QApplication, QCheckBox, QDialog, QDialogButtonBox, QFileDialog, QHBoxLayout, QLabel,
                          QLineEdit, QMessageBox, QPushButton, QRadioButton, QVBoxLayout)
from mneme.core.errors import LockedError, UserError

log = logging.getLogger(__name__)


def show_error(parent, exc: BaseException, details: str = "") -> QMessageBox:
    """A UserError is shown as what it says; anything else as a bug, with details to copy."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Warning)
    box.setWindowTitle("Mneme")
    if isinstance(exc, UserError):
        box.setText(exc.message)
        box.setInformativeText(exc.hint)
    else:
        box.setText("Something went wrong inside Mneme. Your memory is safe; nothing was lost.")
        box.setInformativeText("The details are in the log. Copy them to report the problem.")
    details = details or f"{type(exc).__name__}: {exc}"
    box.setDetailedText(details)
    copy = box.addButton("Copy details", QMessageBox.ActionRole)
    copy.clicked.disconnect()
    copy.clicked.connect(lambda: QApplication.clipboard().setText(details))
    box.addButton(QMessageBox.Ok)
    box.setModal(True)
    box.open()
    return box


def password_field(placeholder: str = "") -> QLineEdit:
    field = QLineEdit()
    field.setEchoMode(QLineEdit.Password)
    field.setPlaceholderText(placeholder)
    return field


def error_and_buttons(dialog: QDialog, layout: QVBoxLayout) -> QLabel:
    """The red error line and OK/Cancel every Mneme dialog ends with; OK calls dialog.attempt."""
    label = QLabel("")
    label.setObjectName("error")
    label.setStyleSheet("color: #b00020")
    layout.addWidget(label)
    buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
    buttons.accepted.connect(dialog.attempt)
    buttons.rejected.connect(dialog.reject)
    layout.addWidget(buttons)
    return label


MIN_PASSPHRASE = 8


def passphrase_problem(passphrase: str) -> str | None:
    """Why a new passphrase is too weak to lock a memory with, or None. Length is what counts
    against guessing; a few unrelated words are long and easy to remember."""
    if len(passphrase) < MIN_PASSPHRASE:
        return (f"Too short: use at least {MIN_PASSPHRASE} characters "
                "(a few unrelated words are strong and easy to remember).")
    if len(set(passphrase.lower())) < 4:
        return "Too easy to guess: it repeats a few characters. Try a few unrelated words."
    return None


def unlock_message(exc: UserError) -> str:
    """A wrong passphrase said as such (the store says the key is wrong: the key comes from it)."""
    if isinstance(exc, LockedError) and "key is wrong" in exc.message:
        return "Wrong passphrase. Nothing was changed; try again."
    return exc.message


class UnlockDialog(QDialog):
    """Asks for the passphrase; *try_unlock(passphrase)* raises UserError when it is wrong, and the
    dialog stays open with the reason shown. Nothing is changed by a wrong passphrase."""

    def __init__(self, try_unlock, home: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Unlock Mneme")
        self.try_unlock = try_unlock
        self.result_value = None
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"Your memory in {home} is locked.\nEnter its passphrase:"))
        self.passphrase = password_field()
        layout.addWidget(self.passphrase)
        self.error = error_and_buttons(self, layout)

    def attempt(self) -> None:
        try:
            self.result_value = self.try_unlock(self.passphrase.text())
        except UserError as exc:
            self.error.setText(unlock_message(exc))
            self.passphrase.selectAll()
            return
        self.accept()


class Onboarding(QDialog):
    """First run: what is captured, where it is kept, how it is locked; capture only with consent."""

    TEXT = ("<h2>Welcome to Mneme</h2>"
            "<p>Mneme remembers what passes over your screen — it takes a screenshot every few seconds "
            "when something changed and reads its text — and the chats you import, so you can ask "
            "about them later.</p>"
            "<p><b>Everything stays on this computer</b>, encrypted in <code>{home}</code>. Answers come "
            "from a model running here; nothing is sent anywhere.</p>"
            "<p>Password managers, private/incognito browser windows and Mneme itself are never "
            "captured. Card numbers, API keys, IBANs and passwords seen on screen are blanked out.</p>")

    def __init__(self, home: str, keyring_ok: bool, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Welcome to Mneme")
        layout = QVBoxLayout(self)
        text = QLabel(self.TEXT.format(home=home))
        text.setWordWrap(True)
        layout.addWidget(text)
        self.use_keyring = QRadioButton("Keep the key in the system keyring (unlocks with your login)")
        self.use_passphrase = QRadioButton("Lock with a passphrase I type (never stored)")
        self.use_keyring.setEnabled(keyring_ok)
        (self.use_keyring if keyring_ok else self.use_passphrase).setChecked(True)
        if not keyring_ok:
            self.use_keyring.setText(self.use_keyring.text() + " — no keyring found on this system")
        layout.addWidget(self.use_keyring)
        layout.addWidget(self.use_passphrase)
        self.passphrase = password_field("passphrase")
        self.passphrase2 = password_field("repeat passphrase")
        layout.addWidget(self.passphrase)
        layout.addWidget(self.passphrase2)
        self.exclusions = QCheckBox("Never capture password managers (KeePassXC, 1Password, Bitwarden)")
        self.exclusions.setChecked(True)
        layout.addWidget(self.exclusions)
        always = QLabel("Private and incognito browser windows and Mneme's own windows are never "
                        "captured; that cannot be turned off.")
        always.setWordWrap(True)
        self.always_excluded = always
        layout.addWidget(always)
        self.consent = QCheckBox("Start capturing my screen now")
        layout.addWidget(self.consent)
        # Moving to a new computer, or after a reinstall: the memory comes back from a vault file
        # (made by File › Export vault or `mneme export`) once this home is set up.
        self.restore_path: str | None = None
        row = QHBoxLayout()
        self.restore_button = QPushButton("Restore from a vault…")
        self.restore_button.setToolTip("Bring back a memory exported from Mneme (a .mnemevault file)")
        self.restore_button.clicked.connect(lambda: self.choose_vault())
        self.restore_label = QLabel("")
        self.restore_label.setWordWrap(True)
        row.addWidget(self.restore_button)
        row.addWidget(self.restore_label, 1)
        layout.addLayout(row)
        self.vault_passphrase = password_field("the vault's passphrase")
        self.vault_passphrase.hide()
        layout.addWidget(self.vault_passphrase)
        self.error = error_and_buttons(self, layout)

    def choose_vault(self, path: str | None = None) -> None:
        """Pick the vault to restore (a file dialog unless *path* is given); it is read after setup."""
        path = path or QFileDialog.getOpenFileName(self, "Restore from a vault", "",
                                                   "Mneme vault (*.mnemevault);;All (*)")[0]
        if not path:
            return
        self.restore_path = path
        self.restore_label.setText(f"Restores {Path(path).name} once this home is set up; "
                                   "capture starts after it.")
        self.vault_passphrase.show()
        self.vault_passphrase.setFocus()

    def restore(self) -> dict | None:
        """What to restore after setup: the vault, its passphrase, and the capture choice made here
        (the vault's own settings come back with it, but not over this choice)."""
        if not self.restore_path:
            return None
        return {"path": self.restore_path, "passphrase": self.vault_passphrase.text(),
                "consent": self.consent.isChecked()}

    def mode(self) -> str:
        return "passphrase" if self.use_passphrase.isChecked() else "keyring"

    def attempt(self) -> None:
        if self.mode() == "passphrase":
            if not self.passphrase.text():
                self.error.setText("Choose a passphrase.")
                return
            weak = passphrase_problem(self.passphrase.text())
            if weak:
                self.error.setText(weak)
                return
            if self.passphrase.text() != self.passphrase2.text():
                self.error.setText("The two passphrases differ.")
                return
        if self.restore_path:
            if not Path(self.restore_path).is_file():
                self.error.setText(f"No vault at {self.restore_path}: choose it again.")
                return
            if not self.vault_passphrase.text():
                self.error.setText("Enter the vault's passphrase (the one chosen when it was exported).")
                return
        self.accept()
