from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import shutil
import platformdirs
import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_HOME = Path(platformdirs.user_data_dir("mneme", appauthor=False))


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own home, keyring file and temp dir; the real home must stay untouched."""
    existed = REAL_HOME.exists()
    home = tmp_path / "home"
    monkeypatch.setenv("MNEME_HOME", str(home))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.delenv("MNEME_PASSPHRASE", raising=False)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    yield home
    assert existed or not REAL_HOME.exists(), f"a test wrote to the real home {REAL_HOME}"


class FakeEmbedder:
    """Deterministic bag-of-words hashing embedder: shares words => similar. For logic tests."""

    id = "fake-hash-64"
    dim = 64

    def embed(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


@pytest.fixture
def fake_embedder():
    from mneme.core import embedding

    emb = FakeEmbedder()
    embedding.register(emb.id, FakeEmbedder)
    return emb


@pytest.fixture(scope="session")
def real_embedder():
    from mneme import models

    return models.default_embedder()


@pytest.fixture(scope="session")
def real_llm():
    from mneme.models.llama import LlamaLLM
    from mneme.models.registry import default_model_path

    llm = LlamaLLM(default_model_path(), n_ctx=2048, n_threads=2)
    yield llm
    llm.close()


@pytest.fixture
def open_mem(isolated_home, fake_embedder, monkeypatch):
    """Open a memory in passphrase mode with the fake embedder; closes them all at the end."""
    from mneme.core.memory import open_memory

    monkeypatch.setenv("MNEME_PASSPHRASE", "correct horse")
    opened = []

    def _open(embedder=fake_embedder, **kw):
        mem = open_memory(embedder=embedder, **kw)
        opened.append(mem)
        return mem

    yield _open
    for mem in opened:
        if not mem.closed:
            mem.close()


def run_cli(*args, env=None, input=None, timeout=600, check=True):
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "mneme.app", *map(str, args)], capture_output=True,
                          text=True, env=full_env, input=input, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"mneme {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def msg(i, text, conv="Team chat", t=None, speaker="Anna", app="chat"):
    from mneme.core.records import Message

    return Message(f"m{i}", conv, t if t is not None else 1_700_000_000 + i * 60, speaker, text, app=app)


@pytest.fixture(scope="session")
def xserver():
    if not shutil.which("Xvfb") or not shutil.which("openbox"):
        pytest.fail("Xvfb and openbox are needed: run `make test` (it installs them) or "
                    "apt-get install xvfb openbox")
    from tests.helpers import xserver as xs

    display = f":{70 + os.getpid() % 200}"
    old = os.environ.get("DISPLAY")
    procs = xs.start(display, "1280x800x24")
    yield display
    xs.stop(procs)
    if old is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = old
