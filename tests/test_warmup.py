"""Index warm-up that meets bad data or fails: nothing hangs, keyword search goes on, doctor repairs.

Malformed vectors are planted in a real SQLCipher store (directly, and through a correctly
encrypted vault); the real CLI then runs as a subprocess with a timeout.
"""

import json
import threading

import numpy as np
import pytest

from mneme.core.index import Index
from mneme.core.vault import export_vault
from tests.conftest import msg, run_cli

PASS = {"MNEME_PASSPHRASE": "correct horse", "MNEME_VAULT_PASSPHRASE": "vault pass"}
FAST_KDF = {"name": "argon2id", "time_cost": 1, "memory_kib": 1024, "parallelism": 1}


def _minilm():
    from mneme.models.embedder import MINILM_ID

    return MINILM_ID


def plant_bad_vectors(mem, embedder_id):
    """Three malformed vectors under *embedder_id*: 128 dimensions, NaN, a ragged byte count."""
    ids = [c.id for c in mem.store.chunks_without_embedding(embedder_id, 3)]
    with mem.store.transaction() as db:
        for cid, blob in zip(ids, [np.ones(128, np.float32).tobytes(),
                                   np.full(384, np.nan, np.float32).tobytes(), b"\x00" * 1537]):
            db.execute("INSERT INTO embeddings(chunk_id, embedder, vector) VALUES (?,?,?)",
                       (cid, embedder_id, blob))
    return ids


def test_malformed_stored_vectors_are_skipped_reported_and_repaired(open_mem, real_embedder, monkeypatch):
    monkeypatch.setenv("MNEME_PASSPHRASE", PASS["MNEME_PASSPHRASE"])
    mem = open_mem(embedder=None)
    mem.import_messages([msg(i, f"the lighthouse keeper note {i}") for i in range(10)])
    plant_bad_vectors(mem, _minilm())
    mem.close()

    proc = run_cli("search", "lighthouse keeper", "--json", timeout=120)  # hung for ever before
    assert len(json.loads(proc.stdout)) == 10
    assert "3 stored vectors are malformed" in proc.stderr
    proc = run_cli("doctor", "--check", timeout=120, check=False)
    assert proc.returncode == 1 and "3 stored vectors are malformed" in proc.stdout
    proc = run_cli("doctor", timeout=120)
    assert "repaired: 3 stored vectors are malformed" in proc.stdout
    proc = run_cli("doctor", "--check", timeout=120)
    assert "consistent" in proc.stdout
    assert "malformed" not in run_cli("search", "lighthouse", timeout=120).stderr


def test_vault_with_a_wrong_dimension_vector_imports_and_search_works(open_mem, tmp_path, monkeypatch):
    monkeypatch.setenv("MNEME_PASSPHRASE", PASS["MNEME_PASSPHRASE"])
    src = open_mem(embedder=None, home=tmp_path / "src")
    src.import_messages([msg(i, f"harbour crane shift {i}") for i in range(5)])
    plant_bad_vectors(src, _minilm())  # correctly encrypted, wrong inside
    vault = tmp_path / "bad-vectors.vault"
    export_vault(src, vault, PASS["MNEME_VAULT_PASSPHRASE"], kdf=FAST_KDF)
    src.close()

    proc = run_cli("import", "vault", vault, env=PASS, timeout=180)  # exit 70 before
    assert "Imported 5 items" in proc.stdout and "Left out 3 malformed vectors" in proc.stdout
    hits = json.loads(run_cli("search", "harbour crane", "--json", env=PASS, timeout=120).stdout)
    assert len(hits) == 5
    assert "consistent" in run_cli("doctor", "--check", env=PASS, timeout=120).stdout


def test_failed_warm_up_fails_loudly_and_keeps_keyword_search(open_mem, monkeypatch, caplog):
    def broken_add(self, ids, vectors):
        raise RuntimeError("index backend broke")

    monkeypatch.setattr(Index, "add", broken_add)  # the failure under test is the index's own
    mem = open_mem(warm=False)
    mem.import_messages([msg(i, f"quarterly budget review {i}") for i in range(5)])
    mem.store.put_embeddings(mem.embedder.id, [(i, mem.embedder.embed(["x"])[0]) for i in range(1, 6)])
    mem.warm(background=True)
    assert mem.wait_ready(10) is False and mem.index.settled.is_set()  # ended, not ready
    assert "index backend broke" in mem.index_problem()
    assert any("index warm-up failed" in r.message and r.exc_info for r in caplog.records)
    result = mem.search("quarterly budget")
    assert result.modes == ["keyword"] and len(result.hits) == 5
    done = []
    worker = threading.Thread(target=lambda: done.append(mem.doctor()), daemon=True)
    worker.start()
    worker.join(30)
    assert done and any("failed to load" in p for p in done[0])  # doctor waited for ever before


def test_cli_search_and_doctor_do_not_wait_for_a_failed_index(isolated_home, monkeypatch, capsys):
    from mneme.app import cli

    monkeypatch.setenv("MNEME_PASSPHRASE", PASS["MNEME_PASSPHRASE"])
    chats = isolated_home.parent / "c.jsonl"
    chats.write_text(json.dumps({"id": "1", "conversation": "c", "time": "2024-01-01T00:00:00Z",
                                 "speaker": "a", "text": "pelican crossing"}) + "\n")
    assert cli.main(["import", "chats", str(chats)]) == 0
    monkeypatch.setattr(Index, "add", lambda self, ids, vectors: 1 / 0)
    codes = []
    worker = threading.Thread(target=lambda: codes.append(cli.main(["search", "pelican", "--json"])),
                              daemon=True)
    worker.start()
    worker.join(60)
    assert codes == [0], "search waited for an index that will never be ready"
    out = capsys.readouterr()
    assert json.loads(out.out.strip().splitlines()[-1])[0]["text"] == "pelican crossing"
    assert "could not be loaded (ZeroDivisionError" in out.err


def test_doctor_check_changes_nothing_and_a_backlog_is_not_a_failure(open_mem, monkeypatch):
    monkeypatch.setenv("MNEME_PASSPHRASE", PASS["MNEME_PASSPHRASE"])
    mem = open_mem(embedder=None)
    mem.import_messages([msg(i, f"unembedded line {i}") for i in range(100)])
    mem.close()
    proc = run_cli("doctor", "--check", timeout=120)
    assert proc.returncode == 0, proc.stdout  # exit 1 on an ordinary backlog before
    assert "100 text chunks are waiting to be embedded" in proc.stdout
    status = json.loads(run_cli("status", "--json", timeout=60).stdout)
    assert status["embedded"] == 0  # --check embedded 64 chunks before
