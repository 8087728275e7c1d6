"""The app on a real X server: the global hotkey sent with xdotool opens the overlay; screenshots."""

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.x11, pytest.mark.gui]
PROBE = ROOT / "tests" / "helpers" / "gui_probe.py"


@pytest.fixture
def probe(xserver, tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "MNEME_PASSPHRASE": "probe"}
    shots = tmp_path / "shots"
    proc = subprocess.Popen([sys.executable, str(PROBE), str(tmp_path / "home"), str(shots)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    assert line.startswith("ready"), line
    yield proc, shots
    if proc.poll() is None:
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        proc.wait(30)
    proc.stdin.close()
    proc.stdout.close()


def test_global_hotkey_opens_the_overlay(probe):
    proc, _ = probe
    time.sleep(0.5)
    subprocess.run(["xdotool", "key", "ctrl+alt+space"], check=True)
    line = proc.stdout.readline()
    assert line.startswith("overlay "), line
    subprocess.run(["xdotool", "key", "ctrl+alt+space"], check=True)
    assert proc.stdout.readline().startswith("overlay ")


def test_screenshots(probe):
    """Saves a PNG of each view; `make screenshots` keeps them in docs/screenshots."""
    proc, shots = probe
    proc.stdin.write("shots\n")
    proc.stdin.flush()
    lines = [proc.stdout.readline().strip() for _ in range(2)]
    assert "shots done" in lines
    names = {p.name for p in shots.iterdir()}
    assert names == {"ask.png", "search.png", "timeline.png", "settings.png", "recall-overlay.png",
                     "search-dark.png", "timeline-dark.png"}
    assert all((shots / n).stat().st_size > 5000 for n in names)
    keep = os.environ.get("MNEME_SCREENSHOTS_DIR")
    if keep:
        os.makedirs(keep, exist_ok=True)
        for n in names:
            (shots / n).replace(os.path.join(keep, n))
