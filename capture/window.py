"""What is on screen: the active window (app, title, page), the visible windows and their
rectangles, how long the user has been idle, and whether the screen is locked.

One interface, ``Desktop``; X11 (EWMH) is implemented here with python-xlib, Windows with ctypes,
macOS with osascript. Wayland shows only XWayland windows: ``session_warning`` says so.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Protocol

BROWSERS = {"firefox": "Mozilla Firefox", "chromium": "Chromium", "google-chrome": "Google Chrome",
            "brave-browser": "Brave", "microsoft-edge": "Microsoft Edge", "librewolf": "LibreWolf"}
URL_RE = re.compile(r"\bhttps?://[^\s]+|\b(?:[a-z0-9-]+\.)+[a-z]{2,}/[^\s]*", re.IGNORECASE)


@dataclass(frozen=True)
class Window:
    id: int
    app: str          # WM_CLASS class (X11), process name (Windows/macOS)
    title: str
    x: int = 0
    y: int = 0
    width: int = 0
    height: int = 0

    @property
    def rect(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.width, self.height

    @property
    def page(self) -> str:
        """For a browser: the page title without the browser's name; else the window title."""
        for name in BROWSERS.values():
            for sep in (" — ", " - "):
                if self.title.endswith(sep + name):
                    return self.title[: -len(sep + name)]
        return self.title

    @property
    def url(self) -> str:
        m = URL_RE.search(self.title)
        return m.group(0) if m else ""


class Desktop(Protocol):
    def active(self) -> Window | None: ...
    def visible(self) -> list[Window]:
        """The windows on screen (not minimised), in stacking order: bottom first, topmost last."""
        ...
    def idle_seconds(self) -> float: ...
    def locked(self) -> bool: ...


def session_warning() -> str:
    if os.environ.get("WAYLAND_DISPLAY") or os.environ.get("XDG_SESSION_TYPE") == "wayland":
        return ("Wayland session: Mneme sees only XWayland windows (titles of native Wayland apps are "
                "not available) and may capture a black screen; an X11 session works fully.")
    return ""


class X11Desktop:
    def __init__(self, display: str | None = None):
        from Xlib import X, display as xdisplay
        from Xlib.error import XError

        self._X = X
        self._XError = XError
        self._d = xdisplay.Display(display)
        self._root = self._d.screen().root
        self._atom = {n: self._d.intern_atom(n) for n in (
            "_NET_ACTIVE_WINDOW", "_NET_CLIENT_LIST_STACKING", "_NET_WM_NAME", "UTF8_STRING",
            "_NET_WM_STATE", "_NET_WM_STATE_HIDDEN", "_NET_FRAME_EXTENTS", "_NET_WM_PID")}
        try:
            self._ss = self._d.has_extension("MIT-SCREEN-SAVER")
        except Exception:
            self._ss = False

    def close(self) -> None:
        self._d.close()

    def _prop(self, win, name, type_=0):
        try:
            p = win.get_full_property(self._atom[name], type_)
        except self._XError:
            return None
        return p.value if p else None

    def _window(self, wid: int) -> Window | None:
        if not wid:
            return None
        win = self._d.create_resource_object("window", wid)
        try:
            name = self._prop(win, "_NET_WM_NAME", self._atom["UTF8_STRING"])
            title = name.decode("utf-8", "replace") if isinstance(name, bytes) else (win.get_wm_name() or "")
            cls = win.get_wm_class()
            geo = win.get_geometry()
            pos = win.translate_coords(self._root, 0, 0)
            attrs = win.get_attributes()
        except self._XError:
            return None
        if attrs.map_state != self._X.IsViewable:
            return None
        state = self._prop(win, "_NET_WM_STATE")
        if state is not None and self._atom["_NET_WM_STATE_HIDDEN"] in state:
            return None  # minimised (a window manager may keep it mapped)
        app = (cls[1] if cls else "") or ""
        # The window manager's frame (title bar, borders) shows the title too: include it.
        extents = self._prop(win, "_NET_FRAME_EXTENTS")
        left, right, top, bottom = (int(v) for v in extents[:4]) if extents is not None and len(extents) >= 4 \
            else (0, 0, 0, 0)
        return Window(wid, app, title if isinstance(title, str) else str(title), -pos.x - left, -pos.y - top,
                      geo.width + left + right, geo.height + top + bottom)

    def active_id(self) -> int | None:
        """Just the active window's id: one property read (polled several times a second)."""
        value = self._prop(self._root, "_NET_ACTIVE_WINDOW")
        if value is not None and len(value):
            return int(value[0]) or None
        focus = self._d.get_input_focus().focus
        return focus.id if hasattr(focus, "id") and focus.id != self._root.id else None

    def active(self) -> Window | None:
        value = self._prop(self._root, "_NET_ACTIVE_WINDOW")
        if value is not None and len(value):
            return self._window(int(value[0]))
        focus = self._d.get_input_focus().focus  # no EWMH window manager
        return self._window(focus.id) if hasattr(focus, "id") and focus.id != self._root.id else None

    def visible(self) -> list[Window]:
        # EWMH lists the managed windows bottom to top; XQueryTree's children are in the same order.
        ids = self._prop(self._root, "_NET_CLIENT_LIST_STACKING")
        if ids is None:
            try:
                ids = [c.id for c in self._root.query_tree().children]
            except self._XError:
                ids = []
        return [w for w in (self._window(int(i)) for i in ids) if w is not None]

    def idle_seconds(self) -> float:
        if not self._ss:
            return 0.0
        return self._root.screensaver_query_info().idle / 1000.0

    def locked(self) -> bool:
        if self._ss and self._root.screensaver_query_info().state == 1:  # ScreenSaverOn
            return True
        session = os.environ.get("XDG_SESSION_ID")
        if session:
            try:
                out = subprocess.run(["loginctl", "show-session", session, "-p", "LockedHint"],
                                     capture_output=True, text=True, timeout=1).stdout
                return out.strip() == "LockedHint=yes"
            except (OSError, subprocess.SubprocessError):
                return False
        return False


