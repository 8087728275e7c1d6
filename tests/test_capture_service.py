"""The capture service both front ends use: a dead capture thread is visible, logged and
restartable; settings apply at once; retention runs where capture runs."""

import os
import time

import pytest

from mneme.capture.service import CaptureService
from tests.test_capture_units import FakeDesktop, FakeScreen, frames, line_ocr

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


class BreakingDesktop(FakeDesktop):
    """A display connection that breaks (as when the X server goes away) until mended."""

    def __init__(self):
        super().__init__()
        self.broken = False

    def active(self):
        if self.broken:
            raise ConnectionResetError("display connection lost")
        return super().active()


def service(mem, desk, **kw):
    screens = FakeScreen(frames(50))
    return CaptureService(mem, lambda: desk, lambda: screens, interval=0.05, idle_after=0, ocr_fn=line_ocr, **kw)


def wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_a_dead_capture_thread_is_visible_logged_and_restartable(open_mem, caplog):
    mem = open_mem()
    desk, changes = BreakingDesktop(), []
    svc = service(mem, desk, on_change=lambda: changes.append(svc.state))
    svc.start()
    assert svc.state == "running"
    desk.broken = True
    assert wait_for(lambda: svc.state == "failed"), "the capture thread died silently"
    assert "display connection lost" in svc.error and changes[-1] == "failed"
    assert any("capture stopped by an error" in r.message and r.exc_info for r in caplog.records)
    desk.broken = False
    svc.restart()
    assert svc.state == "running" and svc.error is None
    assert wait_for(lambda: mem.store.frame_usage()[0] > 0)
    svc.close()
    assert svc.state == "stopped"


def test_exclusions_apply_at_once(open_mem):
    mem = open_mem()
    svc = service(mem, FakeDesktop())
    svc.once()
    assert mem.store.frame_usage()[0] == 1
    mem.config.set("excluded_apps", ["editor"])  # Settings saved while capturing
    svc.apply_settings()
    svc.once()
    apps = [app for _, _, app, _ in mem.store.frames_between(0, 2e10)]
    assert apps[0] == "editor" and "editor" not in apps[1:]  # its next frame is masked, not stored as it
    assert svc.pipeline.stats.masked >= 1
    svc.close()


def test_retention_runs_when_capture_starts(open_mem):
    from mneme.core.records import FrameIn

    mem = open_mem()
    mem.add_frame(FrameIn("old", 1_000_000, 1, "editor", "old.txt", 1, 1, b"x", b"", "old frame", "[]"))
    mem.config.set("retention_days", 30)
    svc = service(mem, FakeDesktop())
    svc.start()
    assert mem.store.frames_between(0, 2_000_000) == []  # the desktop app kept frames for ever
    svc.close()


@pytest.mark.gui
def test_the_app_applies_saved_settings_to_running_capture_and_shows_a_dead_one(qtbot, open_mem):
    from mneme.app.main import Controller
    from mneme.capture.window import Window

    c = Controller(open_mem(), interactive=False)
    c.memory.config.set("capture_consent", True)
    desk = BreakingDesktop()
    c.capture = service(c.memory, desk, on_change=c.capture_state.emit)
    c.capture.start()
    before = c.memory.config.as_dict()
    c.memory.config.set("excluded_apps", ["secretapp"])
    c.settings_changed(before)  # only the hotkey was restarted before
    assert c.capture.pipeline.exclusions.excluded(Window(1, "secretapp", "x"))
    desk.broken = True
    qtbot.waitUntil(lambda: c.capture_problem() is not None, timeout=10_000)
    qtbot.waitUntil(lambda: "Capture stopped" in c.tray.tooltip, timeout=5_000)
    assert c.tray.actions["restart"].isVisible()
    desk.broken = False
    c.restart_capture()
    assert c.capture.state == "running" and c.capture_problem() is None
    c.shutdown()


def test_a_dead_ocr_worker_stops_capture_visibly_and_restart_mends_it(open_mem, caplog):
    """Tesseract gone while capturing: frames would queue and never be stored. The OCR worker's
    death shows as the capture's error, with how to fix it, and a restart captures again."""
    from mneme.capture.service import status
    from tests.test_capture_units import FakeScreen

    mem = open_mem()
    mem.config.set("capture_consent", True)
    broken = True

    def ocr(rgb, offset):
        if broken:
            raise RuntimeError("tesseract is not installed")
        return line_ocr(rgb, offset)

    svc = CaptureService(mem, FakeDesktop, lambda: FakeScreen(frames(50)), interval=0.05, idle_after=0, ocr_fn=ocr)
    svc.start()
    assert wait_for(lambda: svc.state == "failed"), "the OCR worker died and capture went on storing nothing"
    assert "reading text from the screen failed" in svc.error and "tesseract is not installed" in svc.error
    assert "tesseract --version" in svc.hint
    shown = status(mem.config, svc, svc.pipeline.pause)
    assert shown.state == "error" and "tesseract is not installed" in shown.text and shown.hint == svc.hint
    assert any("the OCR worker stopped" in r.message for r in caplog.records)
    assert mem.store.frame_usage()[0] == 0
    broken = False
    svc.restart()
    assert svc.state == "running" and svc.error is None
    assert wait_for(lambda: mem.store.frame_usage()[0] > 0)
    assert status(mem.config, svc, svc.pipeline.pause).state == "capturing"
    svc.close()


