"""Start Mneme at login: XDG autostart on Linux, the Run key on Windows, a LaunchAgent on macOS.
One interface, ``enabled()`` / ``set_enabled(on)``; only the Linux one is exercised by CI."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

APP_ID = "io.github.mneme.Mneme"


def launch_command() -> list[str]:
    exe = shutil.which("mneme-app")
    if exe:
        return [exe]
    return [sys.executable, "-m", "mneme.app", "app"]


class XdgAutostart:
    def path(self) -> Path:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        return base / "autostart" / f"{APP_ID}.desktop"

    def enabled(self) -> bool:
        return self.path().exists()

    def set_enabled(self, on: bool) -> None:
        path = self.path()
        if not on:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        exec_line = " ".join(f'"{part}"' if " " in part else part for part in launch_command())
        path.write_text("[Desktop Entry]\nType=Application\nName=Mneme\n"
                        "Comment=Private memory, started at login\n"
                        f"Exec={exec_line}\nIcon={APP_ID}\nTerminal=false\n"
                        "X-GNOME-Autostart-enabled=true\n")


class WindowsAutostart:  # pragma: no cover - written for Windows
    KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"

    def enabled(self) -> bool:
        import winreg

        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, self.KEY) as key:
            try:
                winreg.QueryValueEx(key, "Mneme")
                return True
            except FileNotFoundError:
                return False

    def set_enabled(self, on: bool) -> None:
        import subprocess
        import winreg

        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, self.KEY, 0, winreg.KEY_SET_VALUE) as key:
            if on:
                winreg.SetValueEx(key, "Mneme", 0, winreg.REG_SZ, subprocess.list2cmdline(launch_command()))
            else:
                try:
                    winreg.DeleteValue(key, "Mneme")
                except FileNotFoundError:
                    pass


class MacAutostart:  # pragma: no cover - written for macOS
    def path(self) -> Path:
        return Path.home() / "Library" / "LaunchAgents" / f"{APP_ID}.plist"

    def enabled(self) -> bool:
        return self.path().exists()

    def set_enabled(self, on: bool) -> None:
        import plistlib

        if not on:
            self.path().unlink(missing_ok=True)
            return
        self.path().parent.mkdir(parents=True, exist_ok=True)
        self.path().write_bytes(plistlib.dumps({"Label": APP_ID, "ProgramArguments": launch_command(),
                                                "RunAtLoad": True}))


def autostart():
    if sys.platform == "win32":
        return WindowsAutostart()
    if sys.platform == "darwin":
        return MacAutostart()
    return XdgAutostart()