class WindowsDesktop:  # pragma: no cover - written for Windows, not run on this CI
    def __init__(self):
        import ctypes
        from ctypes import wintypes

        self._c, self._w = ctypes, wintypes
        self._user32 = ctypes.windll.user32

    def _info(self, hwnd) -> Window:
        c, w = self._c, self._w
        buf = c.create_unicode_buffer(512)
        self._user32.GetWindowTextW(hwnd, buf, 512)
        rect = w.RECT()
        self._user32.GetWindowRect(hwnd, c.byref(rect))
        pid = w.DWORD()
        self._user32.GetWindowThreadProcessId(hwnd, c.byref(pid))
        app = ""
        try:
            import psutil  # optional
            app = psutil.Process(pid.value).name().removesuffix(".exe")
        except Exception:
            pass
        return Window(int(hwnd), app, buf.value, rect.left, rect.top, rect.right - rect.left,
                      rect.bottom - rect.top)

    def active(self) -> Window | None:
        hwnd = self._user32.GetForegroundWindow()
        return self._info(hwnd) if hwnd else None

    def visible(self) -> list[Window]:
        found = []
        proc = self._c.WINFUNCTYPE(self._c.c_bool, self._w.HWND, self._w.LPARAM)

        def cb(hwnd, _):
            if self._user32.IsWindowVisible(hwnd) and not self._user32.IsIconic(hwnd):
                found.append(self._info(hwnd))
            return True

        self._user32.EnumWindows(proc(cb), 0)  # top to bottom
        return found[::-1]

    def idle_seconds(self) -> float:
        class LASTINPUTINFO(self._c.Structure):
            _fields_ = [("cbSize", self._c.c_uint), ("dwTime", self._c.c_uint)]

        info = LASTINPUTINFO(self._c.sizeof(LASTINPUTINFO), 0)
        self._user32.GetLastInputInfo(self._c.byref(info))
        return (self._c.windll.kernel32.GetTickCount() - info.dwTime) / 1000.0

    def locked(self) -> bool:
        return self._user32.GetForegroundWindow() == 0


class MacDesktop:  # pragma: no cover - written for macOS, not run on this CI
    SCRIPT = ('tell application "System Events" to set p to first application process whose frontmost is true\n'
              'set t to ""\ntry\nset t to name of front window of p\nend try\nreturn (name of p) & "\\n" & t')

    def active(self) -> Window | None:
        out = subprocess.run(["osascript", "-e", self.SCRIPT], capture_output=True, text=True, timeout=2)
        if out.returncode:
            return None
        app, _, title = out.stdout.rstrip("\n").partition("\n")
        return Window(0, app, title)

    def visible(self) -> list[Window]:
        win = self.active()
        return [win] if win else []

    def idle_seconds(self) -> float:
        out = subprocess.run(["ioreg", "-c", "IOHIDSystem"], capture_output=True, text=True, timeout=2).stdout
        m = re.search(r'"HIDIdleTime" = (\d+)', out)
        return int(m.group(1)) / 1e9 if m else 0.0

    def locked(self) -> bool:
        return False


def desktop() -> Desktop:
    if sys.platform == "win32":
        return WindowsDesktop()
    if sys.platform == "darwin":
        return MacDesktop()
    return X11Desktop()
