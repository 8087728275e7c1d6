"""Capture benchmarks on a real X server: CPU share of `mneme capture` for a static screen and for
simulated office activity, capture-to-searchable latency, MB stored per hour, and OCR word recall
on rendered light and dark screenshots.  python tests/bench/capture_bench.py [--minutes M]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.helpers import xserver  # noqa: E402
WORDS = ("meeting budget invoice project deadline review customer release design report schedule "
         "marketing quarterly analysis account payment delivery contract feedback strategy").split()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_capture(seconds: float, activity) -> dict:
    home = tempfile.mkdtemp(prefix="mneme-capbench-")
    env = {**os.environ, "MNEME_HOME": home, "MNEME_PASSPHRASE": "bench", "MNEME_PROGRESS": "0"}
    # Measure capture itself: no idle pause (a static screen would otherwise stop being captured).
    subprocess.run([sys.executable, "-m", "mneme.app", "config", "idle_pause_seconds", "0"], env=env, cwd=ROOT,
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "mneme.app", "init", "--passphrase"], env=env, cwd=ROOT, check=True,
                   capture_output=True)
    empty = json.loads(subprocess.run([sys.executable, "-m", "mneme.app", "status", "--json"], env=env, cwd=ROOT,
                                      capture_output=True, text=True, check=True).stdout)["store_bytes"]
    term = subprocess.Popen(["xterm", "-geometry", "160x50+0+0", "-fa", "DejaVu Sans Mono", "-fs", "12",
                             "-e", "cat"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    proc = subprocess.Popen([sys.executable, "-m", "mneme.app", "capture", "--json"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(8)  # start-up (imports, key derivation, embedder) is not steady state
    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
    rng = random.Random(3)
    while time.monotonic() - t0 < seconds:
        activity(rng)
    c1, t1 = cpu_seconds(proc.pid), time.monotonic()
    proc.send_signal(signal.SIGTERM)  # stops like Ctrl-C; SIGINT is ignored when run in the background
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # show where it hangs (py-spy, when installed), then give up
        if shutil.which("py-spy") or os.environ.get("PY_SPY"):
            subprocess.run([os.environ.get("PY_SPY") or "py-spy", "dump", "--pid", str(proc.pid)])
        proc.kill()
        raise
    term.terminate()
    term.wait()
    stats = json.loads(out.strip().splitlines()[-1])
    status = json.loads(subprocess.run(
        [sys.executable, "-m", "mneme.app", "status", "--json"], env=env, cwd=ROOT, capture_output=True,
        text=True).stdout)
    shutil.rmtree(home)
    hours = (t1 - t0 + 8) / 3600
    return {"cpu_share": (c1 - c0) / (t1 - t0), "seconds": t1 - t0, "stats": stats,
            "mb_per_hour": status["frame_bytes"] / 1e6 / hours,
            "db_mb_per_hour": max(0, status["store_bytes"] - empty) / 1e6 / hours}


def static(rng):
    time.sleep(1)


def office(rng):
    """Typing into the editor at ~3 words/s, a page of text scrolling past every 20 s."""
    for _ in range(6):
        subprocess.run(["xdotool", "type", "--delay", "60", " ".join(rng.choices(WORDS, k=3)) + " "])
    if rng.random() < 0.15:
        subprocess.run(["xdotool", "type", "--delay", "1", "\n".join(
            " ".join(rng.choices(WORDS, k=12)) for _ in range(15)) + "\n"])


def ocr_recall() -> dict:
    from PIL import ImageFont

    from mneme.capture import ocr

    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 15)
    out = {}
    for reader, name in ((ocr.read, ""), (ocr.LineCache(), " (line cache)")):
        out.update(_recall(reader, name, font, random.Random(5)))
    return out


def _recall(reader, name, font, rng) -> dict:
    from PIL import Image, ImageDraw

    out = {}
    for theme, (fg, bg) in {"light": ((20, 20, 20), (255, 255, 255)),
                            "dark": ((220, 220, 220), (30, 30, 30))}.items():
        found = total = 0
        for _ in range(4):
            img = Image.new("RGB", (1280, 720), bg)
            draw = ImageDraw.Draw(img)
            lines = [[rng.choice(WORDS) for _ in range(10)] for _ in range(25)]
            for i, line in enumerate(lines):
                draw.text((20, 12 + i * 27), " ".join(line), font=font, fill=fg)
            got = [w.text.lower().strip(".,") for w in reader(np.asarray(img))]
            for line in lines:
                for word in line:
                    total += 1
                    if word in got:
                        got.remove(word)
                        found += 1
        out[theme + name] = found / total
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--only", choices=["static", "office"], help="run one of the two scenarios")
    args = parser.parse_args()
    recall = ocr_recall()
    procs = xserver.start(f":{150 + os.getpid() % 50}")
    try:
        runs = {name: run_capture(args.minutes * 60, fn) for name, fn in
                (("static screen", static), ("office activity", office)) if args.only in (None, name.split()[0])}
    finally:
        xserver.stop(procs)
    print(f"\n### Screen capture ({args.minutes:g} min per run, 1920x1080 Xvfb, default 3 s interval)\n")
    print("| run | CPU (share of one core) | frames stored | of which text only | unchanged skipped | deferred | "
          "no new text | capture→searchable p50 | p95 | pictures MB/h | database MB/h |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in runs.items():
        s = r["stats"]
        print(f"| {name} | {r['cpu_share'] * 100:.2f} % | {s['frames_stored']} | {s.get('text_only', 0)} | "
              f"{s['unchanged']} | {s['deferred']} | {s.get('no_new_text', 0)} | {s['latency_p50']} s | "
              f"{s['latency_p95']} s | {r['mb_per_hour']:.1f} | {r['db_mb_per_hour']:.1f} |")
    print("\nOCR word recall on rendered 1280x720 screens (15 px DejaVu Sans): "
          + ", ".join(f"{k} {v:.2f}" for k, v in recall.items()))
    print("Lines read / reused from the line cache: " + ", ".join(
        f"{n} {r['stats'].get('lines_read')} / {r['stats'].get('lines_reused')}" for n, r in runs.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
