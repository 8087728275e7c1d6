"""Capture on a real X server (Xvfb + openbox): real windows, mss, EWMH, tesseract."""

import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.x11
HELPER = ROOT / "tests" / "helpers" / "show_window.py"


@pytest.fixture
def windows(xserver):
    procs = []

    def show(title, text, theme="light", geometry="40,40,900,500", wm_class=None):
        args = [sys.executable, str(HELPER), title, theme, geometry] + ([wm_class] if wm_class else [])
        env = {**os.environ, "QT_QPA_PLATFORM": "xcb"}
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        proc.stdin.write(text)
        proc.stdin.close()
        assert proc.stdout.readline().strip() == "shown"
        procs.append(proc)
        time.sleep(0.3)
        return proc

    yield show
    for proc in procs:
        proc.terminate()
        proc.wait()
        proc.stdout.close()
    time.sleep(0.2)


@pytest.fixture
def pipeline(open_mem, real_embedder):
    from mneme.capture.pipeline import CapturePipeline
    from mneme.capture.screen import Screen
    from mneme.capture.window import X11Desktop

    mem = open_mem(embedder=real_embedder)
    desk = X11Desktop()
    pipe = CapturePipeline(mem, desk, Screen, idle_after=0)
    yield pipe
    if pipe._screen is not None:
        pipe._screen.close()
    desk.close()


def capture(pipe):
    queued = pipe.tick()
    pipe.drain()
    return queued


def stored_text(mem):
    return "\n".join(mem.store.source_text(sid) for sid, *_ in mem.store.frames_between(0, 2e10))


def stored_pixels_text(mem):
    """OCR of the stored (decoded) images themselves."""
    from PIL import Image

    from mneme.capture import ocr

    texts = []
    for sid, *_ in mem.store.frames_between(0, 2e10):
        if not mem.store.frame(sid)["image"]:
            continue
        img = np.asarray(Image.open(io.BytesIO(mem.store.frame(sid)["image"])).convert("RGB"))
        texts.append(ocr.to_text(ocr.read(img)))
    return "\n".join(texts)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_window_text_becomes_searchable_with_app_title_time(pipeline, windows, theme):
    windows(f"Budget notes - {theme}", "Quarterly budget for Zanzibar shipping\nmeeting with Oluwaseun on Friday",
            theme=theme, wm_class="texteditor")
    before = time.time()
    assert capture(pipeline) == 1
    hits = pipeline.memory.search("Zanzibar shipping budget").hits
    assert hits and hits[0].kind == "frame"
    assert hits[0].app == "texteditor" and hits[0].title == f"Budget notes - {theme}"
    assert before - 5 <= hits[0].time <= time.time()
    assert "Oluwaseun" in hits[0].text
    pipeline.memory.wait_caught_up()
    assert pipeline.memory.search("Zanzibar shipping budget", mode="vector").hits[0].kind == "frame"


def test_unchanged_screen_adds_no_frames(pipeline, windows):
    windows("Static", "nothing moves here")
    assert capture(pipeline) == 1
    assert capture(pipeline) == 0 and capture(pipeline) == 0
    assert pipeline.stats.unchanged == 2 and pipeline.memory.store.frame_usage()[0] == 1


def test_excluded_and_private_windows_never_reach_storage(pipeline, windows):
    windows("Work notes", "visible harmless text about gardening", geometry="20,20,600,300")
    windows("Passwords.kdbx", "keepass entry marmalade", geometry="640,20,600,300", wm_class="keepassxc")
    windows("Secret stuff - Mozilla Firefox Private Browsing", "incognito page pomegranate",
            geometry="20,420,600,300")
    assert capture(pipeline) == 1
    text = stored_text(pipeline.memory)
    assert "gardening" in text
    assert "marmalade" not in text and "pomegranate" not in text
    pixels = stored_pixels_text(pipeline.memory)
    assert "gardening" in pixels and "marmalade" not in pixels and "pomegranate" not in pixels
    assert pipeline.stats.masked >= 2


