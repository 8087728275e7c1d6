"""The Timeline view: a day of screen frames — an activity bar (where the day was busy), a strip
of thumbnails, a slider, the frame's picture and text; copy, forget a frame (after asking) or a day."""

from __future__ import annotations

from datetime import datetime, timedelta

from mneme.app.qt import (QApplication, QColor, QDate, QDateEdit, QHBoxLayout, QIcon, QLabel, QListWidget,
                          QListWidgetItem, QPainter, QPixmap, QPlainTextEdit, QPushButton, QSize, QSlider,
                          QSplitter, Qt, QVBoxLayout, QWidget, Signal)
from mneme.app.results import pixmap, when

BUCKET = 15 * 60  # seconds a bar of the activity bar stands for


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
        p.fillRect(self.rect(), QColor("#eeeef4"))
        top = max(self.counts) or 1
        w = self.width() / len(self.counts)
        p.setPen(Qt.NoPen)
        p.setBrush(QColor("#5b4bd6"))
        for i, n in enumerate(self.counts):
            if n:
                h = max(3, int((self.height() - 12) * n / top))
                p.drawRect(int(i * w), self.height() - 12 - h, max(1, int(w) - 1), h)
        p.setPen(QColor("#777"))
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
        self.day = QDateEdit(QDate.currentDate())
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
        layout.addWidget(self.activity)
        layout.addWidget(self.strip)
        layout.addWidget(self.caption)
        layout.addWidget(split, 1)
        layout.addLayout(buttons)
        self.load()

    def span(self) -> tuple[float, float]:
        d = self.day.date().toPython()
        start = datetime(d.year, d.month, d.day).timestamp()
        return start, (datetime(d.year, d.month, d.day) + timedelta(days=1)).timestamp()

    def load(self) -> None:
        start, end = self.span()
        self.frames = self.c.memory.store.frames_between(start, end)
        self.activity.set_times(start, [f[1] for f in self.frames])
        thumbs = self.c.memory.store.thumbs([f[0] for f in self.frames])
        self.strip.blockSignals(True)
        self.strip.clear()
        self.strip_rows: dict[int, int] = {}  # frame index -> row in the strip (text-only frames have none)
        for i, (sid, ts, app, _title) in enumerate(self.frames):
            if sid in thumbs:
                item = QListWidgetItem(QIcon(pixmap(thumbs[sid])), datetime.fromtimestamp(ts).strftime("%H:%M"))
                item.setData(Qt.UserRole, i)
                item.setToolTip(f"{when(ts)} · {app}")
                self.strip_rows[i] = self.strip.count()
                self.strip.addItem(item)
        self.strip.blockSignals(False)
        self.slider.setRange(0, max(0, len(self.frames) - 1))
        self.slider.setValue(len(self.frames) - 1 if self.frames else 0)
        self.show_frame(self.slider.value())

    def _strip_picked(self, row: int) -> None:
        if row >= 0:
            self.slider.setValue(self.strip.item(row).data(Qt.UserRole))

    def go_to_time(self, t: float) -> None:
        """The frame nearest *t* (a click on the activity bar)."""
        if self.frames:
            self.slider.setValue(min(range(len(self.frames)), key=lambda i: abs(self.frames[i][1] - t)))

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
        row = getattr(self, "strip_rows", {}).get(i)
        if row is not None and self.strip.currentRow() != row:
            self.strip.blockSignals(True)
            self.strip.setCurrentRow(row)
            self.strip.blockSignals(False)

    def forget_frame(self) -> None:
        if self.frames and self.c.confirm(f"Forget the frame of {when(self.frames[self.slider.value()][1])}? "
                                          "Its picture and text are deleted for good."):
            self.c.memory.forget(source_ids=[self.current])
            self.load()

    def forget_day(self) -> None:
        if self.c.confirm(f"Forget everything from {self.day.date().toString('yyyy-MM-dd')}? This cannot be undone."):
            self.c.memory.forget(*self.span())
            self.load()
