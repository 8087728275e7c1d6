"""Changing the key is crash-safe: kill -9 at each step of it, and the memory still opens, with
everything in it, under the old key or the new one (and a later unlock finishes or undoes it)."""

import json
import os
import subprocess
import sys

import pytest
from pathlib import Path

from mneme.core import keys
from mneme.core.memory import open_memory
from tests.conftest import ROOT, msg, run_cli

PASS = "the new passphrase"
N = 1500


def make_home(mode):
    os.environ.pop("MNEME_PASSPHRASE", None)
    mem = open_memory(embedder=None, key_mode=mode, passphrase=lambda q: PASS, warm=False)
    mem.import_messages([msg(i, f"message number {i} " + "filler words " * 20) for i in range(N)])
    meta = mem.meta
    mem.close()
    return meta


def crash(mode, step, env):
    proc = subprocess.run([sys.executable, "-m", "tests.helpers.crash_key_change", mode, step],
                          env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=300)
    return proc.returncode


def keyring_has(meta):
    backend, _ = keys._keyring()
    return backend.get_password(keys.KEYRING_SERVICE, f"master-key:{meta.keyring_id}") is not None


@pytest.mark.parametrize("step", ["pending", "during-rekey", "rekey", "promote", "keyring-delete"])
def test_kill_9_while_switching_keyring_to_passphrase(step, isolated_home):
    old = make_home("keyring")
    code = crash("passphrase", step, {"MNEME_PASSPHRASE": PASS})
    assert code == -9, "the crash did not happen at that step"
    status = json.loads(run_cli("status", "--json", env={"MNEME_PASSPHRASE": PASS}).stdout)
    assert status["sources"] == N  # the store opens, with everything in it
    assert not (isolated_home / "mneme.json.next").exists()  # the change was finished or undone
    mode = keys.KeyMeta.load(isolated_home / "mneme.json").mode
    assert mode == status["key_mode"]
    if mode == "passphrase":
        assert not keyring_has(old)  # the old master key does not linger
    run_cli("key", "passphrase", env={"MNEME_PASSPHRASE": PASS}) if mode == "keyring" else None
    status = json.loads(run_cli("status", "--json", env={"MNEME_PASSPHRASE": PASS}).stdout)
    assert status["sources"] == N and status["key_mode"] == "passphrase"


@pytest.mark.parametrize("step", ["pending", "rekey", "promote"])
def test_kill_9_while_switching_passphrase_to_keyring(step, isolated_home):
    make_home("passphrase")
    assert crash("keyring", step, {"MNEME_PASSPHRASE": PASS}) == -9
    status = json.loads(run_cli("status", "--json", env={"MNEME_PASSPHRASE": PASS}).stdout)
    assert status["sources"] == N and not (isolated_home / "mneme.json.next").exists()
    if status["key_mode"] == "passphrase":  # undone: the new key it made is not left behind
        backend, _ = keys._keyring()
        held = Path(backend.file_path).read_text() if Path(backend.file_path).exists() else ""
        assert "master-key" not in held


def test_kill_9_at_random_moments_of_the_rekey(isolated_home):
    make_home("keyring")
    for attempt in range(4):
        crash("passphrase", "during-rekey", {"MNEME_PASSPHRASE": PASS, "CRASH_WITHIN": "0.3"})
        status = json.loads(run_cli("status", "--json", env={"MNEME_PASSPHRASE": PASS}).stdout)
        assert status["sources"] == N
        if status["key_mode"] == "passphrase":
            run_cli("key", "keyring", env={"MNEME_PASSPHRASE": PASS})


def test_a_keyring_that_refuses_to_delete_the_old_key_is_reported(isolated_home, monkeypatch):
    old = make_home("keyring")
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "tests.helpers.refusing_keyring.Keyring")
    mem = open_memory(embedder=None, warm=False)
    with pytest.raises(keys.UserError, match="refused to remove the old master key"):
        mem.change_key_mode("passphrase", lambda q: PASS)  # was silently ignored
    mem.close()
    assert keyring_has(old)
    # The change itself is complete: the passphrase opens it; the removal is tried again.
    status = json.loads(run_cli("status", "--json", env={"MNEME_PASSPHRASE": PASS}).stdout)
    assert status["key_mode"] == "passphrase" and status["sources"] == N
    assert keys.KeyMeta.load(isolated_home / "mneme.json").retired == old.keyring_id
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    run_cli("status", env={"MNEME_PASSPHRASE": PASS})
    assert not keyring_has(old) and not keys.KeyMeta.load(isolated_home / "mneme.json").retired


def _fsynced(monkeypatch):
    """Record the path of every file or folder fsynced (os.fsync itself still runs)."""
    seen = []
    real = os.fsync

    def spy(fd):
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return seen


def test_config_pause_and_key_files_are_written_atomically_and_synced(isolated_home, monkeypatch):
    from mneme.core.config import Config
    from mneme.core.pause import PauseState

    isolated_home.mkdir(parents=True)
    for name, write in [("config.json", lambda p: (c := Config(p), c.set("search_limit", 7), c.save())),
                        ("pause.json", lambda p: PauseState(p.parent).pause(60)),
                        ("mneme.json", lambda p: keys.KeyMeta(mode="passphrase").save(p))]:
        with monkeypatch.context() as m:
            seen = _fsynced(m)
            target = isolated_home / name
            write(target)
        assert any(s.startswith(str(isolated_home / f".{name}.")) for s in seen), (name, seen)  # the file
        assert str(isolated_home) in seen, (name, seen)  # and the folder, so the rename survives
        assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in isolated_home.iterdir()) == ["config.json", "mneme.json", "pause.json"]
