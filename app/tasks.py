"""Work off the GUI thread (after Anki's taskman): run a function on a worker thread and get its
result, error or progress back on the GUI thread by Qt signal. The GUI thread only touches widgets."""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from typing import Any

from mneme.app.qt import QObject, Signal

log = logging.getLogger(__name__)


class Task(QObject):
    done = Signal(object)
    failed = Signal(object, str)     # exception, traceback text
    progress = Signal(int, int)      # done, total
    chunk = Signal(str)              # streamed text (already batched by the caller)

    def __init__(self, fn: Callable[["Task"], Any], parent: QObject | None = None):
        super().__init__(parent)
        self.fn = fn
        self.cancel = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> "Task":
        self.thread = threading.Thread(target=self._run, name="mneme-task", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            result = self.fn(self)
        except BaseException as exc:  # reported on the GUI thread, never swallowed
            tb = traceback.format_exc()
            log.error("task failed: %s", tb)
            self.failed.emit(exc, tb)
        else:
            self.done.emit(result)


class TaskManager(QObject):
    """Keeps running tasks alive and runs store writes one at a time."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.running: set[Task] = set()

    def run(self, fn, on_done=None, on_failed=None, on_progress=None, on_chunk=None) -> Task:
        task = Task(fn, self)
        for signal, slot in ((task.done, on_done), (task.failed, on_failed), (task.progress, on_progress),
                             (task.chunk, on_chunk)):
            if slot is not None:
                signal.connect(slot)
        task.done.connect(lambda _=None, t=task: self.running.discard(t))
        task.failed.connect(lambda *_a, t=task: self.running.discard(t))
        self.running.add(task)
        return task.start()

    def wait_all(self, timeout: float = 30.0) -> None:
        for task in list(self.running):
            if task.thread is not None:
                task.thread.join(timeout)


class Latest:
    """Search-as-you-type without a fixed pause: one query runs at a time off the GUI thread, and
    keystrokes that arrive meanwhile collapse into the newest. A first keystroke is answered at
    once; fast typing never queues up stale searches, and stale results are never shown."""

    def __init__(self, tasks: TaskManager, fn: Callable[..., Any], on_done: Callable[[tuple, Any], None],
                 on_failed: Callable[[BaseException, str], None]):
        self.tasks, self.fn, self.on_done, self.on_failed = tasks, fn, on_done, on_failed
        self.pending: tuple | None = None
        self.busy = False

    def submit(self, *args) -> None:
        self.pending = args
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if self.pending is None:
            self.busy = False
            return
        args, self.pending = self.pending, None
        self.busy = True
        self.tasks.run(lambda _task: self.fn(*args), on_done=lambda result: self._finished(args, result),
                       on_failed=self._failed)

    def _finished(self, args: tuple, result: Any) -> None:
        if self.pending is None:  # still the newest query: show it
            self.on_done(args, result)
        self._next()

    def _failed(self, exc: BaseException, tb: str) -> None:
        if self.pending is None:
            self.on_failed(exc, tb)
        self._next()