def test_card_number_and_api_key_on_screen_are_never_stored(pipeline, windows):
    windows("Checkout", "Card number 4111 1111 1111 1111\nAPI key AKIAIOSFODNN7EXAMPLE\nOrder for Wanjiru")
    assert capture(pipeline) == 1
    text = stored_text(pipeline.memory)
    assert "Wanjiru" in text
    assert "4111" not in text and "AKIAIOSFODNN7EXAMPLE" not in text
    assert "[redacted card number]" in text and "[redacted aws key]" in text
    pixels = stored_pixels_text(pipeline.memory)
    assert "4111" not in pixels and "AKIA" not in pixels
    frame = pipeline.memory.store.frame(pipeline.memory.store.frames_between(0, 2e10)[0][0])
    assert "4111" not in frame["words"] and "AKIA" not in frame["words"]


def test_pause_and_lock_stop_capture(pipeline, windows):
    windows("Diary", "dear diary about pelicans")
    pipeline.pause.pause(None)
    assert capture(pipeline) == 0
    pipeline.pause.resume()
    subprocess.run(["xset", "s", "activate"], check=True)
    try:
        assert capture(pipeline) == 0
    finally:
        subprocess.run(["xset", "s", "reset"], check=True)
    assert dict(pipeline.stats.skipped) == {"paused": 1, "locked": 1}
    assert pipeline.memory.store.frame_usage()[0] == 0
    assert capture(pipeline) == 1


