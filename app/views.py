"""The main window's views: Ask, Search, Timeline, Settings. Each calls mneme.core through the
task manager and only touches widgets on the GUI thread."""

from __future__ import annotations

import html
import logging
import re
import threading
import time
from datetime import datetime, timedelta

from mneme.app.results import ResultList, highlight, pixmap, when  # noqa: F401 (when, highlight: used by others)
from mneme.app.tasks import Latest
from mneme.app.qt import (QCheckBox, QComboBox, QDateEdit, QDoubleSpinBox, QFormLayout, QHBoxLayout,
                          QImage, QLabel, QLineEdit, QListWidget, QListWidgetItem, QPixmap,
                          QPlainTextEdit, QProgressBar, QPushButton, QSize, QSlider, QSpinBox,
                          QSplitter, Qt, QTextBrowser, QTimer, QVBoxLayout, QWidget, QDate,
                          QApplication, QIcon, QLocale)

STREAM_BATCH_MS = 50
log = logging.getLogger(__name__)


class SourceView(QTextBrowser):
    """Shows one remembered moment: a frame (image and text) or a chat message in its context.
    The moment is read off the GUI thread (on *tasks*, the app's task runner); a moment asked for
    while another is read replaces it, and only the newest is shown."""

    def __init__(self, tasks=None):
        super().__init__()
        self.shown_source: int | None = None  # the moment on show
        self.asked: int | None = None         # the moment being read
        self._tasks = tasks
        self._reader: Latest | None = None

    def is_idle(self) -> bool:
        return self.asked is None

    def show_source(self, memory, source_id: int) -> None:
        if self._reader is None:
            from mneme.app.tasks import TaskManager

            self._reader = Latest(self._tasks or TaskManager(self), self._read, on_done=self._read_done,
                                  on_failed=self._failed)
        self.asked = source_id
        self._reader.submit(memory, source_id)

    def clear_source(self) -> None:
        """Nothing on show (and a read still running is not shown when it ends)."""
        self.asked = self.shown_source = None
        self.setHtml("")

    @staticmethod
    def _read(memory, source_id: int):  # on a worker thread
        store = memory.store
        src = store.source(source_id)
        if src is None:
            return None
        if src.kind == "frame":
            return src, store.source_text(source_id), store.picture_for(source_id), []
        around = store.neighbours(source_id, 2, 2)  # in time order, without src itself
        return src, "", None, [(s, store.source_text(s.id)) for s in [*around, src]]

    def _failed(self, exc, tb) -> None:
        self.asked = None
        log.warning("a moment could not be shown: %s", exc)  # a lock or quit cut the read off, mostly

    def _read_done(self, args: tuple, data) -> None:
        _memory, source_id = args
        if source_id != self.asked:
            return  # another moment was asked for meanwhile
        self.asked = None
        if data is None:
            self.setHtml("<i>This moment was forgotten.</i>")
            return
        src, frame_text, picture, thread = data
        head = f"<h3>{html.escape(src.title or src.conversation or src.app)}</h3><p>{when(src.time)} · " \
               f"{html.escape(src.app)}</p>"
        if src.kind == "frame":
            text = f"<pre>{html.escape(frame_text)}</pre>"
            if picture is None:
                body = text
            else:
                self.document().addResource(3, f"frame-{picture[0]}", QImage.fromData(picture[2]))
                note = "" if picture[0] == source_id else \
                    f"<p><i>The screen at {when(picture[1])}; the text below appeared on it at {when(src.time)}.</i></p>"
                body = f'<img src="frame-{picture[0]}" width="560">{note}{text}'
        else:
            lines = []
            for s, said in sorted(thread, key=lambda st: (st[0].time, st[0].id)):
                style = "background:#fff3b0; color:#111" if s.id == source_id else ""  # dark theme too
                lines.append(f'<p style="{style}"><b>{html.escape(s.speaker)}</b> '
                             f'<small>{when(s.time)}</small><br>{html.escape(said)}</p>')
            body = "".join(lines)
        self.setHtml(head + body)
        self.shown_source = source_id


def _linked(text: str, citations: list[dict]) -> str:
    """The answer as HTML, each [n] a link to the moment it cites."""
    targets = {c["n"]: c["source_ids"][0] for c in citations if c["source_ids"]}

    def link(m: re.Match) -> str:
        n = int(m.group(1))
        return f'<a href="mneme://source/{targets[n]}">[{n}]</a>' if n in targets else m.group(0)

    return re.sub(r"\[(\d+)\]", link, html.escape(text))


