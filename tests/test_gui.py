"""The desktop app driven like a user, offscreen (pytest-qt): real store, index, embedder, model."""

import io
import os
import time

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from mneme.app.qt import QDate, Qt  # noqa: E402
from mneme.core.records import FrameIn  # noqa: E402
from tests.conftest import msg  # noqa: E402

pytestmark = pytest.mark.gui


class SharedLLM:
    """The session's real model, not closed by the app (other tests use it too)."""

    def __init__(self, llm):
        self._llm = llm
        self.id, self.n_ctx = llm.id, llm.n_ctx

    def __getattr__(self, name):
        return getattr(self._llm, name)

    def close(self):
        pass


def webp(text_color=0):
    from PIL import Image

    img = Image.new("RGB", (320, 180), (255, 255, 255))
    img.paste((text_color, 0, 0), (20, 20, 200, 60))
    buf = io.BytesIO()
    img.save(buf, format="WEBP")
    return buf.getvalue()


def settled(qtbot, view, timeout=10_000):
    """Wait until the timeline has read what it was asked for (reads run off the GUI thread)."""
    qtbot.waitUntil(view.is_idle, timeout=timeout)
    return view


def showing(qtbot, source, source_id=None, timeout=10_000):
    """Wait until a SourceView has read and shows the moment (*source_id*, or whichever it was asked)."""
    qtbot.waitUntil(lambda: source.is_idle() and (source_id is None or source.shown_source == source_id),
                    timeout=timeout)
    return source


def wait_saved(qtbot, settings, timeout=10_000):
    """Wait until Settings has checked (off the GUI thread) and saved or refused what was entered."""
    qtbot.waitUntil(lambda: not settings.saving, timeout=timeout)
    return settings


@pytest.fixture
def controller(qtbot, open_mem, real_embedder):
    from mneme.app.main import Controller

    mem = open_mem(embedder=real_embedder)
    mem.import_messages([
        msg(1, "The spare key for the cabin is under the blue flowerpot", conv="Family", app="WhatsApp"),
        msg(2, "Garden club meets on Thursday to plan the tomato beds", conv="Garden club"),
        msg(3, "Quarterly budget review moved to Friday afternoon", conv="Slack #team", app="Slack"),
    ])
    now = time.time()
    for i in range(3):
        mem.add_frame(FrameIn(f"f{i}", now - 300 + i * 60, 1, "editor", f"doc {i}.txt", 320, 180,
                              webp(i * 80), webp(), f"frame {i} text about the orchard plan", "[]"))
    mem.embed_pending()
    mem.wait_caught_up()
    llm = None

    def llm_factory(memory):
        return SharedLLM(request_llm())

    def request_llm():
        nonlocal llm
        if llm is None:
            from mneme.models.llama import LlamaLLM
            from mneme.models.registry import default_model_path

            llm = LlamaLLM(default_model_path(), n_ctx=2048, n_threads=2)
        return llm

    c = Controller(mem, llm_factory=llm_factory, interactive=False)
    yield c
    c.shutdown()
    if llm is not None:
        llm.close()


@pytest.mark.slow
def test_ask_shows_a_checked_answer_and_a_citation_opens_the_moment(controller, qtbot):
    view = controller.window().ask
    qtbot.keyClicks(view.question, "Where is the spare key for the cabin?")
    qtbot.mouseClick(view.ask_button, Qt.LeftButton)
    assert not view.ask_button.isEnabled() and view.stop_button.isEnabled()
    qtbot.waitUntil(lambda: view.task is None, timeout=120_000)
    assert controller.errors == []
    html = view.answer.toHtml()
    assert "Sources" in html and "mneme://source/1" in html
    assert "flowerpot" in view.answer.toPlainText() and "#fff3b0" in html  # the backing quote, highlighted
    view.open_citation(__import__("PySide6.QtCore", fromlist=["QUrl"]).QUrl("mneme://source/1"))
    showing(qtbot, view.source, 1)  # read off the GUI thread
    assert "flowerpot" in view.source.toPlainText()
    qtbot.waitUntil(lambda: view.history.count() == 1, timeout=10_000)  # read off the GUI thread
    assert "spare key" in view.history.item(0).text()
    view.answer.setHtml("")
    view.show_past(view.history.item(0))  # a past question shows its saved answer, not a new run
    assert "flowerpot" in view.answer.toPlainText() and view.task is None
    view.question.setText("When does the garden club meet?")
    seen, show = [], view.stream.on_stage
    view.stream.on_stage = lambda words: (seen.append(words), show(words))
    view.ask()
    assert view.source.toPlainText() == ""  # not the previous question's source
    assert view.status.text() == "Searching your memory…"  # the model is loaded: not "loading" again
    qtbot.waitUntil(lambda: view.task is None, timeout=120_000)
    assert any(w.startswith("Reading ") and " excerpt" in w for w in seen), seen  # what it is doing


