"""Vault export/import speed and memory for a memory of 10k frames (python tests/bench/vault_bench.py).

Each home is measured in a child process so peak RSS is that operation's own."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MNEME_PASSPHRASE", "bench")

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, %r)
from mneme.core.memory import open_memory
from mneme.core.vault import export_vault, import_vault
op, home, vault = sys.argv[1:4]
mem = open_memory(home, embedder=None, warm=False)
t = time.perf_counter()
info = export_vault(mem, vault, "vault pass") if op == "export" else import_vault(mem, vault, "vault pass")
dt = time.perf_counter() - t
mem.close()
print(json.dumps({"seconds": dt, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""" % str(ROOT)


def make_home(home: str, frames: int) -> None:
    import numpy as np
    from PIL import Image

    from mneme.core.memory import open_memory
    from mneme.core.records import FrameIn

    rng = np.random.default_rng(0)
    mem = open_memory(home, embedder=None, warm=False)
    base = np.full((720, 1280, 3), 245, np.uint8)
    for i in range(frames):
        img = base.copy()
        for _ in range(12):  # text-like dark strokes, so WebP sizes look like real screens
            y, x = rng.integers(0, 700), rng.integers(0, 1000)
            img[y:y + 12, x:x + rng.integers(40, 280)] = rng.integers(0, 80)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="WEBP", quality=45)
        text = " ".join(rng.choice(["invoice", "meeting", "budget", "report", "design", "review"], 60))
        mem.add_frame(FrameIn(f"f{i}", 1.7e9 + i * 3, 1, "editor", f"doc {i % 40}", 1280, 720,
                              buf.getvalue(), buf.getvalue()[:4000], text, "[]"))
    mem.close()


def run(op, home, vault):
    out = subprocess.run([sys.executable, "-c", CHILD, op, home, vault], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> int:
    frames = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    work = Path(tempfile.mkdtemp(prefix="mneme-vaultbench-"))
    src, dst, vault = str(work / "src"), str(work / "dst"), str(work / "m.mnemevault")
    make_home(src, frames)
    home_mb = sum(p.stat().st_size for p in Path(src).rglob("*") if p.is_file()) / 1e6
    exp = run("export", src, vault)
    vault_mb = os.path.getsize(vault) / 1e6
    imp = run("import", dst, vault)
    print(f"\n### Vault ({frames:,} frames, home {home_mb:,.0f} MB)\n\n| what | figure |\n|---|---|\n"
          f"| export | {vault_mb / exp['seconds']:.1f} MB/s, peak RSS {exp['rss_mb']:.0f} MB |\n"
          f"| import (restore into an empty home) | {vault_mb / imp['seconds']:.1f} MB/s, peak RSS {imp['rss_mb']:.0f} MB |\n"
          f"| vault size / home size | {vault_mb:,.0f} MB / {home_mb:,.0f} MB = {vault_mb / home_mb:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
