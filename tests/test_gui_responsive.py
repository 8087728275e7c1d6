"""The GUI thread never waits on the store or a file: the Timeline, the storage meter, the past
questions and Settings' model check read off it, show that they are loading, and the window keeps
answering meanwhile. Each slow read here blocks on an event the test controls (no timing)."""

import threading

import pytest

from mneme.app.qt import QTimer, Qt
from tests.test_gui import controller, settled, wait_saved  # noqa: F401 (fixture)

pytestmark = pytest.mark.gui


OPENED: list = []  # every gate of a test, opened at its end whatever happened


@pytest.fixture(autouse=True)
def open_gates():
    yield
    while OPENED:
        OPENED.pop().open()


class Gate:
    """Wraps a function so that calls block until ``open()``; records the thread each ran on."""

    def __init__(self, fn):
        self.fn, self.event, self.entered, self.threads = fn, threading.Event(), threading.Event(), []
        OPENED.append(self)

    def __call__(self, *args, **kwargs):
        self.threads.append(threading.current_thread())
        self.entered.set()
        assert self.event.wait(30), "the test never let the read go on"
        return self.fn(*args, **kwargs)

    def open(self):
        self.event.set()


def event_loop_turns(qtbot) -> None:
    """A timer fires: the GUI thread is not stuck in a read."""
    fired = []
    QTimer.singleShot(0, lambda: fired.append(True))
    qtbot.waitUntil(lambda: fired == [True], timeout=5_000)


def test_timeline_reads_the_day_and_the_frame_off_the_gui_thread(controller, qtbot, monkeypatch):
    window = controller.window()
    view = settled(qtbot, window.timeline)
    store = controller.memory.store
    day = Gate(store.frames_between)
    monkeypatch.setattr(store, "frames_between", day)
    view.load()
    assert day.entered.wait(5) and view.loading and view.caption.text() == "Loading the day…"
    assert not view.delete_button.isEnabled()  # nothing to forget until the day is in
    event_loop_turns(qtbot)
    qtbot.keyClicks(window.search.query, "spare key cabin")  # another view works meanwhile
    qtbot.waitUntil(lambda: bool(window.search.results.rows()), timeout=10_000)
    assert view.loading
    day.open()
    settled(qtbot, view)
    assert day.threads and threading.main_thread() not in day.threads
    assert "(3 of 3)" in view.caption.text() and view.strip.count() == 3 and "frame 2" in view.text.toPlainText()

    picture = Gate(store.picture_for)  # the frame's picture and text: read off the GUI thread too
    monkeypatch.setattr(store, "picture_for", picture)
    view.slider.setValue(0)
    assert picture.entered.wait(5) and view.frame_loading and "(1 of 3)" in view.caption.text()
    assert "frame 2" in view.text.toPlainText() and not view.copy_button.isEnabled()
    view.slider.setValue(1)  # the user moves on while the first read waits: only the newest is shown
    event_loop_turns(qtbot)
    picture.open()
    settled(qtbot, view)
    assert threading.main_thread() not in picture.threads
    assert "(2 of 3)" in view.caption.text() and "frame 1" in view.text.toPlainText() and view.copy_button.isEnabled()


def test_settings_reads_the_model_file_and_the_meter_off_the_gui_thread(controller, qtbot, monkeypatch,
                                                                         tmp_path):
    from mneme.models import registry

    settings = controller.window().settings
    qtbot.waitUntil(lambda: settings.meter_measured >= 1, timeout=10_000)
    assert settings.meter.format().startswith("3 frames")
    check = Gate(registry.check_gguf)
    monkeypatch.setattr(registry, "check_gguf", check)
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"NOPE" + bytes(64))
    settings.model.setText(str(fake))
    qtbot.mouseClick(settings.save_button, Qt.LeftButton)
    assert check.entered.wait(5) and settings.saving and settings.saved.text() == "Checking…"
    assert not settings.save_button.isEnabled()
    event_loop_turns(qtbot)
    check.open()
    wait_saved(qtbot, settings)
    assert threading.main_thread() not in check.threads
    assert "not a GGUF model file" in settings.errors["model_path"].text()
    assert controller.memory.config["model_path"] == ""  # refused: nothing saved

    controller.memory.forget(source_ids=[controller.memory.store.frames_between(0, 2e10)[0][0]])
    usage = Gate(controller.memory.store.frame_usage)
    monkeypatch.setattr(controller.memory.store, "frame_usage", usage)
    measured = settings.meter_measured
    settings.refresh_meter()
    assert usage.entered.wait(5)
    event_loop_turns(qtbot)
    assert settings.meter.format().startswith("3 frames")  # the old figure until the new one is in
    usage.open()
    qtbot.waitUntil(lambda: settings.meter_measured > measured, timeout=10_000)
    assert settings.meter.format().startswith("2 frames") and threading.main_thread() not in usage.threads


def test_past_questions_are_read_off_the_gui_thread(controller, qtbot, monkeypatch):
    import time

    ask = controller.window().ask
    qtbot.waitUntil(lambda: ask.history_loaded >= 1, timeout=10_000)
    controller.memory.store.add_answer(time.time(), "where is the spare key?", "Under the flowerpot [1]",
                                       "answered", [], [])
    history = Gate(controller.memory.history)
    monkeypatch.setattr(controller.memory, "history", history)
    ask.load_history()
    assert history.entered.wait(5)
    event_loop_turns(qtbot)
    history.open()
    qtbot.waitUntil(lambda: ask.history.count() == 1, timeout=10_000)
    assert "spare key" in ask.history.item(0).text() and threading.main_thread() not in history.threads


def test_settings_changes_how_the_key_is_kept_off_the_gui_thread(controller, qtbot, monkeypatch):
    settings = controller.window().settings
    assert controller.memory.meta.mode == "passphrase"
    rekey = Gate(controller.memory.store.rekey)
    monkeypatch.setattr(controller.memory.store, "rekey", rekey)
    settings.key_mode.setCurrentText("keyring")
    qtbot.mouseClick(settings.save_button, Qt.LeftButton)
    qtbot.waitUntil(rekey.entered.is_set, timeout=10_000)  # the check first, then the re-encryption
    assert settings.saving and settings.saved.text() == "Re-encrypting your memory under the new key…"
    assert not settings.save_button.isEnabled()
    event_loop_turns(qtbot)
    rekey.open()
    wait_saved(qtbot, settings, timeout=30_000)
    assert threading.main_thread() not in rekey.threads
    assert controller.memory.meta.mode == "keyring"
    assert settings.saved.text().endswith("kept in the OS keyring.")