def test_search_as_you_type_with_highlights_and_filters(controller, qtbot):
    view = controller.window().search
    qtbot.keyClicks(view.query, "tomato garden")
    qtbot.waitUntil(lambda: view.results.count() > 0, timeout=10_000)
    label = view.results.itemWidget(view.results.item(0))
    assert "<b>tomato</b>" in label.text() and "Garden club" in label.text()
    view.kind.setCurrentText("Screen")
    qtbot.waitUntil(lambda: view.results.count() > 0 and all(
        "editor" in view.results.itemWidget(view.results.item(i)).text() for i in range(view.results.count())),
        timeout=10_000)
    assert not view.results.rows()[0].thumb.pixmap().isNull()  # frames come with thumbnails
    view.open(view.results.item(0))
    assert "orchard" in showing(qtbot, view.source, view.results.item(0).data(Qt.UserRole)).toPlainText()


def test_search_filters_from_the_query_are_chips_in_sync_with_the_boxes(controller, qtbot):
    view = controller.window().search
    chips = lambda: [c.text() for c in view.chips]  # noqa: E731
    qtbot.keyClicks(view.query, "budget review in Slack last week")
    qtbot.waitUntil(lambda: any("in Slack" in c for c in chips()) and any(c.startswith("prefers ") for c in chips()),
                    timeout=10_000)  # the app and the time said
    assert "Slack" in view.app.placeholderText()  # the app box says which app the words chose
    assert all("Slack" in r.text() for r in view.results.rows())
    slack = next(c for c in view.chips if "in Slack" in c.text())
    qtbot.mouseClick(slack, Qt.LeftButton)  # removing the chip takes the words out of the query
    assert view.query.text() == "budget review last week"
    qtbot.waitUntil(lambda: not any("in Slack" in c for c in chips()), timeout=10_000)
    when = next(c for c in view.chips if c.text().startswith("prefers"))
    qtbot.mouseClick(when, Qt.LeftButton)
    assert view.query.text() == "budget review"
    view.kind.setCurrentText("Chats")
    qtbot.waitUntil(lambda: "Chats only  ✕" in chips(), timeout=10_000)
    qtbot.mouseClick(next(c for c in view.chips if c.text().startswith("Chats only")), Qt.LeftButton)
    assert view.kind.currentIndex() == 0  # the box follows its chip
    qtbot.waitUntil(lambda: chips() == [], timeout=10_000)


def test_search_preview_follows_the_keyboard_and_each_new_query(controller, qtbot):
    controller.window().show_tab("Search")
    view = controller.window().search
    view.query.setFocus()
    qtbot.keyClicks(view.query, "orchard plan")
    qtbot.waitUntil(lambda: len(view.results.rows()) >= 2, timeout=10_000)
    rows = view.results.rows()
    showing(qtbot, view.source, rows[0].source_id)  # the first result, at once
    qtbot.keyClick(view.query, Qt.Key_Down)
    showing(qtbot, view.source, rows[1].source_id)
    assert view.query.hasFocus()
    qtbot.keyClick(view.query, Qt.Key_Up)
    showing(qtbot, view.source, rows[0].source_id)
    qtbot.keyClick(view.query, Qt.Key_Down)
    view.query.setText("spare key cabin")
    qtbot.waitUntil(lambda: bool(view.results.rows()) and view.results.rows()[0].source_id != rows[0].source_id,
                    timeout=10_000)
    showing(qtbot, view.source, view.results.rows()[0].source_id)  # not the previous query's moment
    assert "flowerpot" in view.source.toPlainText()
    view.query.setText("xylophone quartet")
    qtbot.waitUntil(lambda: not view.results.rows(), timeout=10_000)
    assert view.source.toPlainText() == ""


def test_search_never_lists_the_assistants_own_answers(controller, qtbot):
    controller.memory.store.add_answer(time.time(), "when is the quarterly budget review?",
                                       "The quarterly budget review is on Friday afternoon [1]", "answered", [], [])
    view = controller.window().search
    qtbot.keyClicks(view.query, "quarterly budget review")
    qtbot.waitUntil(lambda: bool(view.results.rows()), timeout=10_000)
    texts = [r.text() for r in view.results.rows()]
    assert any("moved to Friday" in t for t in texts)  # the message itself
    assert not any("is on Friday" in t or "when is the" in t for t in texts)


