"""The real CLI as a subprocess, with a temporary home: import → search → ask, privacy, crashes."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli

PASS = {"MNEME_PASSPHRASE": "test passphrase"}
CANARY = "quokkacanary5519"


def write_jsonl(path, n, start=0, extra=()):
    with open(path, "w") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"id": f"msg-{i}", "conversation": f"Slack #c{i % 7}",
                                "time": f"2024-03-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
                                "speaker": "Anna", "text": f"status update {i} on project {i % 13}"}) + "\n")
        for item in extra:
            f.write(json.dumps(item) + "\n")
    return path


def test_import_search_ask_status_forget(tmp_path):
    chats = write_jsonl(tmp_path / "c.jsonl", 20, extra=[{
        "id": "x", "conversation": "Family", "time": "2024-03-05T09:00:00Z", "speaker": "Mum",
        "text": "The spare house key is under the blue flowerpot", "app": "WhatsApp"}])
    out = run_cli("import", "chats", chats, env=PASS).stdout
    assert "Imported 21 messages" in out
    assert "Imported 0 messages" in run_cli("import", "chats", chats, env=PASS).stdout

    hits = json.loads(run_cli("search", "where is the spare key", "--json", env=PASS).stdout)
    assert hits[0]["text"].startswith("The spare house key")
    assert hits[0]["app"] == "WhatsApp" and hits[0]["time"] == "2024-03-05T09:00:00+00:00"
    # Scriptable: each source carries the id it was imported with, its kind, speaker, conversation.
    assert hits[0]["sources"] == [{"id": hits[0]["source_ids"][0], "external_id": "x", "kind": "chat",
                                   "speaker": "Mum", "conversation": "Family"}]

    batch = tmp_path / "q.jsonl"
    batch.write_text('{"query": "spare key"}\n{"query": "project 3", "limit": 2}\n')
    lines = run_cli("search", "--batch", batch, "--json", env=PASS).stdout.splitlines()
    assert len(lines) == 2 and len(json.loads(lines[1])["hits"]) == 2

    status = json.loads(run_cli("status", "--json", env=PASS).stdout)
    assert status["sources"] == 21 and status["embedded"] == status["chunks"] == 21

    run_cli("forget", "--app", "WhatsApp", "--yes", env=PASS)
    hits = json.loads(run_cli("search", "spare house key flowerpot", "--json", env=PASS).stdout)
    assert all("flowerpot" not in h["text"] for h in hits)
    assert "consistent" in run_cli("doctor", env=PASS).stdout


@pytest.mark.slow
def test_ask_json_with_the_real_model(tmp_path):
    chats = write_jsonl(tmp_path / "c.jsonl", 5, extra=[{
        "id": "x", "conversation": "Family", "time": "2024-03-05T09:00:00Z", "speaker": "Mum",
        "text": "The spare house key is under the blue flowerpot"}])
    run_cli("import", "chats", chats, env=PASS)
    answer = json.loads(run_cli("ask", "Where is the spare house key?", "--json", env=PASS).stdout)
    assert "flowerpot" in answer["answer"] and answer["status"] in ("answered", "quoted")
    assert [c["source_ids"] for c in answer["citations"]] == [[6]]
    assert answer["citations"][0]["sources"][0]["external_id"] == "x"
    assert "flowerpot" in answer["citations"][0]["quote"]
    stream = run_cli("ask", "Where is the spare house key?", env=PASS).stdout
    assert "Sources:" in stream and "flowerpot" in stream
    batch = tmp_path / "questions.jsonl"
    batch.write_text('{"question": "Where is the spare house key?"}\n{"question": "What is my cat called?"}\n')
    lines = [json.loads(line) for line in run_cli("ask", "--batch", batch, "--json", env=PASS).stdout.splitlines()]
    assert [a["question"] for a in lines] == ["Where is the spare house key?", "What is my cat called?"]
    assert lines[0]["citations"] and lines[1]["citations"] == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok?"}\n{"q": 1}\n')
    proc = run_cli("ask", "--batch", bad, "--json", env=PASS, check=False)
    assert proc.returncode == 2 and "bad.jsonl:2" in proc.stderr and proc.stdout == ""


def test_bad_inputs_exit_cleanly(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "conversation": "c", "time": "2024-01-01T00:00:00Z", "speaker": "a", "text": "t"}\n'
                   '{"id": "2"}\n')
    proc = run_cli("import", "chats", bad, env=PASS, check=False)
    assert proc.returncode == 2 and "bad.jsonl:2: missing field" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("status", "--json", env=PASS, check=False)
    assert proc.returncode == 2 and "no memory" in proc.stderr  # nothing at all was created
    proc = run_cli("import", "chats", bad, "--skip-bad", env=PASS)
    assert "Imported 1 messages" in proc.stdout and "bad.jsonl:2" in proc.stdout
    proc = run_cli("status", env={"MNEME_PASSPHRASE": "wrong"}, check=False)
    assert proc.returncode == 2 and "key is wrong" in proc.stderr and "ERROR CORE" not in proc.stderr
    proc = run_cli("search", "x", "--since", "someday", env=PASS, check=False)
    assert proc.returncode == 2 and "cannot read 'someday'" in proc.stderr
    proc = run_cli("ask", "x", "--model", tmp_path / "bad.jsonl", env=PASS, check=False)
    assert proc.returncode == 2 and "not a GGUF" in proc.stderr


def test_no_keyring_backend_offers_passphrase_mode(tmp_path):
    chats = write_jsonl(tmp_path / "c.jsonl", 2)
    proc = run_cli("import", "chats", chats, env={"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"},
                   check=False)
    assert proc.returncode == 2
    assert "no OS keyring" in proc.stderr and "mneme init --passphrase" in proc.stderr


def _all_files(*roots):
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file():
                yield path


def test_canary_text_and_vector_never_reach_disk(tmp_path, real_embedder):
    chats = tmp_path / "in" / "c.jsonl"
    chats.parent.mkdir()
    write_jsonl(chats, 30, extra=[{"id": "canary", "conversation": "Secrets", "time": "2024-03-05T09:00:00Z",
                                   "speaker": "me", "text": f"the vault code is {CANARY}"}])
    run_cli("import", "chats", chats, env=PASS)
    run_cli("search", CANARY, env=PASS)
    run_cli("search", "vault code", "--json", env=PASS)
    run_cli("doctor", env=PASS)
    run_cli("forget", "--app", "Slack #c1", "--yes", env=PASS)
    chats.unlink()  # the input file is the user's own; everything else must be clean
    vector = real_embedder.embed([f"the vault code is {CANARY}"])[0].astype(np.float32).tobytes()
    home = Path(os.environ["MNEME_HOME"])
    roots = [home, os.environ["TMPDIR"], os.environ["XDG_DATA_HOME"]]
    files = list(_all_files(*roots))
    assert any(p.name == "memory.db" for p in files)
    for path in files:
        data = path.read_bytes()
        assert CANARY.encode() not in data, path
        assert CANARY.encode("utf-16-le") not in data, path
        assert vector[:32] not in data, path


def test_kill_9_during_a_large_import_leaves_a_consistent_store(tmp_path):
    """Killed inside the import's transaction, at a random point each time, four times."""
    import random
    import re

    chats = write_jsonl(tmp_path / "big.jsonl", 10_000)
    run_cli("import", "chats", write_jsonl(tmp_path / "small.jsonl", 10, start=100_000), env=PASS)
    env = {**os.environ, **PASS, "MNEME_PROGRESS": "1"}
    rng = random.Random(12)
    killed_at = []
    for _ in range(4):
        target = rng.randrange(500, 9_500, 500)  # messages written in the transaction when killed
        proc = subprocess.Popen([sys.executable, "-m", "mneme.app", "import", "chats", str(chats)],
                                env=env, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        buf, done = b"", 0
        while done < target and proc.poll() is None:
            buf = (buf + proc.stderr.read1(256))[-400:]
            counts = re.findall(rb"importing jsonl:[^|]*\|[^|]*\| *(\d+)/10000", buf)
            done = int(counts[-1]) if counts else 0
        assert proc.poll() is None, "the import finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        killed_at.append(done)
        status = json.loads(run_cli("status", "--json", env=PASS).stdout)
        assert status["sources"] == 10, (done, status)  # none of the big import: it was not committed
    assert all(0 < n < 10_000 for n in killed_at)
    assert "consistent" in run_cli("doctor", env=PASS).stdout
    out = run_cli("import", "chats", chats, env=PASS).stdout
    assert "Imported 10000 messages" in out
    status = json.loads(run_cli("status", "--json", env=PASS).stdout)
    assert status["sources"] == 10_010 and status["embedded"] == status["chunks"]


def test_real_home_is_not_touched_by_help():
    proc = subprocess.run([sys.executable, "-m", "mneme.app", "--version"], capture_output=True, text=True)
    assert proc.stdout.startswith("mneme ")
