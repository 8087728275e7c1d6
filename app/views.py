"""The main window's views: Ask, Search, Timeline, Settings. Each calls mneme.core through the
task manager and only touches widgets on the GUI thread."""

from __future__ import annotations

import html
import re
import threading
import time
from datetime import datetime, timedelta

from mneme.app.tasks import Latest
from mneme.app.qt import (QCheckBox, QComboBox, QDateEdit, QDoubleSpinBox, QFormLayout, QHBoxLayout,
                          QImage, QLabel, QLineEdit, QListWidget, QListWidgetItem, QPixmap,
                          QPlainTextEdit, QProgressBar, QPushButton, QSize, QSlider, QSpinBox,
                          QSplitter, Qt, QTextBrowser, QTimer, QVBoxLayout, QWidget, QDate,
                          QApplication, QIcon)

STREAM_BATCH_MS = 50


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def highlight(text: str, query: str) -> str:
    out = html.escape(text)
    for word in sorted({w for w in re.findall(r"\w{2,}", query)}, key=len, reverse=True):
        out = re.sub(rf"(?i)\b({re.escape(html.escape(word))})", r"<b>\1</b>", out)
    return out


def pixmap(data: bytes) -> QPixmap:
    img = QImage()
    img.loadFromData(data)
    return QPixmap.fromImage(img)


class SourceView(QTextBrowser):
    """Shows one remembered moment: a frame (image and text) or a chat message in its context."""

    def show_source(self, memory, source_id: int) -> None:
        src = memory.store.source(source_id)
        if src is None:
            self.setHtml("<i>This moment was forgotten.</i>")
            return
        head = f"<h3>{html.escape(src.title or src.conversation or src.app)}</h3><p>{when(src.time)} · " \
               f"{html.escape(src.app)}</p>"
        if src.kind == "frame":
            text = f"<pre>{html.escape(memory.store.source_text(source_id))}</pre>"
            picture = memory.store.picture_for(source_id)
            if picture is None:
                body = text
            else:
                self.document().addResource(3, f"frame-{picture[0]}", QImage.fromData(picture[2]))
                note = "" if picture[0] == source_id else \
                    f"<p><i>The screen at {when(picture[1])}; the text below appeared on it at {when(src.time)}.</i></p>"
                body = f'<img src="frame-{picture[0]}" width="560">{note}{text}'
        else:
            lines = []
            around = memory.store.neighbours(source_id, 2, 2)  # in time order, without src itself
            before = [s for s in around if (s.time, s.id) < (src.time, src.id)]
            after = [s for s in around if (s.time, s.id) > (src.time, src.id)]
            for s in before + [src] + after:
                text = html.escape(memory.store.source_text(s.id))
                style = "background:#fff3b0" if s.id == source_id else ""
                lines.append(f'<p style="{style}"><b>{html.escape(s.speaker)}</b> '
                             f'<small>{when(s.time)}</small><br>{text}</p>')
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