def test_search_says_when_nothing_relevant_is_found(controller, qtbot):
    view = controller.window().search
    qtbot.keyClicks(view.query, "xylophone quartet")
    qtbot.waitUntil(lambda: view.results.count() == 1, timeout=10_000)
    assert view.results.item(0).text() == "Nothing relevant found in your memory."
    view.open(view.results.item(0))  # an empty state opens nothing, and does not fail
    assert controller.errors == []


def test_fast_typing_runs_the_first_and_the_newest_query_only(controller, qtbot):
    import threading

    from mneme.app.tasks import Latest

    release, ran, shown = threading.Event(), [], []

    def slow(q):
        ran.append(q)
        release.wait(10)
        return q.upper()

    latest = Latest(controller.tasks, slow, on_done=lambda args, r: shown.append(r), on_failed=controller.error)
    for q in ("t", "to", "tom", "toma"):  # typed while the first search is still running
        latest.submit(q)
    qtbot.waitUntil(lambda: ran == ["t"], timeout=5_000)
    release.set()
    qtbot.waitUntil(lambda: shown == ["TOMA"], timeout=5_000)
    assert ran == ["t", "toma"] and not latest.busy  # "t" was not shown: newer text was waiting


def test_a_text_only_moment_shows_the_screen_as_last_pictured(controller, qtbot):
    mem = controller.memory
    first = mem.store.frames_between(0, 2e10)[-1]
    sid = mem.add_frame(FrameIn("typed", first[1] + 5, 1, "editor", "doc 2.txt", 320, 180, b"", b"",
                                "a new line typed about pear grafting", "[]"))
    view = controller.window().search
    view.source.show_source(mem, sid)
    shown = showing(qtbot, view.source, sid).toHtml()
    assert f"frame-{first[0]}" in shown and "pear grafting" in view.source.toPlainText()
    assert "The screen at" in view.source.toPlainText()
    timeline = controller.window().timeline
    timeline.load()
    settled(qtbot, timeline).slider.setValue(timeline.slider.maximum())
    settled(qtbot, timeline)
    assert "pear grafting" in timeline.text.toPlainText() and not timeline.image.pixmap().isNull()
    assert "The screen at" in timeline.image.toolTip()


def test_timeline_navigation_copy_and_forget(controller, qtbot):
    view = controller.window().timeline
    view.day.setDate(QDate.currentDate())
    view.load()
    settled(qtbot, view)
    assert view.slider.maximum() == 2 and "(3 of 3)" in view.caption.text()
    view.slider.setValue(0)
    settled(qtbot, view)
    assert "(1 of 3)" in view.caption.text() and "frame 0" in view.text.toPlainText()
    assert view.image.pixmap() is not None and not view.image.pixmap().isNull()
    from mneme.app.qt import QApplication

    QApplication.clipboard().setText("")
    qtbot.mouseClick(view.copy_button, Qt.LeftButton)
    assert "frame 0" in QApplication.clipboard().text()
    qtbot.mouseClick(view.delete_button, Qt.LeftButton)
    settled(qtbot, view)  # forgotten off the GUI thread, then the day read again
    assert view.slider.maximum() == 1 and controller.memory.store.frame_usage()[0] == 2
    assert not [h for h in controller.memory.search("frame 0 orchard").hits if "frame 0" in h.text]
    qtbot.mouseClick(view.forget_day_button, Qt.LeftButton)  # confirm is automatic when not interactive
    settled(qtbot, view)
    assert controller.memory.store.frame_usage()[0] == 0 and "No frames" in view.image.text()


