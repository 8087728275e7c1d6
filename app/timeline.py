"""The Timeline view: a day of screen frames — an activity bar (where the day was busy), a strip
of thumbnails, a slider, the frame's picture and its text (all of it, or what changed); copy,
forget a frame (after asking) or a day. Every read and forget runs off the GUI thread."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from mneme.app.qt import (QApplication, QButtonGroup, QColor, QDate, QDateEdit, QHBoxLayout, QIcon, QLabel,
                          QListWidget, QListWidgetItem, QLocale, QPainter, QPalette, QPixmap, QPlainTextEdit,
                          QPushButton, QSize, QSlider, QSplitter, Qt, QVBoxLayout, QWidget, Signal)
from mneme.app.results import clock, pixmap, when
from mneme.app.tasks import Latest

BUCKET = 15 * 60  # seconds a bar of the activity bar stands for


def screen_text(store, source_id: int) -> tuple[str, str]:
    """(all the text on the screen at a frame, what the frame itself added). A frame stores only
    the lines that were new on its monitor; its picture keeps every word seen with its box. So the
    whole screen is the words of its picture — its own, or for a text-only frame the latest before
    it on that monitor — in reading order, then the lines new in each frame since that picture.
    Redacted words stay redacted (the boxes keep "[redacted]", never the secret). Off the GUI thread."""
    from mneme.capture import ocr

    changed = store.source_text(source_id)
    picture = store.picture_for(source_id)
    if picture is None:
        return changed, changed
    shown = store.frame(picture[0])
    words = [ocr.Word(*w) for w in json.loads(shown["words"] or "[]")] if shown else []
    parts = [ocr.to_text(words)] if words else [store.source_text(picture[0])]
    if picture[0] != source_id:
        this = store.frame(source_id)
        ts = store.source(source_id).time
        for sid, _t, _app, _title in store.frames_between(picture[1], ts + 1e-3):
            if sid == picture[0]:
                continue
            f = store.frame(sid)
            if f is not None and this is not None and f["monitor"] == this["monitor"] and f["time"] <= ts:
                text = store.source_text(sid)
                if text.strip():
                    parts.append(text)
            if sid == source_id:
                break
    return "\n".join(p for p in parts if p.strip()), changed


class ActivityBar(QWidget):
    """Frames per quarter hour across the day, as bars: where the user was busy. A click picks the
    frame nearest that time."""

    picked = Signal(float)

    def __init__(self):
        super().__init__()
        self.setFixedHeight(36)
        self.setToolTip("Screen activity through the day; click to go there")
        self.start = 0.0
        self.counts = [0] * (86400 // BUCKET)

    def set_times(self, start: float, times: list[float]) -> None:
        self.start = start
        self.counts = [0] * (86400 // BUCKET)
        for t in times:
            i = int((t - start) // BUCKET)
            if 0 <= i < len(self.counts):
                self.counts[i] += 1
        self.update()

    def time_at(self, x: float) -> float:
        return self.start + max(0.0, min(1.0, x / max(1, self.width()))) * 86400

    def x_of(self, t: float) -> int:
        return int((t - self.start) / 86400 * self.width())

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        pal = self.palette()  # the theme's colours: readable light or dark
        p.fillRect(self.rect(), pal.color(QPalette.AlternateBase))
        top = max(self.counts) or 1
        w = self.width() / len(self.counts)
        p.setPen(Qt.NoPen)
        p.setBrush(QColor("#7b6cf0") if pal.color(QPalette.Window).lightness() < 128 else QColor("#5b4bd6"))
        for i, n in enumerate(self.counts):
            if n:
                h = max(3, int((self.height() - 12) * n / top))
                p.drawRect(int(i * w), self.height() - 12 - h, max(1, int(w) - 1), h)
        p.setPen(pal.color(QPalette.PlaceholderText))
        font = p.font()
        font.setPixelSize(9)
        p.setFont(font)
        for hour in range(0, 24, 3):
            p.drawText(int(hour * 3600 / 86400 * self.width()) + 2, self.height() - 1, f"{hour:02d}")
        p.end()

    def mousePressEvent(self, event) -> None:
        self.picked.emit(self.time_at(event.position().x()))


class TimelineView(QWidget):
    def __init__(self, controller):
        super().__init__()
        self.c = controller
        self.frames: list[tuple] = []
        self.strip_rows: dict[int, int] = {}  # frame index -> row in the strip (text-only frames have none)
        self.current: int | None = None
        self.loading = False       # the day's frames are being read
        self.frame_loading = False  # the shown frame's picture and text are being read
        self.busy = False          # a forget is running
        self.texts = ("", "")      # the shown frame's (all text, what changed)
        self.day = QDateEdit(QDate.currentDate())  # shown in the locale's date format
        self.day.setCalendarPopup(True)
        self.day.dateChanged.connect(self.load)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.valueChanged.connect(self.show_frame)
        self.activity = ActivityBar()
        self.activity.picked.connect(self.go_to_time)
        self.strip = QListWidget()  # the day's thumbnails, left to right
        self.strip.setViewMode(QListWidget.IconMode)
        self.strip.setFlow(QListWidget.LeftToRight)
        self.strip.setWrapping(False)
        self.strip.setIconSize(QSize(96, 54))
        self.strip.setFixedHeight(84)
        self.strip.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)
        self.strip.currentRowChanged.connect(self._strip_picked)
        self.image = QLabel("No frames on this day.")
        self.image.setAlignment(Qt.AlignCenter)
        self.image.setMinimumSize(480, 270)
        self.caption = QLabel("")
        self.text = QPlainTextEdit(readOnly=True)
        self.all_text = QPushButton("All text", checkable=True)
        self.all_text.setChecked(True)
        self.all_text.setToolTip("Everything that was on the screen at this moment")
        self.changed_text = QPushButton("What changed", checkable=True)
        self.changed_text.setToolTip("Only the lines that appeared at this moment")
        group = QButtonGroup(self)
        group.setExclusive(True)
        for b in (self.all_text, self.changed_text):
            group.addButton(b)
            b.toggled.connect(self._show_text)
        self.text_note = QLabel("")
        self.text_note.setWordWrap(True)
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
        text_box = QWidget()
        tv = QVBoxLayout(text_box)
        tv.setContentsMargins(0, 0, 0, 0)
        toggle = QHBoxLayout()
        toggle.addWidget(self.all_text)
        toggle.addWidget(self.changed_text)
        toggle.addStretch(1)
        tv.addLayout(toggle)
        tv.addWidget(self.text, 1)
        tv.addWidget(self.text_note)
        split = QSplitter()
        split.addWidget(self.image)
        split.addWidget(text_box)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.activity)
        layout.addWidget(self.strip)
        layout.addWidget(self.caption)
        layout.addWidget(split, 1)
        layout.addLayout(buttons)
        # Reads run one at a time on the task runner; a day or frame picked meanwhile replaces the
        # one waiting (dragging the slider never queues up stale reads, and they are never shown).
        self.day_reader = Latest(controller.tasks, self._read_day, on_done=self._day_read, on_failed=self._failed)
        self.frame_reader = Latest(controller.tasks, self._read_frame, on_done=self._frame_read,
                                   on_failed=self._failed)
        self.load()

    def span(self) -> tuple[float, float]:
        d = self.day.date().toPython()
        start = datetime(d.year, d.month, d.day).timestamp()
        return start, (datetime(d.year, d.month, d.day) + timedelta(days=1)).timestamp()

    def is_idle(self) -> bool:
        """Nothing being read or forgotten (tests wait for this)."""
        return not (self.loading or self.frame_loading or self.busy)

    def _set_enabled(self) -> None:
        have = bool(self.frames) and not self.busy
        for b in (self.copy_button, self.delete_button):
            b.setEnabled(have and not self.loading and not self.frame_loading)
        self.forget_day_button.setEnabled(not self.busy and not self.loading)

    # -- the day: read on a worker, shown on the GUI thread ---------------------------------------
    def load(self) -> None:
        if self.c.memory.closed:
            return
        self.loading = True
        self.caption.setText("Loading the day…")
        self._set_enabled()
        self.day_reader.submit(*self.span())

    def _read_day(self, start: float, end: float):  # on a worker thread
        store = self.c.memory.store
        frames = store.frames_between(start, end)
        return frames, store.thumbs([f[0] for f in frames])

    def _day_read(self, args: tuple, out) -> None:
        if self.day_reader.pending is not None or args != self.span():
            return  # another day was asked for meanwhile: its read follows
        self.loading = False
        start, _end = args
        self.frames, thumbs = out
        self.activity.set_times(start, [f[1] for f in self.frames])
        self.strip.blockSignals(True)
        self.strip.clear()
        self.strip_rows = {}
        for i, (sid, ts, app, _title) in enumerate(self.frames):
            if sid in thumbs:
                item = QListWidgetItem(QIcon(pixmap(thumbs[sid])), clock(ts))
                item.setData(Qt.UserRole, i)
                item.setToolTip(f"{when(ts)} · {app}")
                self.strip_rows[i] = self.strip.count()
                self.strip.addItem(item)
        self.strip.blockSignals(False)
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, len(self.frames) - 1))
        self.slider.setValue(len(self.frames) - 1 if self.frames else 0)
        self.slider.blockSignals(False)
        self.show_frame(self.slider.value())

    def _failed(self, exc, tb) -> None:
        self.loading = self.frame_loading = False
        self._set_enabled()
        if not self.c.memory.closed:  # a read cut off by a lock or quit is no error
            self.caption.setText("")
            self.c.error(exc, tb)

    def _strip_picked(self, row: int) -> None:
        if row >= 0:
            self.slider.setValue(self.strip.item(row).data(Qt.UserRole))

    def go_to_time(self, t: float) -> None:
        """The frame nearest *t* (a click on the activity bar)."""
        if self.frames:
            self.slider.setValue(min(range(len(self.frames)), key=lambda i: abs(self.frames[i][1] - t)))

    # -- one frame: its picture and text, read on a worker ----------------------------------------
    def show_frame(self, i: int) -> None:
        if self.loading:
            return  # the day's frames are not in yet
        if not self.frames:
            self.current = None
            self.frame_loading = False
            self.image.setPixmap(QPixmap())
            self.image.setText("No frames on this day.")
            self.caption.setText("")
            self.texts = ("", "")
            self.text.setPlainText("")
            self.text_note.setText("")
            self._set_enabled()
            return
        sid, ts, app, title = self.frames[i]
        self.current = sid
        self.caption.setText(f"{when(ts)} · {app} · {title}  ({i + 1} of {len(self.frames)})")
        row = self.strip_rows.get(i)
        if row is not None and self.strip.currentRow() != row:
            self.strip.blockSignals(True)
            self.strip.setCurrentRow(row)
            self.strip.blockSignals(False)
        self.frame_loading = True
        self._set_enabled()
        self.frame_reader.submit(sid)

    def _read_frame(self, sid: int):  # on a worker thread
        store = self.c.memory.store
        return store.picture_for(sid), screen_text(store, sid)

    def _frame_read(self, args: tuple, out) -> None:
        (sid,) = args
        if sid != self.current or self.loading:
            return  # the user moved on; the newer frame's read follows
        self.frame_loading = False
        picture, self.texts = out
        if picture is not None:
            self.image.setPixmap(pixmap(picture[2]).scaledToWidth(640, Qt.SmoothTransformation))
        else:
            self.image.setPixmap(QPixmap())
            self.image.setText("No picture kept yet on this monitor.")
        own = picture is not None and picture[0] == sid
        if picture is not None and not own:
            self.image.setToolTip(f"The screen at {when(picture[1])}: pictures are kept every image interval "
                                  "(Settings); the text below is what appeared at this moment.")
        else:
            self.image.setToolTip("")
        self.pictured_at = None if picture is None or own else picture[1]
        self._show_text()
        self._set_enabled()

    def _show_text(self, *_args) -> None:
        for b in (self.all_text, self.changed_text):  # the one in force stands out, in either theme
            font = b.font()
            font.setBold(b.isChecked())
            b.setFont(font)
        whole, changed = self.texts
        if self.all_text.isChecked():
            self.text.setPlainText(whole)
            at = getattr(self, "pictured_at", None)
            self.text_note.setText("All the text on the screen at this moment." if at is None else
                                   f"The screen's text as pictured at {clock(at)}, with the lines that "
                                   "appeared since.")
        else:
            self.text.setPlainText(changed)
            self.text_note.setText("Only the lines that appeared at this moment."
                                   if changed.strip() else "No new line appeared at this moment.")

    # -- forgetting: asked first, then done on a worker; nothing stays behind ----------------------
    def forget_frame(self) -> None:
        if not self.frames or self.current is None or self.busy:
            return
        ts = self.frames[self.slider.value()][1]
        if self.c.confirm(f"Forget the frame of {when(ts)}? Its picture and text are deleted for good."):
            sid = self.current
            self._forget(lambda: self.c.memory.forget(source_ids=[sid]))

    def forget_day(self) -> None:
        if self.busy:
            return
        day = QLocale().toString(self.day.date(), QLocale.LongFormat)
        if self.c.confirm(f"Forget everything from {day}? This cannot be undone."):
            start, end = self.span()
            self._forget(lambda: self.c.memory.forget(start, end))

    def _forget(self, work) -> None:
        self.busy = True
        self._set_enabled()
        self.caption.setText("Forgetting…")

        def done(_result=None) -> None:
            self.busy = False
            self.c.storage_changed()
            self.load()

        def failed(exc, tb) -> None:
            self.busy = False
            self._set_enabled()
            self.c.error(exc, tb)

        self.c.tasks.run(lambda _task: work(), on_done=done, on_failed=failed)
