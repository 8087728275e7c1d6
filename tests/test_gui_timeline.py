"""Timeline: the frame's whole text or only what changed, and dates and times in the user's locale."""

import json
from datetime import datetime

import pytest

from mneme.app.qt import QDate, QLocale
from mneme.core.records import FrameIn
from tests.test_gui import controller, settled, webp  # noqa: F401 (fixture)

pytestmark = pytest.mark.gui


def boxes(*lines):
    """words_json as capture stores it: every word on screen with its box, one line of text a row."""
    out = []
    for row, line in enumerate(lines):
        x = 10
        for word in line.split():
            out.append([word, x, 20 + row * 30, 9 * len(word), 18])
            x += 9 * len(word) + 8
    return json.dumps(out)


@pytest.fixture
def day(controller):
    """A morning: a mail window, then a line typed into it (a picture), then a text-only frame."""
    mem = controller.memory
    t = datetime(2021, 3, 4, 9, 30).timestamp()
    first = ["Inbox 3 unread", "Call plumber Tuesday about the boiler"]
    mem.add_frame(FrameIn("a", t, 1, "mail", "Inbox", 320, 180, webp(10), webp(10), "\n".join(first),
                          boxes(*first)))
    second = first + ["quote was 240 pounds"]  # stored text: only the line that was new
    mem.add_frame(FrameIn("b", t + 60, 1, "mail", "Inbox", 320, 180, webp(90), webp(90), "quote was 240 pounds",
                          boxes(*second)))
    mem.add_frame(FrameIn("c", t + 70, 1, "mail", "Inbox", 320, 180, b"", b"", "see you then", "[]"))
    mem.add_frame(FrameIn("other", t + 65, 2, "editor", "notes", 320, 180, webp(200), webp(200), "on monitor two",
                          boxes("on monitor two")))
    view = controller.window().timeline
    view.day.setDate(QDate(2021, 3, 4))
    return view


def test_all_text_or_what_changed(day, qtbot):
    view = settled(qtbot, day)
    frames = [f[2] + ":" + f[3] for f in view.frames]
    assert frames == ["mail:Inbox", "mail:Inbox", "editor:notes", "mail:Inbox"]
    view.slider.setValue(1)  # the picture taken when the quote appeared
    settled(qtbot, view)
    assert view.all_text.isChecked()  # the whole screen by default
    text = view.text.toPlainText()
    assert text.splitlines() == ["Inbox 3 unread", "Call plumber Tuesday about the boiler", "quote was 240 pounds"]
    assert view.text_note.text() == "All the text on the screen at this moment."
    view.changed_text.click()
    assert view.text.toPlainText() == "quote was 240 pounds" and "appeared at this moment" in view.text_note.text()
    view.all_text.click()
    view.slider.setValue(3)  # text only: the screen as last pictured on its monitor, and the line since
    settled(qtbot, view)
    lines = view.text.toPlainText().splitlines()
    assert lines == ["Inbox 3 unread", "Call plumber Tuesday about the boiler", "quote was 240 pounds", "see you then"]
    assert "on monitor two" not in view.text.toPlainText()  # another monitor's screen is not this one's
    assert "as pictured at" in view.text_note.text()
    view.changed_text.click()
    assert view.text.toPlainText() == "see you then"
    view.copy_button.click()  # Copy takes what is shown
    from mneme.app.qt import QApplication

    assert QApplication.clipboard().text() == "see you then"


def test_dates_and_times_in_the_users_locale(day, qtbot, monkeypatch):
    german = QLocale(QLocale.German, QLocale.Germany)
    QLocale.setDefault(german)
    try:
        view = day
        view.load()
        settled(qtbot, view)
        t = view.frames[0][1]
        assert view.strip.item(0).text() == "09:30"
        view.slider.setValue(0)
        settled(qtbot, view)
        assert view.caption.text().startswith("04.03.21 09:30")  # German short form: day.month.year
        asked = []
        monkeypatch.setattr(view.c, "confirm", lambda text: asked.append(text) or False)
        view.forget_day()
        assert "Donnerstag, 4. März 2021" in asked[0]
        QLocale.setDefault(QLocale(QLocale.English, QLocale.UnitedStates))
        view.load()
        settled(qtbot, view)
        assert view.strip.item(0).text() == "9:30\u202fAM" or view.strip.item(0).text() == "9:30 AM"
        assert view.caption.text().startswith("3/4/21")
        from mneme.app.results import when

        assert when(t).startswith("3/4/21")
    finally:
        QLocale.setDefault(QLocale.system())


def test_paused_until_is_said_in_the_users_locale(day, qtbot):
    from mneme.capture.service import status
    from mneme.app.results import clock, when

    class Running:
        state = "running"

    view = day
    view.c.memory.config.set("capture_consent", True)
    QLocale.setDefault(QLocale(QLocale.English, QLocale.UnitedStates))
    try:
        view.c.pause_state.pause(60)
        text = status(view.c.memory.config, Running(), view.c.pause_state, clock=clock, when=when).text
        assert text.startswith("Paused until ") and text.rstrip().endswith(("AM", "PM")), text
        until = view.c.pause_state.pause(3 * 86400)
        text = status(view.c.memory.config, Running(), view.c.pause_state, clock=clock, when=when).text
        assert text == f"Paused until {when(until)}" and "/" in text, text
    finally:
        QLocale.setDefault(QLocale.system())
        view.c.pause_state.resume()