def test_settings_round_trip_and_bad_values_named_beside_their_fields(controller, qtbot):
    from mneme.core.config import Config

    view = controller.window().settings
    view.interval.setValue(7.5)
    view.apps.setText("keepassxc, secretapp")
    view.titles.setPlainText("(?i)bank, private\nBudget a{1,3}")  # one pattern a line: commas are theirs
    qtbot.mouseClick(view.save_button, Qt.LeftButton)
    wait_saved(qtbot, view)
    saved = Config.load(controller.memory.layout.config)
    assert saved["capture_interval"] == 7.5 and saved["excluded_apps"] == ["keepassxc", "secretapp"]
    assert saved["excluded_titles"] == ["(?i)bank, private", "Budget a{1,3}"]
    assert view.saved.text() == "Saved."
    view.interval.setValue(12)
    view.titles.setPlainText("fine\n(unclosed")
    view.hotkey.setText("<ctrl>+<alt>+spacebar")
    view.model.setText("/nonexistent/model.gguf")
    qtbot.mouseClick(view.save_button, Qt.LeftButton)
    wait_saved(qtbot, view)
    assert view.saved.text().startswith("Not saved")
    for name, words in (("excluded_titles", "line 2, '(unclosed': not a valid regular expression"),
                        ("hotkey", "spacebar"), ("model_path", "does not exist")):
        assert view.errors[name].isVisibleTo(view) and words in view.errors[name].text(), name
    assert not view.errors["capture_interval"].isVisibleTo(view)
    saved = Config.load(controller.memory.layout.config)  # nothing saved, not even the good field
    assert saved["capture_interval"] == 7.5 and saved["model_path"] == "" and saved["hotkey"] == "<ctrl>+<alt>+<space>"
    assert controller.memory.config["capture_interval"] == 7.5
    view.titles.setPlainText("fine")
    view.hotkey.setText("<ctrl>+<shift>+k")
    view.model.setText("")
    qtbot.mouseClick(view.save_button, Qt.LeftButton)
    wait_saved(qtbot, view)
    assert view.saved.text() == "Saved." and not any(e.isVisibleTo(view) for e in view.errors.values())
    saved = Config.load(controller.memory.layout.config)
    assert saved["capture_interval"] == 12 and saved["hotkey"] == "<ctrl>+<shift>+k"


def test_tray_pause_and_resume(controller):
    tray = controller.tray
    assert tray.actions["pause"].isVisible() and not tray.actions["resume"].isVisible()
    tray.actions["pause15"].trigger()
    assert controller.capture_paused() and "paused" in tray.tooltip
    assert tray.actions["resume"].isVisible() and not tray.actions["pause"].isVisible()
    tray.actions["resume"].trigger()
    assert not controller.capture_paused() and tray.actions["pause"].isVisible()


LONG = ("Long chat about the house: the gutters need clearing before winter, the shed door sticks, the "
        "hallway light flickers when the heating is on, the fence panel by the gate blew down in the storm "
        "and the neighbours offered to help. Call plumber Tuesday about the boiler, quote was 240 pounds.")


@pytest.fixture
def overlay(controller, qtbot):
    mem = controller.memory
    mem.import_messages([msg(10, "Did you sort out the house jobs?", conv="Family", app="WhatsApp", speaker="Ben"),
                         msg(11, LONG, conv="Family", app="WhatsApp"),
                         msg(12, "Thanks, I will ring them", conv="Family", app="WhatsApp", speaker="Ben")])
    mem.store.add_answer(time.time(), "when do I call the plumber about the boiler?", "Tuesday [1]", "answered",
                         [], [])  # the user's own past question: never a result
    mem.embed_pending()
    mem.wait_caught_up()
    controller.recall()
    ov = controller.overlay
    qtbot.waitExposed(ov)
    return ov


def test_overlay_results_are_wrapped_with_the_match_highlighted_and_where_it_was(overlay, qtbot):
    qtbot.keyClicks(overlay.input, "plumber boiler")
    qtbot.waitUntil(lambda: bool(overlay.results.rows()), timeout=10_000)
    rows = overlay.results.rows()
    texts = [r.text() for r in rows]
    assert not any("when do I call" in t for t in texts)  # past questions are not memories
    top = rows[0]
    assert "<b>plumber</b>" in top.text() and "<b>boiler</b>" in top.text()
    assert "WhatsApp · Family · Anna" in top.text()
    assert "…" in top.text() and "gutters" not in top.text()  # the part that matched, not the start
    lines = top.label.heightForWidth(overlay.results.viewport().width() - 20) / top.label.fontMetrics().height()
    assert lines >= 2.5  # wrapped onto lines, not cut
    assert overlay.results.horizontalScrollBar().maximum() == 0
    for i in range(overlay.results.count() - 1):  # rows as tall as their text: none overlaps the next
        a, b = overlay.results.visualItemRect(overlay.results.item(i)), overlay.results.visualItemRect(
            overlay.results.item(i + 1))
        assert a.bottom() < b.top() and a.height() >= overlay.results.itemWidget(overlay.results.item(i)).height_for(
            overlay.results.viewport().width()) - 1


def test_overlay_frames_have_thumbnails(overlay, qtbot):
    qtbot.keyClicks(overlay.input, "orchard plan")
    qtbot.waitUntil(lambda: bool(overlay.results.rows()), timeout=10_000)
    frames = [r for r in overlay.results.rows() if "editor" in r.text()]
    assert frames and all(r.thumb.pixmap() is not None and not r.thumb.pixmap().isNull() for r in frames)


