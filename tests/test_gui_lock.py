"""Lock and quit save the encrypted index on the task runner, never on the GUI thread, saying so;
the passphrase is asked for, or the app quits, once the save is done (issue 15, second round).
Offscreen Qt, real store, real Chroma, real snapshot file."""

import os
import threading

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from tests.conftest import msg  # noqa: E402

pytestmark = pytest.mark.gui


def changed_memory(open_mem, start=0):
    mem = open_mem(key_mode="passphrase")
    assert mem.wait_ready(60)
    mem.wait_caught_up(60)
    mem.import_messages([msg(i, f"harbour ledger {i}") for i in range(start, start + 30)])
    mem.embed_pending()  # changes since the last snapshot: closing saves one
    return mem


def held_save(mem, monkeypatch):
    """Hold the memory's snapshot write until released; record the thread it runs on."""
    threads, inside, release = [], threading.Event(), threading.Event()
    real = mem.save_index

    def save():
        threads.append(threading.current_thread() is threading.main_thread())
        inside.set()
        assert release.wait(60)
        return real()

    monkeypatch.setattr(mem, "save_index", save)
    return threads, inside, release


def test_lock_saves_the_index_off_the_gui_thread_then_asks_for_the_passphrase(qtbot, open_mem, isolated_home,
                                                                             monkeypatch):
    from mneme.app.main import Controller

    mem = changed_memory(open_mem)
    threads, inside, release = held_save(mem, monkeypatch)
    c = Controller(mem, interactive=False)
    c.lock()  # returns while the index is being saved
    assert inside.wait(60)
    assert c.locked and c.saving is not None and c.unlock_dialog is None
    assert c.saving.dialog.labelText() == "Saving the encrypted index…"
    c.lock()  # a second lock meanwhile does nothing
    release.set()
    qtbot.waitUntil(lambda: c.unlock_dialog is not None, timeout=60_000)
    assert threads == [False]  # saved on a worker thread
    assert mem.closed and c.saving is None and (isolated_home / "index.snap").exists()
    assert not mem.index.is_open and mem.store._db is None  # closed: the key is out of RAM
    c.shutdown()


def test_quit_waits_for_the_save_and_a_quit_during_a_lock_waits_too(qtbot, open_mem, isolated_home, monkeypatch):
    from mneme.app import main

    quits = []

    class App:
        @staticmethod
        def instance():
            return App

        @staticmethod
        def quit():
            quits.append(True)

    monkeypatch.setattr(main, "QApplication", App)
    mem = changed_memory(open_mem)
    threads, inside, release = held_save(mem, monkeypatch)
    c = main.Controller(mem, interactive=False)
    c.lock()
    assert inside.wait(60)
    c.quit()  # during the lock's save: quits once it is done, and asks for no passphrase
    assert quits == [] and c.quitting
    release.set()
    qtbot.waitUntil(lambda: quits == [True], timeout=60_000)
    assert c.unlock_dialog is None and mem.closed and (isolated_home / "index.snap").exists()
    assert threads == [False]

    quits.clear()
    mem2 = changed_memory(open_mem, start=100)
    threads, inside, release = held_save(mem2, monkeypatch)
    c2 = main.Controller(mem2, interactive=False)
    c2.quit()
    assert inside.wait(60) and quits == []  # not quit while the index is saved
    release.set()
    qtbot.waitUntil(lambda: quits == [True], timeout=60_000)
    assert mem2.closed and threads == [False]