def answer_html(answer) -> str:
    """A checked answer: its text with each [n] a link, then each source with the quote that backs
    it, highlighted (the Ask view and the recall overlay show it alike)."""
    cites = "".join(f'<li><a href="mneme://source/{c.source_ids[0]}">[{c.n}] {when(c.time)} · '
                    f'{html.escape(" · ".join(p for p in (c.app, c.title, c.speaker) if p))}</a>'
                    f'<br><span style="background:#fff3b0; color:#111">{html.escape(c.quote)}</span></li>'
                    for c in answer.citations if c.source_ids)
    links = [{"n": c.n, "source_ids": c.source_ids} for c in answer.citations]
    return f"<p>{_linked(answer.text, links)}</p>" + (f"<h4>Sources</h4><ol>{cites}</ol>" if cites else "")


class AnswerStream:
    """Asks the assistant on a worker thread; the streamed text reaches *on_text* in ~50 ms batches
    on the GUI thread, the checked answer *on_done*. One question at a time; ``stop`` cancels."""

    def __init__(self, controller, parent, on_text, on_done, on_failed, on_stage=None):
        self.c, self.on_text, self.on_done, self.on_failed = controller, on_text, on_done, on_failed
        self.on_stage = on_stage
        self._stage = ""  # set by the model worker, shown by the GUI thread
        self.task = None
        self.text = ""
        self._buffer: list[str] = []  # appended by the model worker, drained by the GUI thread
        self._lock = threading.Lock()
        self._timer = QTimer(parent, interval=STREAM_BATCH_MS)
        self._timer.timeout.connect(self.flush)

    def start(self, question: str) -> bool:
        if self.task is not None:
            return False
        self.text = ""

        def work(task):
            return self.c.assistant().ask(question, on_token=self._take, cancel=task.cancel,
                                          on_stage=self._set_stage)

        self.task = self.c.tasks.run(work, on_done=self._finished, on_failed=self._failed)
        self._timer.start()
        return True

    def _take(self, text: str) -> None:  # on the model's worker thread
        with self._lock:
            self._buffer.append(text)

    def _set_stage(self, words: str) -> None:  # on the model's worker thread
        with self._lock:
            self._stage = words

    def flush(self) -> None:
        with self._lock:
            parts, self._buffer = self._buffer, []
            stage, self._stage = self._stage, ""
        if stage and self.on_stage and not self.text and not parts:
            self.on_stage(stage)
        if parts:
            self.text += "".join(parts)
            self.on_text(self.text)

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel.set()

    def _finished(self, answer) -> None:
        self._timer.stop()
        self.flush()
        self.task = None
        self.on_done(answer)

    def _failed(self, exc, tb) -> None:
        self._timer.stop()
        self.task = None
        self.on_failed(exc, tb)


class AskView(QWidget):
    def __init__(self, controller):
        super().__init__()
        self.c = controller
        self.stream = AnswerStream(controller, self, self.streamed, self.finished, self.failed,
                                   on_stage=lambda words: self.status.setText(words))
        self.question = QLineEdit(placeholderText="Ask your memory… e.g. what did Anna say about the launch last week?")
        self.question.returnPressed.connect(self.ask)
        self.ask_button = QPushButton("Ask")
        self.ask_button.clicked.connect(self.ask)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.answer = QTextBrowser(openLinks=False)
        self.answer.anchorClicked.connect(self.open_citation)
        self.history = QListWidget()
        self.history.itemActivated.connect(self.show_past)
        self._past: list[dict] = []
        self.source = SourceView(controller.tasks)
        self.status = QLabel("")
        row = QHBoxLayout()
        row.addWidget(self.question, 1)
        row.addWidget(self.ask_button)
        row.addWidget(self.stop_button)
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.addWidget(QLabel("Past questions"))
        lv.addWidget(self.history)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(self.answer)
        split.addWidget(self.source)
        split.setSizes([200, 500, 400])
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(split, 1)
        layout.addWidget(self.status)
        self.history_loaded = 0  # times the list was filled in (tests wait on it)
        self.history_reader = Latest(controller.tasks, lambda: controller.memory.history(50),
                                     on_done=self._history_read,
                                     on_failed=lambda exc, tb: None if controller.memory.closed else
                                     controller.error(exc, tb))
        self.load_history()

    def load_history(self) -> None:
        """The past questions, read off the GUI thread."""
        if not self.c.memory.closed:
            self.history_reader.submit()

    def _history_read(self, _args: tuple, past: list[dict]) -> None:
        self.history.clear()
        self._past = past
        for item in self._past:
            self.history.addItem(item["question"])
        self.history_loaded += 1

    def show_past(self, item) -> None:
        """A past question shows the answer it got (and what backed it); Ask runs it again."""
        past = self._past[self.history.row(item)]
        self.question.setText(past["question"])
        quotes = "".join(f'<li><a href="mneme://source/{c["source_ids"][0]}">[{c["n"]}]</a> '
                         f'<span style="background:#fff3b0; color:#111">{html.escape(c.get("quote", ""))}</span></li>'
                         for c in past["citations"] if c["source_ids"])
        self.answer.setHtml(f"<p>{_linked(past['answer'], past['citations'])}</p>"
                            + (f"<h4>Sources</h4><ol>{quotes}</ol>" if quotes else ""))
        self.status.setText(f"Asked {when(past['time'])}. Press Ask to ask again.")

    def ask(self) -> None:
        q = self.question.text().strip()
        if not q or self.task is not None:
            return
        self.answer.setHtml("")
        self.source.clear_source()  # not the previous question's source
        self.status.setText("Searching your memory…" if self.c.llm_loaded() else
                            "Loading the model (the first time), then searching your memory…")
        self.ask_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.stream.start(q)

    @property
    def task(self):
        return self.stream.task

    def streamed(self, text: str) -> None:
        self.answer.setPlainText(text)
        self.status.setText("Checking each sentence against your memory…")

    def stop(self) -> None:
        self.stream.stop()

    def finished(self, answer) -> None:
        self.answer.setHtml(answer_html(answer))
        if answer.citations:
            self.source.show_source(self.c.memory, answer.citations[0].source_ids[0])
        else:
            self.source.clear_source()
        self.status.setText("Stopped." if answer.cancelled else f"Answered in {answer.seconds:.1f} s.")
        self.done()
        self.load_history()

    def failed(self, exc, tb) -> None:
        self.done()
        self.status.setText("")
        self.c.error(exc, tb)

    def done(self) -> None:
        self.ask_button.setEnabled(True)
        self.stop_button.setEnabled(False)

    def open_citation(self, url) -> None:
        m = re.match(r"mneme://source/(\d+)", url.toString())
        if m:
            self.source.show_source(self.c.memory, int(m.group(1)))