def test_overlay_arrows_and_enter_open_the_message_in_its_conversation(controller, overlay, qtbot):
    qtbot.keyClicks(overlay.input, "plumber boiler")
    qtbot.waitUntil(lambda: len(overlay.results.rows()) >= 2, timeout=10_000)
    assert overlay.results.current_source() is None
    qtbot.keyClick(overlay.input, Qt.Key_Down)
    qtbot.keyClick(overlay.input, Qt.Key_Down)
    assert overlay.results.currentRow() == 1 and overlay.input.hasFocus()  # typing goes on in the input
    qtbot.keyClick(overlay.input, Qt.Key_Up)
    picked = overlay.results.current_source()
    assert overlay.results.currentRow() == 0 and picked == overlay.results.rows()[0].source_id
    qtbot.keyClick(overlay.input, Qt.Key_Return)
    assert not overlay.isVisible()
    window = controller.window()
    assert window.isVisible() and window.tabs.currentWidget() is window.search
    showing(qtbot, window.search.source, picked)
    shown = window.search.source.toPlainText()
    assert "240 pounds" in shown and "Did you sort out the house jobs?" in shown and "I will ring them" in shown
    qtbot.waitUntil(lambda: bool(window.search.results.rows()), timeout=10_000)  # the query's results beside it
    showing(qtbot, window.search.source)
    assert window.search.source.shown_source == picked and window.search.query.text() == "plumber boiler"


def test_overlay_double_click_opens_the_frame(controller, overlay, qtbot):
    qtbot.keyClicks(overlay.input, "orchard plan")
    qtbot.waitUntil(lambda: bool(overlay.results.rows()), timeout=10_000)
    item = overlay.results.item(0)
    centre = overlay.results.visualItemRect(item).center()
    qtbot.mouseClick(overlay.results.viewport(), Qt.LeftButton, pos=centre)
    qtbot.mouseDClick(overlay.results.viewport(), Qt.LeftButton, pos=centre)
    assert not overlay.isVisible()
    source = showing(qtbot, controller.window().search.source, item.data(Qt.UserRole))
    assert "orchard" in source.toPlainText()
    assert "frame-" in source.toHtml()  # the screen itself, not only its text


def test_overlay_closes_on_escape_and_when_focus_moves_elsewhere(controller, overlay, qtbot):
    qtbot.keyClick(overlay.input, Qt.Key_Escape)
    assert not overlay.isVisible()
    controller.recall()
    assert overlay.isVisible()
    window = controller.window()
    window.show()
    window.activateWindow()
    qtbot.waitUntil(lambda: not overlay.isVisible(), timeout=5_000)


@pytest.mark.slow
def test_overlay_answers_with_the_supporting_quote_highlighted(controller, overlay, qtbot):
    qtbot.keyClicks(overlay.input, "Where is the spare key for the cabin?")
    qtbot.keyClick(overlay.input, Qt.Key_Return)  # no moment picked: Enter asks
    assert overlay.answer.isVisible() and overlay.stream.task is not None
    qtbot.waitUntil(lambda: overlay.stream.task is None, timeout=120_000)
    assert controller.errors == [] and overlay.isVisible()
    html = overlay.answer.toHtml()
    assert "flowerpot" in overlay.answer.toPlainText() and "#fff3b0" in html and "mneme://source/1" in html


def test_unlock_dialog_refuses_a_wrong_passphrase(qtbot, tmp_path, fake_embedder, monkeypatch):
    from mneme.app.dialogs import UnlockDialog
    from mneme.core.memory import open_memory

    home = tmp_path / "locked"
    monkeypatch.setenv("MNEME_PASSPHRASE", "right one")
    open_memory(home, embedder=fake_embedder, key_mode="passphrase").close()
    monkeypatch.delenv("MNEME_PASSPHRASE")
    dialog = UnlockDialog(lambda p: open_memory(home, embedder=fake_embedder, passphrase=lambda q: p), str(home))
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.keyClicks(dialog.passphrase, "wrong one")
    dialog.attempt()
    assert dialog.isVisible() and "Wrong passphrase" in dialog.error.text() and dialog.result_value is None
    dialog.passphrase.clear()
    qtbot.keyClicks(dialog.passphrase, "right one")
    dialog.attempt()
    assert dialog.result() == UnlockDialog.Accepted and dialog.result_value is not None
    dialog.result_value.close()