class AskView(QWidget):
    def __init__(self, controller):
        super().__init__()
        self.c = controller
        self.task = None
        self._buffer: list[str] = []  # appended by the model worker, drained by the GUI thread
        self._buffer_lock = threading.Lock()
        self._flush = QTimer(self, interval=STREAM_BATCH_MS)
        self._flush.timeout.connect(self.flush)
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
        self.source = SourceView()
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
        self.load_history()

    def load_history(self) -> None:
        self.history.clear()
        self._past = self.c.memory.history(50)
        for item in self._past:
            self.history.addItem(item["question"])

    def show_past(self, item) -> None:
        """A past question shows the answer it got (and what backed it); Ask runs it again."""
        past = self._past[self.history.row(item)]
        self.question.setText(past["question"])
        quotes = "".join(f'<li><a href="mneme://source/{c["source_ids"][0]}">[{c["n"]}]</a> '
                         f'<span style="background:#fff3b0">{html.escape(c.get("quote", ""))}</span></li>'
                         for c in past["citations"] if c["source_ids"])
        self.answer.setHtml(f"<p>{_linked(past['answer'], past['citations'])}</p>"
                            + (f"<h4>Sources</h4><ol>{quotes}</ol>" if quotes else ""))
        self.status.setText(f"Asked {when(past['time'])}. Press Ask to ask again.")

    def ask(self) -> None:
        q = self.question.text().strip()
        if not q or self.task is not None:
            return
        self.answer.setHtml("")
        self._text = ""
        self.status.setText("Searching your memory…" if self.c.llm_loaded() else
                            "Loading the model (the first time), then searching your memory…")
        self.ask_button.setEnabled(False)
        self.stop_button.setEnabled(True)

        def work(task):
            return self.c.assistant().ask(q, on_token=self._take_token, cancel=task.cancel)

        self.task = self.c.tasks.run(work, on_done=self.finished, on_failed=self.failed)
        self._flush.start()

    def _take_token(self, text: str) -> None:  # on the model's worker thread
        with self._buffer_lock:
            self._buffer.append(text)

    def flush(self) -> None:
        with self._buffer_lock:
            parts, self._buffer = self._buffer, []
        if parts:
            self._text += "".join(parts)
            self.answer.setPlainText(self._text)
            self.status.setText("Checking each sentence against your memory…")

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel.set()

    def finished(self, answer) -> None:
        self._flush.stop()
        self.flush()
        cites = "".join(f'<li><a href="mneme://source/{c.source_ids[0]}">[{c.n}] {when(c.time)} · '
                        f'{html.escape(" · ".join(p for p in (c.app, c.title, c.speaker) if p))}</a>'
                        f'<br><span style="background:#fff3b0">{html.escape(c.quote)}</span></li>'
                        for c in answer.citations)
        links = [{"n": c.n, "source_ids": c.source_ids} for c in answer.citations]
        self.answer.setHtml(f"<p>{_linked(answer.text, links)}</p>"
                            + (f"<h4>Sources</h4><ol>{cites}</ol>" if cites else ""))
        if answer.citations:
            self.source.show_source(self.c.memory, answer.citations[0].source_ids[0])
        else:
            self.source.setHtml("")
        self.status.setText("Stopped." if answer.cancelled else f"Answered in {answer.seconds:.1f} s.")
        self.done()
        self.load_history()

    def failed(self, exc, tb) -> None:
        self._flush.stop()
        self.done()
        self.status.setText("")
        self.c.error(exc, tb)

    def done(self) -> None:
        self.task = None
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
        self.results = QListWidget()
        self.results.setIconSize(QSize(120, 68))
        self.results.itemActivated.connect(self.open)
        self.results.itemClicked.connect(self.open)
        self.source = SourceView()
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
        split = QSplitter()
        split.addWidget(self.results)
        split.addWidget(self.source)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(split, 1)

    def search(self) -> None:
        q = self.query.text().strip()
        self.seq += 1
        seq = self.seq
        if not q:
            self.results.clear()
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
        self.results.clear()
        for hit in result.hits:
            item = QListWidgetItem()
            label = QLabel(f"<small>{when(hit.time)} · {html.escape(hit.app)} · {html.escape(hit.title)}</small><br>"
                           f"{highlight(hit.text[:240], q)}")
            label.setWordWrap(True)
            item.setData(Qt.UserRole, hit.source_ids[0])
            item.setSizeHint(QSize(400, 64))
            thumb = (thumbs or {}).get(hit.source_ids[0])
            if thumb:
                item.setIcon(QIcon(pixmap(thumb)))
            self.results.addItem(item)
            self.results.setItemWidget(item, label)
        if not result.hits and q.strip():
            # The relevance floor left nothing: an honest empty state, not the nearest unrelated thing.
            empty = QListWidgetItem("Nothing relevant found in your memory.")
            empty.setFlags(Qt.NoItemFlags)
            self.results.addItem(empty)
        self.shown = result

    def open(self, item) -> None:
        if item.data(Qt.UserRole) is not None:
            self.source.show_source(self.c.memory, item.data(Qt.UserRole))


class TimelineView(QWidget):
    def __init__(self, controller):
        super().__init__()
        self.c = controller
        self.frames: list[tuple] = []
        self.day = QDateEdit(QDate.currentDate())
        self.day.setCalendarPopup(True)
        self.day.dateChanged.connect(self.load)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.valueChanged.connect(self.show_frame)
        self.image = QLabel("No frames on this day.")
        self.image.setAlignment(Qt.AlignCenter)
        self.image.setMinimumSize(480, 270)
        self.caption = QLabel("")
        self.text = QPlainTextEdit(readOnly=True)
        self.copy_button = copy = QPushButton("Copy text")
        copy.clicked.connect(lambda: QApplication.clipboard().setText(self.text.toPlainText()))
        self.delete_button = QPushButton("Forget this frame")
        self.delete_button.clicked.connect(self.forget_frame)
        self.forget_day_button = QPushButton("Forget this day")
        self.forget_day_button.clicked.connect(self.forget_day)
        top = QHBoxLayout()
        top.addWidget(QLabel("Day"))
        top.addWidget(self.day)
        top.addWidget(self.slider, 1)
        buttons = QHBoxLayout()
        for b in (copy, self.delete_button, self.forget_day_button):
            buttons.addWidget(b)
        split = QSplitter()
        split.addWidget(self.image)
        split.addWidget(self.text)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.caption)
        layout.addWidget(split, 1)
        layout.addLayout(buttons)
        self.load()

    def span(self) -> tuple[float, float]:
        d = self.day.date().toPython()
        start = datetime(d.year, d.month, d.day).timestamp()
        return start, (datetime(d.year, d.month, d.day) + timedelta(days=1)).timestamp()

    def load(self) -> None:
        self.frames = self.c.memory.store.frames_between(*self.span())
        self.slider.setRange(0, max(0, len(self.frames) - 1))
        self.slider.setValue(len(self.frames) - 1 if self.frames else 0)
        self.show_frame(self.slider.value())

    def show_frame(self, i: int) -> None:
        if not self.frames:
            self.image.setPixmap(QPixmap())
            self.image.setText("No frames on this day.")
            self.caption.setText("")
            self.text.setPlainText("")
            return
        sid, ts, app, title = self.frames[i]
        picture = self.c.memory.store.picture_for(sid)
        if picture is not None:
            self.image.setPixmap(pixmap(picture[2]).scaledToWidth(640, Qt.SmoothTransformation))
        else:
            self.image.setPixmap(QPixmap())
            self.image.setText("No picture kept yet on this monitor.")
        if picture is not None and picture[0] != sid:
            self.image.setToolTip(f"The screen at {when(picture[1])}: pictures are kept every image interval "
                                  "(Settings); the text below is what appeared at this moment.")
        else:
            self.image.setToolTip("")
        self.caption.setText(f"{when(ts)} · {app} · {title}  ({i + 1} of {len(self.frames)})")
        self.text.setPlainText(self.c.memory.store.source_text(sid))
        self.current = sid

    def forget_frame(self) -> None:
        if self.frames:
            self.c.memory.forget(source_ids=[self.current])
            self.load()

    def forget_day(self) -> None:
        if self.c.confirm(f"Forget everything from {self.day.date().toString('yyyy-MM-dd')}? This cannot be undone."):
            self.c.memory.forget(*self.span())
            self.load()


