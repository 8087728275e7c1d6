"""Vault headers forged without the passphrase: every KDF parameter is bounded before anything is
derived, random bytes after the magic are damage (not "a newer format"), and a killed export's
.part file is cleaned up by the next run."""

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time

import pytest

from mneme.core.errors import BadInputError
from mneme.core.vault import MAGIC, export_vault, import_vault
from tests.conftest import ROOT, msg, run_cli

FAST_KDF = {"name": "argon2id", "time_cost": 1, "memory_kib": 1024, "parallelism": 1}


@pytest.fixture
def vault_bytes(open_mem, tmp_path):
    mem = open_mem(home=tmp_path / "src")
    mem.import_messages([msg(i, f"line {i}") for i in range(5)])
    path = tmp_path / "v.vault"
    export_vault(mem, path, "vault pass", kdf=FAST_KDF)
    mem.close()
    return path.read_bytes()


def with_header(data, edit):
    n = struct.unpack(">I", data[len(MAGIC) + 2:len(MAGIC) + 6])[0]
    header = json.loads(data[len(MAGIC) + 6:len(MAGIC) + 6 + n])
    edit(header)
    raw = json.dumps(header).encode()
    return MAGIC + struct.pack(">HI", 1, len(raw)) + raw + data[len(MAGIC) + 6 + n:]


FORGED = [("memory_kib", 0), ("memory_kib", 2 ** 40), ("parallelism", 0), ("parallelism", 2 ** 24),
          ("time_cost", -1), ("time_cost", 10 ** 9), ("time_cost", "3"), ("time_cost", 2.5),
          ("time_cost", True), ("memory_kib", None), ("salt", "00"), ("salt", "zz")]


@pytest.mark.parametrize("field, value", FORGED)
def test_forged_kdf_parameters_are_refused_before_deriving(vault_bytes, tmp_path, open_mem, field, value):
    bad = tmp_path / "bad.vault"
    bad.write_bytes(with_header(vault_bytes, lambda h: h["kdf"].__setitem__(field, value)))
    mem = open_mem(home=tmp_path / "dst")
    start = time.monotonic()
    with pytest.raises(BadInputError, match="damaged header"):  # tracebacks or for ever before
        import_vault(mem, bad, "vault pass")
    assert time.monotonic() - start < 5
    assert mem.store.counts("")["sources"] == 0


def test_random_bytes_after_the_magic_are_damage_not_a_newer_format(tmp_path, open_mem):
    mem = open_mem()
    rng = random.Random(5842)
    bad = tmp_path / "random.vault"
    for _ in range(50):
        bad.write_bytes(MAGIC + bytes(rng.randrange(256) for _ in range(4000)))
        with pytest.raises(BadInputError, match="damaged header"):
            import_vault(mem, bad, "vault pass")
    bad.write_bytes(MAGIC + struct.pack(">HI", 99, 2) + b"{}")  # a real newer format still says so
    with pytest.raises(BadInputError, match="newer Mneme"):
        import_vault(mem, bad, "vault pass")


def test_a_killed_export_leaves_no_part_file_after_the_next_run(open_mem, tmp_path, monkeypatch):
    monkeypatch.setenv("MNEME_PASSPHRASE", "correct horse")
    mem = open_mem(embedder=None)
    mem.import_messages([msg(i, f"line {i} " + os.urandom(400).hex()) for i in range(20_000)])
    mem.close()
    out = tmp_path / "m.vault"
    part = tmp_path / "m.vault.part"
    env = {**os.environ, "MNEME_VAULT_PASSPHRASE": "v"}
    proc = subprocess.Popen([sys.executable, "-m", "mneme.app", "export", str(out)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not (part.exists() and part.stat().st_size > 1 << 20):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert part.exists() and not out.exists()  # what a kill -9 leaves
    run_cli("status")  # the next run of anything cleans it up
    assert not part.exists()
    run_cli("export", out, env={"MNEME_VAULT_PASSPHRASE": "v"})
    assert out.exists() and not part.exists()