def test_vault_export_and_import_actions_run_off_the_gui_thread(controller, qtbot, tmp_path):
    import threading

    window = controller.window()
    path = tmp_path / "app.mnemevault"
    on_gui_thread = []
    read_batches = controller.memory.store.export_batches

    def spy(*args, **kwargs):  # where the export really reads the store
        on_gui_thread.append(threading.current_thread() is threading.main_thread())
        yield from read_batches(*args, **kwargs)

    controller.memory.store.export_batches = spy
    task = window.export_vault(str(path), "vault pass")
    qtbot.waitUntil(lambda: task not in controller.tasks.running, timeout=60_000)
    assert path.exists() and "Exported 6 items" in window.statusBar().currentMessage()
    assert on_gui_thread == [False]
    task = window.import_vault(str(path), "vault pass")
    qtbot.waitUntil(lambda: task not in controller.tasks.running, timeout=60_000)
    assert "Imported 0 items (6 already there)" in window.statusBar().currentMessage()
    task = window.import_vault(str(path), "wrong pass")
    qtbot.waitUntil(lambda: task not in controller.tasks.running, timeout=60_000)
    assert "wrong vault passphrase" in controller.errors[-1].message


def test_idle_lock_closes_the_memory_and_a_passphrase_reopens_it(qtbot, open_mem, fake_embedder):
    from mneme.app.main import Controller

    mem = open_mem(key_mode="passphrase")
    mem.import_messages([msg(1, "locked away")])
    c = Controller(mem, interactive=False)
    c.memory.config.set("lock_idle_minutes", 5)
    assert not c.check_idle_lock(idle_seconds=60)
    assert c.check_idle_lock(idle_seconds=301)
    qtbot.waitUntil(lambda: c.unlock_dialog is not None, timeout=60_000)  # asked once the index is saved
    assert c.locked and mem.closed  # the store is closed: the key is out of RAM
    dialog = c.unlock_dialog
    qtbot.addWidget(dialog)
    qtbot.keyClicks(dialog.passphrase, "not it")
    dialog.attempt()
    assert c.locked and "Wrong passphrase" in dialog.error.text()
    dialog.passphrase.clear()
    qtbot.keyClicks(dialog.passphrase, "correct horse")
    dialog.attempt()
    assert not c.locked and c.memory is not mem
    assert c.memory.search("locked away").hits
    c.shutdown()


def test_keyring_mode_never_idle_locks(qtbot, open_mem):
    from mneme.app.main import Controller

    c = Controller(open_mem(key_mode="keyring"), interactive=False)
    c.memory.config.set("lock_idle_minutes", 1)
    assert not c.check_idle_lock(idle_seconds=10_000) and not c.locked
    c.shutdown()


def test_second_launch_raises_the_first(controller, qtbot):
    from mneme.app.main import raise_running

    controller.listen_single_instance()
    assert raise_running(controller.memory.home)
    qtbot.waitUntil(lambda: controller.window().isVisible(), timeout=5000)
    assert not raise_running(controller.memory.home.parent / "elsewhere")


def test_an_unexpected_error_is_shown_with_details_to_copy(controller, qtbot):
    from mneme.app.dialogs import show_error

    box = show_error(None, RuntimeError("boom"), "Traceback: boom")
    qtbot.addWidget(box)
    copy = [b for b in box.buttons() if b.text() == "Copy details"][0]
    copy.click()
    from mneme.app.qt import QApplication

    assert QApplication.clipboard().text() == "Traceback: boom"
    assert "Your memory is safe" in box.text()
    box.close()


def test_source_view_shows_a_message_between_its_neighbours_in_time_order(controller, qtbot):
    from mneme.app.views import SourceView

    mem = controller.memory
    mem.import_messages([msg(10, "first of the thread", conv="Thread", t=1_800_000_000),
                         msg(11, "second of the thread", conv="Thread", t=1_800_000_060),
                         msg(12, "third of the thread", conv="Thread", t=1_800_000_120)])
    ids = {mem.store.source_text(sid): sid for (sid,) in mem.store._q(
        "SELECT id FROM sources WHERE conversation = 'Thread'")}
    view = SourceView()
    qtbot.addWidget(view)
    for shown in ("first of the thread", "second of the thread"):
        view.show_source(mem, ids[shown])
        text = showing(qtbot, view, ids[shown]).toPlainText()
        assert text.index("first") < text.index("second") < text.index("third")


