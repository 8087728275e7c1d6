"""A list of remembered moments as Search and the recall overlay show them: each row the part of
the text that matched (wrapped, the match in bold), when, the app and the conversation or window,
and a thumbnail for a screen frame. Rows are as tall as their text; nothing scrolls sideways."""

from __future__ import annotations

import html
import re
from mneme.app.qt import (QApplication, QPalette, QDateTime, QHBoxLayout, QLocale, QImage, QLabel, QListWidget, QListWidgetItem, QPixmap, QSize, Qt,
                          QWidget)

THUMB = QSize(112, 63)
SNIPPET = 260  # characters of a hit's text shown around its match


def when(ts: float) -> str:
    """A date and time as the user's locale writes them (short form; QLocale() is the system's unless
    the app set another)."""
    return QLocale().toString(QDateTime.fromSecsSinceEpoch(int(ts)), QLocale.ShortFormat)


def clock(ts: float) -> str:
    """A time of day as the user's locale writes it (13:05, 1:05 PM)."""
    return QLocale().toString(QDateTime.fromSecsSinceEpoch(int(ts)).time(), QLocale.ShortFormat)


def query_words(query: str) -> list[str]:
    return sorted({w for w in re.findall(r"\w{2,}", query)}, key=len, reverse=True)


def highlight(text: str, query: str) -> str:
    out = html.escape(text)
    for word in query_words(query):
        out = re.sub(rf"(?i)\b({re.escape(html.escape(word))})", r"<b>\1</b>", out)
    return out


def snippet(text: str, query: str, width: int = SNIPPET) -> str:
    """The part of *text* around the first word of *query* in it (a frame's text is long and its
    start is rarely what matched), cut at word boundaries, with … where it is cut."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    found = [m.start() for w in query_words(query) if (m := re.search(rf"(?i)\b{re.escape(w)}", text))]
    at = min(found) if found else 0
    start = max(0, at - width // 4)
    if start:
        space = text.find(" ", start)
        start = space + 1 if 0 <= space < at else start
    end = min(len(text), start + width)
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > at else end
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


def pixmap(data: bytes) -> QPixmap:
    img = QImage()
    img.loadFromData(data)
    return QPixmap.fromImage(img)


def place(hit) -> str:
    """Where a moment was: the app, and the conversation or window title, and who said it."""
    parts = [hit.app, hit.conversation or hit.title, hit.speaker]
    seen: list[str] = []
    for p in parts:
        if p and p not in seen:
            seen.append(p)
    return " · ".join(seen)


class ResultRow(QWidget):
    def __init__(self, hit, query: str, thumb: bytes | None, dark: bool = False):
        super().__init__()
        self.source_id = hit.source_ids[0]
        row = QHBoxLayout(self)
        row.setContentsMargins(6, 4, 6, 4)
        self.thumb = QLabel()
        if thumb:
            self.thumb.setPixmap(pixmap(thumb).scaled(THUMB, Qt.KeepAspectRatio, Qt.SmoothTransformation))
            self.thumb.setFixedSize(THUMB)
            row.addWidget(self.thumb, 0, Qt.AlignTop)
        dark = dark or QApplication.palette().color(QPalette.Window).lightness() < 128  # the dark theme
        muted = "#9a9aa8" if dark else "#666"
        self.label = QLabel(f'<span style="color:{muted}"><small>{when(hit.time)} · {html.escape(place(hit))}'
                            f"</small></span><br>{highlight(snippet(hit.text, query), query)}")
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.RichText)
        self.label.setAttribute(Qt.WA_TransparentForMouseEvents)  # clicks select the row
        row.addWidget(self.label, 1)

    def text(self) -> str:
        return self.label.text()

    def height_for(self, width: int) -> int:
        thumb = THUMB.width() + 12 if self.thumb.pixmap() and not self.thumb.pixmap().isNull() else 0
        text = self.label.heightForWidth(max(80, width - thumb - 16))
        return max(text, THUMB.height() if thumb else 0) + 10


class ResultList(QListWidget):
    def __init__(self, dark: bool = False):
        super().__init__()
        self.dark = dark
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setVerticalScrollMode(QListWidget.ScrollPerPixel)
        self.setWordWrap(True)
        self.setUniformItemSizes(False)

    def show_hits(self, hits, query: str, thumbs: dict[int, bytes] | None = None,
                  empty: str = "Nothing relevant found in your memory.") -> None:
        self.clear()
        for hit in hits:
            item = QListWidgetItem()
            item.setData(Qt.UserRole, hit.source_ids[0])
            row = ResultRow(hit, query, (thumbs or {}).get(hit.source_ids[0]), self.dark)
            self.addItem(item)
            self.setItemWidget(item, row)
        if not hits and query.strip():
            # The relevance floor left nothing: an honest empty state, not the nearest unrelated thing.
            item = QListWidgetItem(empty)
            item.setFlags(Qt.NoItemFlags)
            self.addItem(item)
        self._fit()

    def rows(self) -> list[ResultRow]:
        return [w for i in range(self.count()) if isinstance(w := self.itemWidget(self.item(i)), ResultRow)]

    def _fit(self) -> None:
        width = self.viewport().width()
        for i in range(self.count()):
            row = self.itemWidget(self.item(i))
            if isinstance(row, ResultRow):
                self.item(i).setSizeHint(QSize(width, row.height_for(width)))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit()

    def move(self, step: int) -> None:
        """Select the next (or previous) moment, as the arrow keys do from a search box."""
        rows = [i for i in range(self.count()) if self.item(i).flags() & Qt.ItemIsSelectable]
        if not rows:
            return
        now = self.currentRow()
        if now not in rows:
            target = rows[0] if step > 0 else rows[-1]
        else:
            target = rows[max(0, min(len(rows) - 1, rows.index(now) + step))]
        self.setCurrentRow(target)
        self.scrollToItem(self.item(target))

    def current_source(self) -> int | None:
        item = self.currentItem()
        return item.data(Qt.UserRole) if item is not None and item.isSelected() else None