class SettingsView(QWidget):
    def __init__(self, controller):
        super().__init__()
        self.c = controller
        cfg = controller.memory.config
        form = QFormLayout(self)
        self.interval = QDoubleSpinBox(minimum=0.5, maximum=600, value=cfg["capture_interval"], suffix=" s")
        self.idle = QSpinBox(minimum=0, maximum=86400, value=cfg["idle_pause_seconds"], suffix=" s")
        self.days = QSpinBox(minimum=0, maximum=3650, value=cfg["retention_days"], suffix=" days")
        self.gb = QDoubleSpinBox(minimum=0, maximum=10000, value=cfg["retention_gb"], suffix=" GB")
        self.apps = QLineEdit(", ".join(cfg["excluded_apps"]))
        self.titles = QLineEdit(", ".join(cfg["excluded_titles"]))
        self.model = QLineEdit(cfg["model_path"], placeholderText="bundled Gemma 3 270M")
        self.hotkey = QLineEdit(cfg["hotkey"])
        from mneme.app.memory_budget import LlmMemoryField

        self.llm_memory = LlmMemoryField(cfg)
        self.key_mode = QComboBox()
        self.key_mode.addItems(["keyring", "passphrase"])
        self.key_mode.setCurrentText(controller.memory.meta.mode)
        from mneme.app.autostart import autostart

        self.autostarter = autostart()
        self.autostart = QCheckBox("Start Mneme when I log in")
        self.autostart.setChecked(self.autostarter.enabled())
        self.meter = QProgressBar()
        self.save_button = QPushButton("Save")
        self.save_button.clicked.connect(self.save)
        self.saved = QLabel("")
        for label, w in (("Capture every", self.interval), ("Pause when idle after", self.idle),
                         ("Keep frames for", self.days), ("…and at most", self.gb),
                         ("Never capture apps", self.apps), ("…or window titles (regex)", self.titles),
                         ("Answer model (GGUF)", self.model), ("Model memory budget", self.llm_memory),
                         ("Recall hotkey", self.hotkey),
                         ("Key storage", self.key_mode), ("", self.autostart), ("Storage", self.meter),
                         ("", self.save_button), ("", self.saved)):
            form.addRow(label, w)
        self.refresh_meter()

    def refresh_meter(self) -> None:
        count, used = self.c.memory.store.frame_usage()
        budget = self.c.memory.config["retention_gb"] * 1e9 or max(used, 1)
        self.meter.setRange(0, 1000)
        self.meter.setValue(int(min(1.0, used / budget) * 1000))
        self.meter.setFormat(f"{count} frames, {used / 1e6:.1f} MB of {budget / 1e9:.1f} GB")

    def save(self) -> None:
        cfg = self.c.memory.config
        try:
            cfg.set("capture_interval", float(self.interval.value()))
            cfg.set("idle_pause_seconds", int(self.idle.value()))
            cfg.set("retention_days", int(self.days.value()))
            cfg.set("retention_gb", float(self.gb.value()))
            cfg.set("excluded_apps", [a.strip() for a in self.apps.text().split(",") if a.strip()])
            cfg.set("excluded_titles", [t.strip() for t in self.titles.text().split(",") if t.strip()])
            if self.model.text().strip():
                from mneme.models.registry import check_gguf

                check_gguf(self.model.text().strip())
            cfg.set("model_path", self.model.text().strip())
            self.llm_memory.apply(cfg)
            cfg.set("hotkey", self.hotkey.text().strip())
            cfg.save()
            if self.autostart.isChecked() != self.autostarter.enabled():
                self.autostarter.set_enabled(self.autostart.isChecked())
            if self.key_mode.currentText() != self.c.memory.meta.mode:
                self.c.change_key_mode(self.key_mode.currentText())
        except Exception as exc:  # a bad value: say which, keep the rest
            self.c.error(exc)
            return
        self.saved.setText("Saved.")
        self.c.settings_changed()
        self.llm_memory.refresh()
