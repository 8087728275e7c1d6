"""Desktop-app benchmarks on a real X server (python tests/bench/app_bench.py).

Start to window shown; hotkey (xdotool key) to overlay visible; keystroke to results at 100k
chunks (offscreen, in process); idle CPU and RSS without and with the model loaded."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.helpers import xserver  # noqa: E402
os.environ.setdefault("MNEME_PASSPHRASE", "bench")


def proc_cpu_rss(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    return cpu, rss


def wait_window(name: str, timeout: float = 60) -> float:
    t = time.perf_counter()
    while time.perf_counter() - t < timeout:
        if subprocess.run(["xdotool", "search", "--onlyvisible", "--name", name], capture_output=True).returncode == 0:
            return time.perf_counter() - t
        time.sleep(0.005)
    raise TimeoutError(name)


def start_to_window(home: str) -> list[float]:
    from mneme.core.memory import open_memory

    open_memory(home, embedder=None, warm=False).close()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", "mneme.app", "--home", home, "app"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_window("Mneme — memory")
        times.append(time.perf_counter() - t)
        p.terminate()
        p.wait()
    return times


def probe_measures(home: str) -> dict:
    p = subprocess.Popen([sys.executable, str(ROOT / "tests/helpers/gui_probe.py"), home, home + "-shots"],
                         cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "QT_QPA_PLATFORM": "xcb"})
    assert p.stdout.readline().startswith("ready")
    time.sleep(2)
    hotkey = []
    for _ in range(10):
        t = time.perf_counter()
        subprocess.run(["xdotool", "key", "ctrl+alt+space"])
        wait_window("Mneme recall", 10)
        hotkey.append((time.perf_counter() - t) * 1000)
        p.stdout.readline()
        subprocess.run(["xdotool", "key", "Escape"])
        time.sleep(0.3)
    idle = {}
    for state in ("without model", "with model"):
        if state == "with model":
            p.stdin.write("model\n")
            p.stdin.flush()
            p.stdout.readline()
        time.sleep(5)
        c0, _ = proc_cpu_rss(p.pid)
        time.sleep(60)
        c1, rss = proc_cpu_rss(p.pid)
        idle[state] = ((c1 - c0) / 60 * 100, rss)
    p.stdin.write("quit\n")
    p.stdin.flush()
    p.wait(30)
    return {"hotkey_ms": hotkey, "idle": idle}


def keystroke_to_results(n: int = 100_000) -> list[float]:
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    import numpy as np

    from mneme import models
    from mneme.app.main import Controller
    from mneme.app.qt import QApplication
    from mneme.core.memory import open_memory
    from tests.bench.synthetic import messages as synthetic

    app = QApplication.instance() or QApplication([])
    home = tempfile.mkdtemp(prefix="mneme-appbench-")
    emb = models.default_embedder()
    mem = open_memory(home, embedder=emb, warm=False)
    rng = np.random.default_rng(4)
    msgs = synthetic(n, rng)
    mem.import_messages(msgs)
    vecs = rng.standard_normal((n, emb.dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    mem.store.put_embeddings(emb.id, list(zip(range(1, n + 1), vecs)))
    mem.close()
    mem = open_memory(home, embedder=emb)
    mem.wait_ready()
    c = Controller(mem, interactive=False)
    view = c.window().search
    out = []
    words = [m.text.split()[3] for m in msgs[:40]]

    def shown(text: str, since: float) -> None:
        while getattr(view, "shown", None) is None or view.shown.parsed.text != text:
            app.processEvents()
            time.sleep(0.001)
            if time.perf_counter() - since > 10:
                raise TimeoutError(text)

    for w in words:
        view.query.setText(w[:-1])  # what was typed so far, with its results on screen
        shown(w[:-1], time.perf_counter())
        t = time.perf_counter()
        view.query.setText(w)  # one keystroke
        shown(w, t)
        out.append((time.perf_counter() - t) * 1000)
    c.shutdown()
    return out


def main() -> int:
    if sys.argv[1:] == ["--keystroke"]:
        ks = sorted(keystroke_to_results())
        print(f"| keystroke to results shown, 100k chunks | {statistics.median(ks):.0f} ms | "
              f"{ks[int(len(ks) * 0.95) - 1]:.0f} ms |")
        return 0
    procs = xserver.start(f":{120 + os.getpid() % 50}")
    try:
        home = tempfile.mkdtemp(prefix="mneme-appbench-")
        start = start_to_window(home + "/start")
        probe = probe_measures(home + "/probe")
    finally:
        xserver.stop(procs)
    keys = keystroke_to_results()
    print("\n### Desktop app (Xvfb 1920x1080, openbox)\n\n| what | median | p95 |\n|---|---|---|")
    print(f"| start to main window shown (warm caches) | {statistics.median(start):.2f} s | {max(start):.2f} s (max of 3) |")
    hk = probe["hotkey_ms"]
    print(f"| hotkey (xdotool key) to overlay visible | {statistics.median(hk):.0f} ms | {sorted(hk)[int(len(hk) * 0.95) - 1]:.0f} ms |")
    ks = sorted(keys)
    print(f"| keystroke to results shown, 100k chunks (the word's last letter typed) | {statistics.median(ks):.0f} ms | {ks[int(len(ks) * 0.95) - 1]:.0f} ms |")
    for state, (cpu, rss) in probe["idle"].items():
        print(f"| idle app {state}: CPU (share of one core) / RSS | {cpu:.2f} % | {rss:.0f} MB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