def answer_when_shown(qtbot, get_box, button_text, seen):
    """Click *button_text* on the dialog *get_box()* returns once it is shown (it runs its own loop)."""
    from mneme.app.qt import QTimer

    def attempt():
        box = get_box()
        if box is None or not box.isVisible():
            QTimer.singleShot(50, attempt)
            return
        seen["text"] = box.text() + " " + box.informativeText()
        next(b for b in box.buttons() if b.text().replace("&", "") == button_text).click()

    QTimer.singleShot(50, attempt)


@pytest.mark.parametrize("choice", ["Keep running", "Cancel", "Quit Mneme"])
def test_closing_the_window_without_a_tray_asks_and_says_how_to_quit(controller, qtbot, choice):
    from mneme.app.qt import QSystemTrayIcon

    assert not QSystemTrayIcon.isSystemTrayAvailable()  # offscreen: no tray, as in a stock GNOME session
    window = controller.window()
    window.show()
    qtbot.waitExposed(window)
    seen = {}
    answer_when_shown(qtbot, lambda: window.close_box, choice, seen)
    window.close()
    assert "no system tray" in seen["text"] and "File › Quit or Ctrl+Q" in seen["text"]
    if choice == "Quit Mneme":  # closed (its index saved) on the task runner
        qtbot.waitUntil(lambda: controller.memory.closed and controller.saving is None, timeout=60_000)
    else:
        assert window.isVisible() and not controller.memory.closed
        assert window.isMinimized() == (choice == "Keep running")


def test_storage_meter_and_timeline_follow_a_vault_import(controller, qtbot, tmp_path):
    window = controller.window()
    path = tmp_path / "back.mnemevault"
    task = window.export_vault(str(path), "vault pass")
    qtbot.waitUntil(lambda: task not in controller.tasks.running, timeout=60_000)
    controller.memory.forget(0, 2e10)
    window.settings.refresh_meter()
    window.timeline.load()
    qtbot.waitUntil(lambda: window.settings.meter.format().startswith("0 frames"), timeout=10_000)
    settled(qtbot, window.timeline)
    assert window.settings.meter.format().startswith("0 frames") and "No frames" in window.timeline.image.text()
    task = window.import_vault(str(path), "vault pass")
    qtbot.waitUntil(lambda: task not in controller.tasks.running, timeout=60_000)
    qtbot.waitUntil(lambda: window.settings.meter.format().startswith("3 frames"),  # without switching tabs
                    timeout=10_000)
    settled(qtbot, window.timeline)
    assert window.timeline.slider.maximum() == 2


def test_new_passphrases_must_be_strong_enough(qtbot, tmp_path):
    from mneme.app.dialogs import Onboarding, passphrase_problem

    assert "Too short" in passphrase_problem("a") and "Too easy" in passphrase_problem("aaaaaaaaaa")
    assert passphrase_problem("marble tiger kettle") is None
    dialog = Onboarding(str(tmp_path / "home"), keyring_ok=True)
    qtbot.addWidget(dialog)
    dialog.use_passphrase.setChecked(True)
    for widget in (dialog.passphrase, dialog.passphrase2):
        widget.setText("x")
    dialog.attempt()
    assert "Too short" in dialog.error.text() and dialog.result() != Onboarding.Accepted
    for widget in (dialog.passphrase, dialog.passphrase2):
        widget.setText("marble tiger kettle")
    dialog.attempt()
    assert dialog.result() == Onboarding.Accepted


def test_keyboard_shortcuts_for_views_search_and_recall(controller, qtbot):
    window = controller.window()
    window.show()
    window.activateWindow()
    qtbot.waitActive(window)
    handle = window.windowHandle()  # keys through the window system, where shortcuts are matched
    for i, name in enumerate(("Search", "Timeline", "Settings", "Ask"), 2):
        qtbot.keyClick(handle, Qt.Key(Qt.Key_0 + (i - 1) % 4 + 1), Qt.ControlModifier)
        assert window.tabs.tabText(window.tabs.currentIndex()) == name
    window.search.query.setText("old words")
    qtbot.keyClick(handle, Qt.Key_F, Qt.ControlModifier)
    assert window.tabs.currentWidget() is window.search and window.search.query.hasFocus()
    assert window.search.query.selectedText() == "old words"
    qtbot.keyClick(handle, Qt.Key_K, Qt.ControlModifier)
    assert controller.overlay.isVisible()


def test_the_title_names_a_home_that_is_not_the_default(controller):
    assert controller.memory.home.name in controller.window().windowTitle()


