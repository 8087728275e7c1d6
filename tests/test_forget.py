"""Forgetting means gone: exact names, big forgets, and nothing left in free pages, the keyword
index's shadow tables or the WAL — checked by decrypting every page of the real SQLCipher file."""

import json
import os
import pty
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlcipher3

from mneme.core.errors import UserError
from mneme.core.store import Store
from tests.conftest import ROOT, msg, run_cli
from tests.helpers.sqlcipher_pages import holds

PASS = {"MNEME_PASSPHRASE": "correct horse"}
KEY = b"k" * 32


def write_chats(path, rows):
    with open(path, "w") as f:
        for i, (app, conv) in enumerate(rows):
            f.write(json.dumps({"id": f"x{i}", "conversation": conv, "time": f"2024-03-01T10:{i:02d}:00Z",
                                "speaker": "Anna", "text": f"status update number {i}", "app": app}) + "\n")
    return path


ROWS = [("work", "Standup"), ("work", "Standup"), ("workout", "Gym log"), ("chat", "Work friends"),
        ("Slack", "Slack #general"), ("Slack", "Slack #random")]


def test_forget_app_is_an_exact_name_not_a_pattern(tmp_path):
    run_cli("import", "chats", write_chats(tmp_path / "c.jsonl", ROWS), env=PASS)
    out = run_cli("forget", "--app", "%", "--yes", env=PASS).stdout  # removed everything before
    assert "Nothing matches" in out
    out = run_cli("forget", "--app", "wor", "--yes", env=PASS).stdout
    assert "Nothing matches" in out and "work" in out and "workout" in out  # names like it
    out = run_cli("forget", "--app", "work", "--yes", env=PASS).stdout  # took workout, Work friends
    assert "Forgot 2 items" in out
    out = run_cli("forget", "--app", "WORK FRIENDS", "--yes", env=PASS).stdout  # case-insensitive
    assert "Forgot 1 items" in out
    status = json.loads(run_cli("status", "--json", env=PASS).stdout)
    assert status["sources"] == 3
    # Search's app filter still matches the conversations an app name starts.
    hits = json.loads(run_cli("search", "status update", "--app", "Slack", "--json", env=PASS).stdout)
    assert len(hits) == 2 and all(h["app"] == "Slack" for h in hits)
    hits = json.loads(run_cli("search", "status update", "--app", "workout", "--json", env=PASS).stdout)
    assert len(hits) == 1


def _cli_on_a_terminal(args, answer):
    """The real CLI with a terminal as stdin (so it asks), answering *answer*."""
    main, other = pty.openpty()
    env = {**os.environ, **PASS}
    proc = subprocess.Popen([sys.executable, "-m", "mneme.app", *args], stdin=other, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=ROOT, text=True)
    os.close(other)
    os.write(main, answer.encode())
    out, err = proc.communicate(timeout=120)
    os.close(main)
    return proc.returncode, out, err


def test_forget_shows_what_and_how_much_before_asking(tmp_path):
    run_cli("import", "chats", write_chats(tmp_path / "c.jsonl", ROWS), env=PASS)
    code, out, _ = _cli_on_a_terminal(["forget", "--app", "Slack"], "n\n")
    assert code == 1 and "Nothing deleted" in out
    listed = out[:out.index("Nothing deleted")]
    assert "This deletes 2 items (2 text chunks)" in listed
    assert "Slack · Slack #general" in listed and "Slack · Slack #random" in listed
    proc = run_cli("forget", "--app", "Slack", env=PASS, check=False)  # no terminal, no --yes
    assert proc.returncode == 2 and "pass --yes" in proc.stderr
    assert json.loads(run_cli("status", "--json", env=PASS).stdout)["sources"] == len(ROWS)
    code, out, _ = _cli_on_a_terminal(["forget", "--app", "Slack"], "y\n")
    assert code == 0 and "Forgot 2 items" in out


@pytest.mark.slow
def test_forgetting_50000_items_at_once(open_mem):
    """A retention sweep over 50,000 old frames: one SQL parameter per id broke past 32,766."""
    mem = open_mem(embedder=None)
    with mem.store.transaction() as db:
        for i in range(50_000):
            sid = db.execute("INSERT INTO sources(kind, external_id, time, app) VALUES "
                             "('frame', ?, ?, 'editor')", (f"f{i}", 1_000_000 + i)).lastrowid
            db.execute("INSERT INTO chunks(source_id, seq, text) VALUES (?, 0, ?)", (sid, f"frame text {i}"))
            db.execute("INSERT INTO frames VALUES (?, 0, 1, 1, x'00', x'00', '[]', 2)", (sid,))
    mem.import_messages([msg(1, "a message, not a frame")])
    mem.config.set("retention_days", 1)
    assert mem.apply_retention() == 50_000
    assert mem.store.counts("")["sources"] == 1 and mem.store.frame_usage() == (0, 0)
    assert mem.store.check() == []


def fill_store(path, n, canary_every=2):
    store = Store(path, KEY)
    store.add_messages([msg(i, f"common words zqcanary{i} here" if i % canary_every == 0 else f"keep words {i}",
                            app="Secret" if i % canary_every == 0 else "Keep") for i in range(n)])
    return store