def test_cli_capture_once(xserver, windows):
    from tests.conftest import run_cli

    windows("Terminal notes", "remember the heron sighting")
    out = run_cli("capture", "--once", "--json", env={"MNEME_PASSPHRASE": "p"}).stdout
    assert '"frames_stored": 1' in out
    assert "heron" in run_cli("search", "heron sighting", env={"MNEME_PASSPHRASE": "p"}).stdout


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_cli_capture_runs_until_stopped_and_keeps_what_it_saw(xserver, windows, sig):
    """`mneme capture` until Ctrl-C (or a session manager's SIGTERM): it finishes what it queued,
    exits 0 and what it saw is searchable."""
    import signal

    from tests.conftest import run_cli

    windows("Field notes", "the kestrel nested by the quarry")
    proc = subprocess.Popen([sys.executable, "-m", "mneme.app", "capture", "--json", "--interval", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "MNEME_PASSPHRASE": "p"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    try:
        while "Capturing every 1 s" not in (line := proc.stderr.readline()):
            assert line, "mneme capture ended before capturing"
        time.sleep(3)
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["frames_stored"] >= 1
    assert "kestrel" in run_cli("search", "kestrel quarry", env={"MNEME_PASSPHRASE": "p"}).stdout


def test_captured_text_never_reaches_disk_unencrypted(pipeline, windows):
    import tempfile
    from pathlib import Path

    canary = "Xylocanary9042"
    windows("Canary", f"the canary word is {canary}")

    def no_temp_files(*a, **k):
        raise AssertionError("capture tried to write a temporary file")

    with pytest.MonkeyPatch.context() as mp:
        for name in ("NamedTemporaryFile", "mkstemp", "mkdtemp", "TemporaryFile"):
            mp.setattr(tempfile, name, no_temp_files)
        assert capture(pipeline) == 1
    assert canary in stored_text(pipeline.memory)  # it was read…
    pipeline.memory.wait_caught_up()
    # Everything under the home and this test's temp dir; the top level of the system temp dir,
    # where a library's temporary files would land.
    paths = [*Path(os.environ["MNEME_HOME"]).rglob("*"), *Path(os.environ["TMPDIR"]).rglob("*"),
             *Path(tempfile.gettempdir()).glob("*")]
    assert any(p.name == "memory.db" for p in paths)
    for path in paths:
        if path.is_file():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            assert canary.encode() not in data, path  # …and is nowhere on disk in the clear


def test_password_manager_title_bars_and_look_alike_terminals_are_masked(pipeline, windows):
    windows("Work notes", "visible harmless text about gardening", geometry="20,60,600,300")
    windows("Database.kdbx - KeePassXC", "keepass entry marmalade", geometry="660,60,600,300",
            wm_class="keepassxc")
    windows("KeePassXC - Passwords", "terminal shows quince", geometry="20,440,600,300", wm_class="XTerm")
    assert capture(pipeline) == 1
    text = stored_text(pipeline.memory)
    assert "gardening" in text and "quince" not in text and "marmalade" not in text
    pixels = stored_pixels_text(pipeline.memory)
    assert "gardening" in pixels
    assert "kdbx" not in pixels and "Database" not in pixels
    assert "quince" not in pixels and "Passwords" not in pixels
    # The mask covers the window manager's frame too: its title bar showed "Database.kdbx - KeePassXC".
    from PIL import Image

    keepass = next(w for w in pipeline.desktop.visible() if w.app.lower() == "keepassxc")
    assert keepass.height > 300 and keepass.width >= 600  # the client area alone before
    sid = pipeline.memory.store.frames_between(0, 2e10)[0][0]
    img = np.asarray(Image.open(io.BytesIO(pipeline.memory.store.frame(sid)["image"])).convert("L"))
    x, y, w, h = keepass.rect
    assert img[max(0, y):y + h, max(0, x):x + w].max() == 0  # title bar and borders blacked out too


def _image(mem, sid=None):
    from PIL import Image

    sid = sid or mem.store.frames_between(0, 2e10)[-1][0]
    return np.asarray(Image.open(io.BytesIO(mem.store.frame(sid)["image"])).convert("L"))


def test_a_window_raised_over_an_excluded_one_is_captured_whole(pipeline, windows):
    """Masks follow the stacking order: the note raised over the password manager is stored whole
    (it used to be blacked out where they overlap), and what shows of the password manager is masked."""
    windows("Database.kdbx - KeePassXC", "keepass entry marmalade", geometry="40,40,700,400", wm_class="keepassxc")
    windows("Notes", "Call plumber Tuesday about the boiler\nquote was 240 pounds", geometry="400,200,760,400",
            wm_class="texteditor")
    shown = pipeline.desktop.visible()
    keepass = next(w for w in shown if w.app.lower() == "keepassxc")
    notes = next(w for w in shown if w.title == "Notes")
    assert shown.index(keepass) < shown.index(notes)  # stacked below the note
    assert capture(pipeline) == 1
    text = stored_text(pipeline.memory)
    assert "plumber Tuesday about the boiler" in text and "240 pounds" in text
    assert "marmalade" not in text and "kdbx" not in text
    img = _image(pipeline.memory)
    x, y, w, h = notes.rect
    assert (img[y:y + h, x:x + w] == 0).mean() < 0.02  # whole: nothing of it blacked out
    kx, ky, kw, kh = keepass.rect
    assert img[ky:y, kx:kx + kw].max() == 0 and img[ky:ky + kh, kx:x].max() == 0  # what shows of it: masked
    assert pipeline.stats.masked == 1


def test_a_minimised_or_covered_excluded_window_masks_nothing(pipeline, windows):
    windows("Database.kdbx - KeePassXC", "keepass entry marmalade", geometry="100,100,300,200", wm_class="keepassxc")
    windows("Big notes", "the heron nests by the old mill", geometry="20,20,1000,600", wm_class="texteditor")
    assert capture(pipeline) == 1
    assert pipeline.stats.masked == 0 and "heron nests by the old mill" in stored_text(pipeline.memory)
    big = next(w for w in pipeline.desktop.visible() if w.title == "Big notes")
    x, y, w, h = big.rect
    assert (_image(pipeline.memory)[y:y + h, x:x + w] == 0).mean() < 0.05  # nothing of the note blacked out
    subprocess.run(["xdotool", "search", "--name", "Big notes", "windowminimize", "--sync"], check=True)
    windows("Other", "a second note about otters", geometry="700,500,500,250", wm_class="texteditor")
    subprocess.run(["xdotool", "search", "--name", "Database.kdbx", "windowminimize", "--sync"], check=True)
    time.sleep(0.3)
    assert not any(w.app.lower() == "keepassxc" for w in pipeline.desktop.visible())
    masked = pipeline.stats.masked
    assert capture(pipeline) == 1
    assert pipeline.stats.masked == masked  # minimised: nothing masked
    assert "otters" in stored_text(pipeline.memory)