def test_timeline_activity_bar_and_thumbnail_strip(controller, qtbot):
    from datetime import datetime

    from mneme.app.qt import QPoint

    mem = controller.memory
    morning, afternoon = datetime(2020, 1, 1, 9, 0).timestamp(), datetime(2020, 1, 1, 15, 0).timestamp()
    for i, t in enumerate((morning, morning + 60, afternoon)):
        mem.add_frame(FrameIn(f"day{i}", t, 1, "editor", f"plan {i}", 320, 180, webp(i * 80), webp(i * 80),
                              f"frame {i} of new year's day", "[]"))
    mem.add_frame(FrameIn("typed", afternoon + 30, 1, "editor", "plan", 320, 180, b"", b"", "typed line", "[]"))
    window = controller.window()
    window.resize(1200, 800)
    window.show_tab("Timeline")
    view = window.timeline
    view.day.setDate(QDate(2020, 1, 1))
    settled(qtbot, view)
    assert view.activity.counts[9 * 4] == 2 and view.activity.counts[15 * 4] == 2 and sum(view.activity.counts) == 4
    assert view.strip.count() == 3  # the text-only frame has no thumbnail of its own
    assert all(not view.strip.item(i).icon().isNull() for i in range(3))
    view.strip.setCurrentRow(0)
    settled(qtbot, view)
    assert "(1 of 4)" in view.caption.text() and "frame 0" in view.text.toPlainText()
    qtbot.mouseClick(view.activity, Qt.LeftButton, pos=QPoint(view.activity.x_of(afternoon), 10))
    settled(qtbot, view)
    assert "frame 2" in view.text.toPlainText() and view.strip.currentRow() == 2  # the strip follows
    qtbot.mouseClick(view.activity, Qt.LeftButton, pos=QPoint(view.activity.x_of(morning), 10))
    settled(qtbot, view)
    assert "frame 0" in view.text.toPlainText()


def test_forget_this_frame_asks_first_and_no_keeps_it(controller, qtbot, monkeypatch):
    asked = []
    monkeypatch.setattr(controller, "confirm", lambda text: asked.append(text) or False)  # the user says No
    view = controller.window().timeline
    view.load()
    settled(qtbot, view)
    qtbot.mouseClick(view.delete_button, Qt.LeftButton)
    settled(qtbot, view)
    assert asked and "Forget the frame of" in asked[0] and controller.memory.store.frame_usage()[0] == 3


def test_a_bad_line_offers_to_import_the_rest_in_words(controller, qtbot, tmp_path):
    import json

    path = tmp_path / "export.jsonl"
    good = [{"id": f"g{i}", "conversation": "Book club", "time": "2025-03-0%dT10:00:00" % (i + 1),
             "speaker": "Ines", "text": f"Chapter {i} discussion about the lighthouse keeper"} for i in range(2)]
    path.write_text("\n".join([json.dumps(good[0]), "{not json", json.dumps(good[1])]) + "\n")
    asked = []
    controller.choose = lambda text, action: asked.append((text, action)) or True  # the user picks it
    window = controller.window()
    task = window.import_chats(str(path))
    qtbot.waitUntil(lambda: task not in controller.tasks.running, timeout=30_000)
    qtbot.waitUntil(lambda: getattr(window, "pending_import", None) is not None
                    and window.pending_import not in controller.tasks.running, timeout=30_000)
    text, action = asked[0]
    assert action == "Import the rest" and "export.jsonl:2" in text and "--skip-bad" not in text
    message = window.statusBar().currentMessage()
    assert "Imported 2 messages" in message and "Skipped 1 bad line: export.jsonl:2" in message
    assert controller.errors == []
    assert controller.memory.search("lighthouse keeper").hits


def test_the_window_remembers_its_size_and_place(controller, qtbot):
    from mneme.app.window import MainWindow

    window = controller.window()
    window.show()
    qtbot.waitExposed(window)
    window.resize(720, 580)  # within the offscreen screen (800 x 600), not the first-run 1100 x 700
    window.move(40, 30)
    answer_when_shown(qtbot, lambda: window.close_box, "Cancel", {})
    window.close()  # no tray here: asked, and Cancel keeps it; the size and place are saved either way
    again = MainWindow(controller)  # as at the next start
    try:
        # the size it was given (a layout may round it by a pixel), and the next window has it too
        assert abs(window.width() - 720) <= 4 and abs(window.height() - 580) <= 4
        assert (again.width(), again.height()) == (window.width(), window.height())
        assert (again.geometry().x(), again.geometry().y()) == (window.geometry().x(), window.geometry().y())
    finally:
        again.deleteLater()
