"""The small things of issue 13 item 9 not covered in test_gui.py: restoring a vault from the
onboarding, the dark theme that follows the desktop, emoji drawn, one model reload path."""

import pytest

from mneme.app.qt import QApplication, QPalette, Qt
from tests.conftest import msg
from tests.test_gui import controller, settled, showing, wait_saved, webp  # noqa: F401 (fixture)

pytestmark = pytest.mark.gui


def test_onboarding_restores_a_vault_then_captures_as_chosen(qtbot, tmp_path, open_mem, fake_embedder, monkeypatch):
    from mneme.app.dialogs import Onboarding
    from mneme.app.main import Controller, first_run
    from mneme.core.vault import export_vault

    old = open_mem()
    old.import_messages([msg(1, "The allotment key is in the shed tin", conv="Family")])
    old.config.set("excluded_apps", ["keepassxc", "banking-app"])
    old.config.set("theme", "light")
    old.config.save()
    vault = tmp_path / "old.mnemevault"
    export_vault(old, vault, "vault words")
    old.close()

    home = tmp_path / "new-home"
    dialog = Onboarding(str(home), keyring_ok=False)
    qtbot.addWidget(dialog)
    for field in (dialog.passphrase, dialog.passphrase2):
        field.setText("marble tiger kettle")
    assert not dialog.vault_passphrase.isVisibleTo(dialog)
    dialog.choose_vault(str(vault))
    assert dialog.vault_passphrase.isVisibleTo(dialog) and "old.mnemevault" in dialog.restore_label.text()
    dialog.attempt()
    assert "vault's passphrase" in dialog.error.text() and dialog.result() != Onboarding.Accepted
    dialog.vault_passphrase.setText("vault words")
    dialog.attempt()
    assert dialog.result() == Onboarding.Accepted
    monkeypatch.delenv("MNEME_PASSPHRASE")
    mem, restore = first_run(dialog, home, fake_embedder)
    assert restore == {"path": str(vault), "passphrase": "vault words", "consent": False}
    c = Controller(mem, interactive=False)
    try:
        window = c.window()
        task = c.restore_vault(restore)
        qtbot.waitUntil(lambda: task not in c.tasks.running, timeout=60_000)
        assert c.errors == [] and "Restored 1 items" in window.statusBar().currentMessage()
        assert mem.search("allotment key").hits
        assert mem.config["excluded_apps"] == ["keepassxc", "banking-app"]  # the vault's settings came back
        assert window.settings.apps.text() == "keepassxc, banking-app"  # and Settings shows them
        assert mem.config["capture_consent"] is False and c.capture is None  # as chosen in onboarding
        qtbot.waitUntil(lambda: window.ask.history_loaded >= 1, timeout=10_000)
    finally:
        c.shutdown()


def test_a_wrong_vault_passphrase_in_onboarding_says_so_and_the_new_home_works(qtbot, tmp_path, open_mem,
                                                                                fake_embedder):
    from mneme.app.main import Controller
    from mneme.core.vault import export_vault

    old = open_mem(home=tmp_path / "old")
    old.import_messages([msg(1, "kept in the vault")])
    export_vault(old, tmp_path / "v.mnemevault", "right words")
    old.close()
    mem = open_mem(home=tmp_path / "fresh")
    c = Controller(mem, interactive=False)
    try:
        task = c.restore_vault({"path": str(tmp_path / "v.mnemevault"), "passphrase": "wrong words",
                                "consent": False})
        qtbot.waitUntil(lambda: task not in c.tasks.running, timeout=60_000)
        assert "wrong vault passphrase" in c.errors[-1].message
        assert not mem.closed and not mem.search("kept in the vault").hits
    finally:
        c.shutdown()


class CountingLLM:
    """Stands in for the model where what is tested is when the app loads and closes one."""

    id, n_ctx = "counting", 2048

    def __init__(self, log):
        self.log = log
        log.append("load")

    def close(self):
        self.log.append("close")


def test_a_changed_model_setting_reloads_the_model_through_one_path(qtbot, open_mem):
    from mneme.app.main import Controller

    log = []
    c = Controller(open_mem(), llm_factory=lambda memory: CountingLLM(log), interactive=False)
    try:
        first = c.assistant()
        assert c.assistant() is first and log == ["load"]  # loaded once, kept
        before = c.memory.config.as_dict()
        c.memory.config.set("n_ctx", 2048)
        c.settings_changed(before)  # saved in Settings: the model is let go at once …
        qtbot.waitUntil(lambda: log == ["load", "close"], timeout=5_000)
        assert not c.llm_loaded()
        assert c.assistant() is not first and log == ["load", "close", "load"]  # … and loaded anew when asked
        c.memory.config.set("llm_memory_budget", "2G")  # changed elsewhere (no Save): noticed at the next answer
        second = c.assistant()
        qtbot.waitUntil(lambda: log.count("close") == 2, timeout=5_000)  # closed on a thread, as it finishes
        assert log.count("load") == 3 and second is not first
        before = c.memory.config.as_dict()
        c.settings_changed(before)  # nothing changed: nothing reloaded
        assert c.assistant() is second and log.count("load") == 3
    finally:
        c.shutdown()