def test_a_capture_that_cannot_start_says_why_and_starts_once_the_setting_is_fixed(open_mem):
    from mneme.capture.service import status
    from mneme.core.errors import UserError
    from mneme.core.pause import PauseState

    mem = open_mem()
    mem.config.set("capture_consent", True)
    mem.config.set("excluded_titles", ["(unclosed"])  # written by hand into config.json
    svc = service(mem, FakeDesktop())
    with pytest.raises(UserError):
        svc.start()
    shown = status(mem.config, svc, PauseState(mem.home))
    assert shown.state == "error" and "excluded title pattern" in shown.text
    assert "excluded_titles" in shown.hint and "restart capture" in shown.hint
    mem.config.set("excluded_titles", ["(closed)"])
    svc.restart()
    assert svc.state == "running"
    assert wait_for(lambda: mem.store.frame_usage()[0] > 0)
    svc.close()


@pytest.fixture
def app_controller(qtbot, open_mem):
    from mneme.app.main import Controller

    c = Controller(open_mem(), interactive=False)
    c.desk = BreakingDesktop()
    c.capture_factory = lambda mem, on_change: service(mem, c.desk, on_change=on_change)
    yield c
    c.shutdown()


@pytest.mark.gui
def test_capture_switch_in_the_tray_and_in_settings(app_controller, qtbot):
    """Onboarding's box left unticked: capture can be turned on later, from the tray or Settings."""
    from mneme.app.qt import Qt
    from mneme.core.config import Config

    c = app_controller
    window, tray = c.window(), c.tray
    assert c.capture_status().state == "off" and "Capture is off" in window.capture_label.text()
    assert tray.actions["capture_on"].isVisible() and not tray.actions["capture_off"].isVisible()
    tray.actions["capture_on"].trigger()
    assert c.capture.state == "running" and Config.load(c.memory.layout.config)["capture_consent"]
    assert "Capturing" in window.capture_label.text() and tray.tooltip == "Mneme — Capturing"
    assert tray.actions["capture_off"].isVisible() and not tray.grey_icon
    assert window.settings.capture_on.isChecked()
    assert wait_for(lambda: c.memory.store.frame_usage()[0] > 0)
    tray.actions["capture_off"].trigger()
    assert c.capture is None and "Capture is off" in window.capture_label.text() and tray.grey_icon
    assert not window.settings.capture_on.isChecked()
    window.settings.capture_on.setChecked(True)
    qtbot.mouseClick(window.settings.save_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not window.settings.saving, timeout=10_000)  # checked off the GUI thread
    assert c.capture.state == "running" and "Capturing" in window.settings.capture_state.text()
    tray.actions["pause"].trigger()
    assert "Paused until you resume" in window.capture_label.text() and "Paused" in tray.state.text()
    tray.actions["resume"].trigger()
    assert "Capturing" in window.capture_label.text()


@pytest.mark.gui
def test_a_bad_setting_shows_as_the_capture_error_and_fixing_it_restarts_capture(app_controller, qtbot):
    """An invalid title pattern written into config.json: capture cannot start; the window, the
    tray and Settings say why and what to do; fixing it in Settings and saving captures again."""
    from mneme.app.qt import Qt

    c = app_controller
    c.memory.config.set("capture_consent", True)
    c.memory.config.set("excluded_titles", ["(unclosed"])
    assert "excluded title pattern" in c.start_capture()
    window, tray = c.window(), c.tray
    label = window.capture_label.text()
    assert "Capture stopped" in label and "excluded title pattern" in label and "fix the setting excluded_titles" in label
    assert 'href="restart"' in label and tray.actions["restart"].isVisible()
    assert "excluded title pattern" in tray.tooltip and "excluded title pattern" in tray.state.text()
    settings = window.settings
    qtbot.mouseClick(settings.save_button, Qt.LeftButton)  # saving the bad pattern again is refused, beside it
    qtbot.waitUntil(lambda: not settings.saving, timeout=10_000)
    assert settings.errors["excluded_titles"].isVisibleTo(settings) and c.capture.state == "failed"
    settings.titles.setPlainText("(closed)")
    qtbot.mouseClick(settings.save_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not settings.saving, timeout=10_000)
    assert c.capture.state == "running" and "Capturing" in window.capture_label.text()
    assert not tray.actions["restart"].isVisible()
    assert wait_for(lambda: c.memory.store.frame_usage()[0] > 0)


@pytest.mark.gui
def test_resume_restarts_a_capture_that_died(app_controller, qtbot):
    c = app_controller
    c.set_capture(True)
    c.desk.broken = True
    qtbot.waitUntil(lambda: c.capture.state == "failed", timeout=10_000)
    qtbot.waitUntil(lambda: "display connection lost" in c.window().capture_label.text(), timeout=5_000)
    assert "check that the display is still there" in c.window().capture_label.text()
    c.desk.broken = False
    c.tray.actions["resume"].trigger()
    assert c.capture.state == "running" and "Capturing" in c.window().capture_label.text()
