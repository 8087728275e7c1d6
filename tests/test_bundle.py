"""The PyInstaller one-folder bundle: built from packaging/mneme.spec, then run for real."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    pyinstaller = Path(sys.executable).with_name("pyinstaller")
    if not pyinstaller.exists():
        pytest.fail("pyinstaller is needed: `make test` installs it (the test extra)")
    out = tmp_path_factory.mktemp("bundle")
    started = time.perf_counter()
    proc = subprocess.run([pyinstaller, "--noconfirm", "--log-level", "WARN", "--distpath", out / "dist",
                           "--workpath", out / "work", str(ROOT / "packaging" / "mneme.spec")],
                          capture_output=True, text=True, cwd=ROOT / "packaging", timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exe = out / "dist" / "mneme" / "mneme"
    assert exe.exists()
    size = sum(p.stat().st_size for p in exe.parent.rglob("*") if p.is_file())
    print(f"\nbundle built in {time.perf_counter() - started:.0f} s, {size / 1e6:.0f} MB")
    return exe


def test_bundled_version_and_ask_smoke(bundle, tmp_path):
    env = {**os.environ, "MNEME_HOME": str(tmp_path / "home"), "MNEME_PASSPHRASE": "bundle",
           "MNEME_MODELS_DIR": str(tmp_path / "models")}
    env.pop("PYTHONPATH", None)
    version = subprocess.run([bundle, "--version"], capture_output=True, text=True, env=env, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("mneme 0.")
    chats = tmp_path / "c.jsonl"
    chats.write_text(json.dumps({"id": "1", "conversation": "Family", "time": "2024-03-05T09:00:00Z",
                                 "speaker": "Mum", "text": "The spare key is under the blue flowerpot"}) + "\n")
    subprocess.run([bundle, "import", "chats", chats], check=True, env=env, timeout=300, capture_output=True)
    ask = subprocess.run([bundle, "ask", "Where is the spare key?", "--json"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert ask.returncode == 0, ask.stderr[-2000:]
    answer = json.loads(ask.stdout)
    assert answer["citations"] and answer["citations"][0]["source_ids"] == [1]
    # the default model was assembled from the bundled chunk packages and checked
    assert (tmp_path / "models" / "gemma-3-270m-q4_k_m.gguf").stat().st_size > 200e6
