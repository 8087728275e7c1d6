"""Idle lock that cannot read idle time, the onboarding exclusions checkbox, and onnxruntime's
telemetry queue."""

import os
import subprocess
import sys

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from tests.conftest import ROOT  # noqa: E402


class NoIdleTime:
    """A desktop whose idle time cannot be read (as on a Wayland session without the extension)."""

    def idle_seconds(self):
        raise OSError("XScreenSaver extension missing")


@pytest.mark.gui
def test_idle_lock_that_cannot_read_idle_time_says_so(qtbot, open_mem, caplog):
    from mneme.app.main import Controller
    from mneme.core.errors import UserError

    c = Controller(open_mem(key_mode="passphrase"), interactive=False)
    c.memory.config.set("lock_idle_minutes", 1)
    c._desktop = NoIdleTime()
    assert c.check_idle_lock() is False
    assert c.check_idle_lock() is False
    told = [e for e in c.errors if isinstance(e, UserError) and "cannot lock itself when idle" in e.message]
    assert len(told) == 1  # said once, not silently, not at every tick
    assert any("idle lock is off" in r.message and r.exc_info for r in caplog.records)
    c.shutdown()


@pytest.mark.gui
@pytest.mark.parametrize("ticked", [True, False])
def test_onboarding_exclusions_checkbox_is_honest(qtbot, open_mem, ticked):
    from mneme.app.dialogs import Onboarding
    from mneme.app.main import apply_onboarding
    from mneme.capture.privacy import Exclusions
    from mneme.capture.window import Window

    dialog = Onboarding("/tmp/home", True)
    qtbot.addWidget(dialog)
    assert "private" not in dialog.exclusions.text().lower()  # it does not govern private windows…
    assert "never captured" in dialog.always_excluded.text()  # …which are always excluded, and it says so
    mem = open_mem()
    dialog.exclusions.setChecked(ticked)
    apply_onboarding(mem.config, dialog.exclusions.isChecked(), consent=False)
    ex = Exclusions.from_config(type(mem.config).load(mem.config.path))
    assert ex.excluded(Window(1, "KeePassXC", "Database.kdbx - KeePassXC")) is ticked
    assert ex.excluded(Window(2, "firefox", "News — Private Browsing"))
    assert ex.excluded(Window(3, "mneme", "Mneme"))


def test_onnxruntime_writes_no_telemetry_queue(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "HOME": str(tmp_path)}
    env.pop("ORT_DISABLE_TELEMETRY", None)
    code = "from mneme import models; models.default_embedder().embed(['hello'])"
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, timeout=120)
    assert not [p for p in tmp_path.rglob("*") if "onnxruntime" in p.name], "onnxruntime.db was written"