def fts_blobs(store):
    return b"".join(r[0] for r in store._q("SELECT block FROM chunks_fts_data") if r[0])


@pytest.mark.parametrize("n, every", [(2_000, 20), (2_000, 2), (40_000, 2)])
def test_forget_leaves_no_text_in_free_pages_fts_shadow_tables_or_wal(tmp_path, n, every):
    """100 canaries are deleted row by row from the keyword index; 1,000 and 20,000 by rebuilding it."""
    path = tmp_path / "m.db"
    store = fill_store(path, n, every)
    store.forget(app="nobody")  # an earlier forget, as in a memory in use
    assert b"zqcanary" in fts_blobs(store) and holds(path, KEY, b"zqcanary")  # the checks can see it
    deleted = store.forget(app="Secret")
    store.scrub()
    assert len(deleted) == n // every
    assert b"zqcanary" not in fts_blobs(store)  # stale terms with row ids stayed before
    assert os.path.getsize(str(path) + "-wal") == 0
    assert not holds(path, KEY, b"zqcanary")  # not in any page, free or live, of file or WAL
    assert store.keyword_search("keep", 5) and store.check() == []
    store.close()


def _reader(path, hold: threading.Event, started: threading.Event, key=KEY):
    """Another connection (as another Mneme process would be) inside a read transaction."""
    db = sqlcipher3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    db.execute("BEGIN")
    db.execute("SELECT count(*) FROM chunks").fetchone()
    started.set()
    hold.wait()
    db.execute("COMMIT")
    db.close()


def test_forget_waits_for_another_reader_then_checks_the_checkpoint(tmp_path):
    path = tmp_path / "m.db"
    store = fill_store(path, 2_000)
    store.close()
    store = Store(path, KEY)
    release, started = threading.Event(), threading.Event()
    threading.Thread(target=_reader, args=(path, release, started), daemon=True).start()
    assert started.wait(10)
    threading.Timer(2.0, release.set).start()  # the reader ends while forget waits
    store.forget(app="Secret")
    store.scrub()
    assert os.path.getsize(str(path) + "-wal") == 0 and not holds(path, KEY, b"zqcanary")
    store.close()


def test_forget_says_so_when_a_reader_never_lets_go(tmp_path, open_mem):
    mem = open_mem(embedder=None, home=tmp_path / "h")
    mem.import_messages([msg(i, f"secret zqcanary{i}", app="Secret") for i in range(200)])
    release, started = threading.Event(), threading.Event()
    threading.Thread(target=_reader, args=(mem.store.path, release, started, mem.store._key),
                     daemon=True).start()
    assert started.wait(10)
    t0 = time.monotonic()
    with pytest.raises(UserError, match="holds the memory open"):
        mem.store.forget(app="Secret")
        mem.store.scrub(wait=1.0)  # before, the checkpoint's "busy" was ignored
    assert time.monotonic() - t0 < 20
    assert mem.store.counts("")["sources"] == 0  # deleted all the same
    release.set()
    time.sleep(0.5)
    mem.store.scrub()
    assert not holds(mem.store.path, mem.store._key, b"zqcanary")


META = "wombatmeta4417"


def test_canary_in_metadata_never_reaches_disk_in_keyring_mode(tmp_path, isolated_home):
    """App name, window title, conversation title and speaker, in keyring mode: every file in the
    home, temp, data folders and the keyring folder actually used is scanned."""
    import keyring.core

    from mneme.core.records import FrameIn

    chats = tmp_path / "in.jsonl"
    chats.write_text(json.dumps({"id": "1", "conversation": f"conv {META}", "title": f"title {META}",
                                 "time": "2024-03-01T10:00:00Z", "speaker": f"speaker {META}",
                                 "text": "an ordinary sentence", "app": f"app{META}"}) + "\n")
    run_cli("init")  # keyring mode
    run_cli("import", "chats", chats)
    chats.unlink()
    from mneme.core.memory import open_memory
    from tests.conftest import FakeEmbedder

    with open_memory(embedder=FakeEmbedder()) as mem:
        mem.add_frame(FrameIn("f1", 1_700_000_000, 0, f"window-app {META}", f"window title {META}",
                              1, 1, b"", b"", "frame words", "[]"))
    run_cli("search", "ordinary", "--json")
    run_cli("search", META, "--app", f"app{META}")
    run_cli("doctor")
    run_cli("forget", "--app", f"conv {META}", "--yes")
    keyring_file = Path(keyring.core.load_keyring(os.environ["PYTHON_KEYRING_BACKEND"]).file_path)
    meta = json.loads((isolated_home / "mneme.json").read_text())
    assert meta["mode"] == "keyring" and meta["keyring_id"] in keyring_file.read_text()  # the one used
    roots = [isolated_home, os.environ["TMPDIR"], os.environ["XDG_DATA_HOME"], keyring_file.parent]
    files = [p for r in roots for p in Path(r).rglob("*") if p.is_file()]
    assert keyring_file in files and any(p.name == "memory.db" for p in files)
    for path in files:
        data = path.read_bytes()
        assert META.encode() not in data and META.encode("utf-16-le") not in data, path