@pytest.fixture
def light_again():
    from mneme.app.theme import apply_theme

    yield apply_theme
    apply_theme("light")  # the session's other tests see the light look


def test_dark_theme_set_in_settings_and_followed_from_the_desktop(controller, qtbot, light_again):
    from mneme.app.theme import desktop_scheme, is_dark

    window = controller.window()
    settings, timeline = window.settings, window.timeline
    assert desktop_scheme() is None and not is_dark()  # offscreen: no desktop hint, so light
    settings.theme.setCurrentIndex(settings.theme.findData("dark"))
    qtbot.mouseClick(settings.save_button, Qt.LeftButton)
    wait_saved(qtbot, settings)
    assert controller.memory.config["theme"] == "dark" and is_dark()
    label = window.capture_label.grab().toImage()  # "Turn capture on": the link in the dark theme's colour
    colours = {label.pixelColor(x, y).name() for x in range(label.width()) for y in range(label.height())}
    assert "#9d90ff" in colours and "#0000ff" not in colours
    window.resize(900, 600)
    window.show_tab("Timeline")
    settled(qtbot, timeline)
    bar = timeline.activity.grab().toImage()
    assert bar.pixelColor(3, 3).lightness() < 80  # the activity bar is drawn from the theme too
    assert timeline.text.palette().color(QPalette.Base).lightness() < 80
    qtbot.keyClicks(window.search.query, "tomato garden")
    qtbot.waitUntil(lambda: bool(window.search.results.rows()), timeout=10_000)
    assert "#9a9aa8" in window.search.results.rows()[0].text()  # muted text readable on dark
    settings.theme.setCurrentIndex(settings.theme.findData("system"))
    qtbot.mouseClick(settings.save_button, Qt.LeftButton)
    wait_saved(qtbot, settings)
    assert not is_dark()  # no hint from the desktop: light
    hints = QApplication.styleHints()
    hints.colorSchemeChanged.emit(Qt.ColorScheme.Dark)  # the desktop turns dark while Mneme runs
    assert is_dark()
    hints.colorSchemeChanged.emit(Qt.ColorScheme.Light)
    assert not is_dark()
    light_again("light")
    hints.colorSchemeChanged.emit(Qt.ColorScheme.Dark)  # set to light: the desktop does not override it
    assert not is_dark()


def coloured_pixels(image) -> int:
    """Pixels of clear colour (not black, white or grey): what a colour emoji has and a box does not."""
    n = 0
    for y in range(0, image.height(), 2):
        for x in range(0, image.width(), 2):
            c = image.pixelColor(x, y)
            if c.saturation() > 120 and c.value() > 80:
                n += 1
    return n


def test_emoji_in_a_chat_message_are_drawn_in_colour(controller, qtbot):
    from mneme.app.theme import emoji_font
    from mneme.app.views import SourceView

    assert emoji_font() == "Noto Color Emoji"  # packaging/system-deps.sh installs fonts-noto-color-emoji
    from mneme.app.qt import QFontDatabase, QLabel

    assert QFontDatabase.applicationEmojiFontFamilies() == ["Noto Color Emoji"]
    assert QLabel("").minimumSizeHint().width() < 50  # the app's font is left alone
    mem = controller.memory
    mem.import_messages([msg(40, "Party at eight 🎉🍕🎂", conv="Party", speaker="Ines"),
                         msg(41, "Party at eight, plain words", conv="Plain", speaker="Ines")])
    ids = {mem.store.source_text(sid): sid for (sid,) in mem.store._q(
        "SELECT id FROM sources WHERE conversation IN ('Party', 'Plain')")}
    view = SourceView()
    qtbot.addWidget(view)
    view.resize(500, 300)
    view.show()
    qtbot.waitExposed(view)
    view.show_source(mem, ids["Party at eight, plain words"])
    showing(qtbot, view, ids["Party at eight, plain words"])
    plain = coloured_pixels(view.viewport().grab().toImage())
    view.show_source(mem, ids["Party at eight 🎉🍕🎂"])
    showing(qtbot, view, ids["Party at eight 🎉🍕🎂"])
    emoji = coloured_pixels(view.viewport().grab().toImage())
    assert emoji >= 20 and plain == 0, (emoji, plain)  # three emoji in colour; plain words have none