class SearchView(QWidget):
    RANGES = {"Any time": None, "Today": 1, "Last 7 days": 7, "Last 30 days": 30, "Last year": 365}
    KINDS = {"Screen and chats": None, "Screen": ["frame"], "Chats": ["chat"]}

    def __init__(self, controller):
        super().__init__()
        self.c = controller
        self.seq = 0
        self.query = QLineEdit(placeholderText="Search as you type…")
        self.range = QComboBox()
        self.range.addItems(list(self.RANGES))
        self.kind = QComboBox()
        self.kind.addItems(list(self.KINDS))
        self.app = QLineEdit(placeholderText="app or conversation")
        self.results = ResultList()
        self.results.itemActivated.connect(self.open)
        self.results.itemClicked.connect(self.open)
        self.results.currentItemChanged.connect(self._current_changed)
        self.query.installEventFilter(self)  # arrows from the search box move through the results
        self.source = SourceView(controller.tasks)
        self.pinned: int | None = None  # a moment opened from the overlay, kept in the preview
        self._keep_pin = False
        self.latest = Latest(controller.tasks, self._query,
                             on_done=lambda args, out: self.show_results(args[0], args[1], *out),
                             on_failed=controller.error)
        for w in (self.query, self.app):
            w.textChanged.connect(self.search)
        for w in (self.range, self.kind):
            w.currentIndexChanged.connect(self.search)
        row = QHBoxLayout()
        row.addWidget(self.query, 1)
        row.addWidget(self.range)
        row.addWidget(self.kind)
        row.addWidget(self.app)
        self.chips_row = QHBoxLayout()  # every filter in effect, each removable
        self.chips_row.addStretch(1)
        self.chips: list[QPushButton] = []
        split = QSplitter()
        split.addWidget(self.results)
        split.addWidget(self.source)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addLayout(self.chips_row)
        layout.addWidget(split, 1)

    def _current_changed(self, item, _old) -> None:  # the preview follows the keyboard
        if item is not None and not self.c.memory.closed:
            self.open(item)

    # -- filters as chips: the boxes' and the ones understood from the query ("in Slack last week")
    def filters(self, parsed=None) -> list[tuple[str, object]]:
        """(label, how to remove it) for each filter in effect."""
        out: list[tuple[str, object]] = []
        if self.range.currentIndex():
            out.append((self.range.currentText(), lambda: self.range.setCurrentIndex(0)))
        if self.kind.currentIndex():
            out.append((f"{self.kind.currentText()} only", lambda: self.kind.setCurrentIndex(0)))
        if self.app.text().strip():
            out.append((f"in {self.app.text().strip()}", lambda: self.app.setText("")))
        elif parsed is not None and parsed.app:
            app = parsed.app
            out.append((f"in {app} (from your words)", lambda: self._drop_words(
                rf"\b(?:in|on|from|via) {re.escape(app)}\b")))
        said = None if parsed is None else (parsed.since, parsed.until) if parsed.since is not None else \
            (parsed.prefer_since, parsed.prefer_until) if parsed.prefer_since is not None else None
        if said is not None and not self.range.currentIndex():  # a time said is preferred, not required
            span = self._span_text(*said)
            out.append((f"prefers {span} (from your words)", lambda: self._drop_time()))
        return out

    @staticmethod
    def _span_text(since: float, until: float | None) -> str:
        """A span of days as the user's locale writes dates ("Tue 01/12/2026", "1.12.26 – 7.12.26")."""
        loc = QLocale()
        a = datetime.fromtimestamp(since)
        b = datetime.fromtimestamp(until) - timedelta(seconds=1) if until else None

        def day(d: datetime) -> str:
            return loc.toString(QDate(d.year, d.month, d.day), QLocale.ShortFormat)

        if b is None or a.date() == b.date():
            return f"{loc.dayName(a.isoweekday(), QLocale.ShortFormat)} {day(a)}"
        return f"{day(a)} – {day(b)}"

    def _drop_words(self, pattern: str) -> None:
        self.query.setText(re.sub(r"\s+", " ", re.sub(pattern, " ", self.query.text(), flags=re.IGNORECASE)).strip())

    def _drop_time(self) -> None:
        from mneme.core.timefilter import parse_query

        text = self.query.text()
        without = parse_query(text).text  # no apps given: only the time words go
        self.query.setText(without)

    def show_chips(self, parsed=None) -> None:
        implied = parsed.app if parsed is not None and parsed.app and not self.app.text().strip() else None
        self.app.setPlaceholderText(f"{implied} (from your words)" if implied else "app or conversation")
        for chip in self.chips:
            self.chips_row.removeWidget(chip)
            chip.deleteLater()
        self.chips = []
        for i, (label, remove) in enumerate(self.filters(parsed)):
            chip = QPushButton(f"{label}  ✕")
            chip.setToolTip("Remove this filter")
            chip.setFlat(True)
            chip.setStyleSheet("QPushButton { border: 1px solid #9e9ad6; border-radius: 10px; padding: 2px 10px; }")
            chip.clicked.connect(remove)
            self.chips_row.insertWidget(i, chip)
            self.chips.append(chip)

    def search(self) -> None:
        q = self.query.text().strip()
        self.seq += 1
        seq = self.seq
        if not self._keep_pin:
            self.pinned = None  # the user typed or changed a filter: the preview follows the results
        if not q:
            self.results.clear()
            self.show_chips()
            return
        days = self.RANGES[self.range.currentText()]
        since = time.time() - days * 86400 if days else None
        kinds = self.KINDS[self.kind.currentText()]
        app = self.app.text().strip() or None
        self.latest.submit(seq, q, since, app, kinds)

    def _query(self, seq, q, since, app, kinds):  # on a worker thread
        result = self.c.memory.search(q, 30, since=since, app=app, kinds=kinds)
        return result, self.c.memory.store.thumbs([h.source_ids[0] for h in result.hits if h.kind == "frame"])

    def show_results(self, seq: int, q: str, result, thumbs: dict[int, bytes] | None = None) -> None:
        if seq != self.seq:
            return  # a newer keystroke already asked again
        self.results.blockSignals(True)
        self.results.show_hits(result.hits, result.parsed.text or q, thumbs)  # "in Slack" is a filter, not a match
        self.results.blockSignals(False)
        self.shown = result
        self.show_chips(result.parsed)
        ids = [h.source_ids[0] for h in result.hits]
        if self.pinned is not None:  # opened from the overlay: that moment stays, selected if listed
            if self.pinned in ids:
                self.results.setCurrentRow(ids.index(self.pinned))
            return
        if ids:  # the preview follows the new results, never the previous query's moment
            self.results.setCurrentRow(0)
            self.source.show_source(self.c.memory, ids[0])
        else:
            self.source.clear_source()

    def open(self, item) -> None:
        if item.data(Qt.UserRole) is not None:
            self.source.show_source(self.c.memory, item.data(Qt.UserRole))

    def open_moment(self, query: str, source_id: int) -> None:
        """Show *source_id* (from the overlay) with the query's other results beside it."""
        self.pinned = source_id
        self.source.show_source(self.c.memory, source_id)
        self._keep_pin = True
        try:
            if self.query.text() != query:
                self.query.setText(query)
            else:
                self.search()
        finally:
            self._keep_pin = False

    def eventFilter(self, obj, event) -> bool:
        if obj is self.query and event.type() == event.Type.KeyPress and event.key() in (Qt.Key_Down, Qt.Key_Up):
            self.results.move(1 if event.key() == Qt.Key_Down else -1)
            return True
        return super().eventFilter(obj, event)
