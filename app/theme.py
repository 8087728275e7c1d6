"""The app's look: light or dark, following the desktop's colour scheme (Qt's style hint, which
GNOME and KDE set) unless the ``theme`` setting says light or dark; and a font fallback that can
draw emoji (a chat message full of them must not become a row of boxes)."""

from __future__ import annotations

import logging

from mneme.app.qt import QApplication, QColor, QFontDatabase, QGuiApplication, QPalette, Qt

log = logging.getLogger(__name__)
THEMES = ("system", "light", "dark")
EMOJI_FONTS = ("Noto Color Emoji", "Twemoji", "JoyPixels", "EmojiOne Color", "Symbola",
               "Apple Color Emoji", "Segoe UI Emoji")
_state: dict = {}  # the setting in force, the style and palette Qt started with, the hook


def desktop_scheme(scheme=None) -> str | None:
    """'dark' or 'light' as the desktop asks (Qt's colour scheme hint, or *scheme* as its change
    signal gives it), or None when it gives no hint (a bare X session)."""
    scheme = QGuiApplication.styleHints().colorScheme() if scheme is None else scheme
    return {Qt.ColorScheme.Dark: "dark", Qt.ColorScheme.Light: "light"}.get(scheme)


def wanted(choice: str, scheme=None) -> str:
    return choice if choice in ("light", "dark") else desktop_scheme(scheme) or "light"


def is_dark() -> bool:
    return QApplication.palette().color(QPalette.Window).lightness() < 128


def dark_palette() -> QPalette:
    p = QPalette()
    roles = {QPalette.Window: "#1f1f27", QPalette.WindowText: "#e6e6ee", QPalette.Base: "#17171d",
             QPalette.AlternateBase: "#2a2a35", QPalette.ToolTipBase: "#2a2a35", QPalette.ToolTipText: "#e6e6ee",
             QPalette.PlaceholderText: "#8a8a99", QPalette.Text: "#e6e6ee", QPalette.Button: "#2c2c38",
             QPalette.ButtonText: "#e6e6ee", QPalette.BrightText: "#ff6b6b", QPalette.Link: "#9d90ff",
             QPalette.LinkVisited: "#b9a8ff", QPalette.Highlight: "#5b4bd6", QPalette.HighlightedText: "#ffffff",
             QPalette.Light: "#3a3a48", QPalette.Midlight: "#30303c", QPalette.Mid: "#25252e",
             QPalette.Dark: "#121217", QPalette.Shadow: "#000000"}
    for role, colour in roles.items():
        p.setColor(role, QColor(colour))
    for role in (QPalette.WindowText, QPalette.Text, QPalette.ButtonText):
        p.setColor(QPalette.Disabled, role, QColor("#6c6c7a"))
    return p


def apply_theme(choice: str = "system", scheme=None) -> str:
    """Make the app light or dark as *choice* (the setting) and the desktop say; returns which.
    With "system", a change of the desktop's scheme while Mneme runs is followed at once."""
    app = QApplication.instance()
    if app is None:
        return "light"
    if "style" not in _state:
        _state["style"], _state["palette"] = app.style().name(), QPalette(app.palette())
        app.styleHints().colorSchemeChanged.connect(lambda now: apply_theme(_state["choice"], now))
    _state["choice"] = choice
    look = wanted(choice, scheme)
    if look == _state.get("look"):
        return look
    if look == "dark":
        app.setStyle("Fusion")  # draws every widget from the palette
        app.setPalette(dark_palette())
    else:
        app.setStyle(_state["style"])
        app.setPalette(_state["palette"])
    _state["look"] = look
    return look


def emoji_font() -> str | None:
    """Name an installed colour-emoji font as the app's emoji font (Qt 6.9+), so emoji in captured
    text and chats are drawn in colour, not as boxes (packaging/system-deps.sh installs
    fonts-noto-color-emoji). Not in the app font's family list: an emoji font there gives an empty
    label a width of thousands of pixels. Returns its name, or None when none is installed."""
    if QApplication.instance() is None:
        return None
    installed = set(QFontDatabase.families())
    emoji = next((f for f in EMOJI_FONTS if f in installed), None)
    if emoji is None:
        log.info("no emoji font installed; emoji may show as boxes (install fonts-noto-color-emoji)")
        return None
    if emoji not in QFontDatabase.applicationEmojiFontFamilies():
        QFontDatabase.addApplicationEmojiFontFamily(emoji)
    return emoji
