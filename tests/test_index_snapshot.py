"""The vector index saved as an encrypted snapshot, with a journal of what changed since (issue 15).

Real SQLCipher store, real Chroma (PersistentClient in a RAM-backed folder), real snapshot files;
kills are real ``kill -9`` of a subprocess that holds the memory open.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mneme.core import snapshot
from mneme.core.index import Index
from mneme.core.memory import open_memory
from tests.conftest import ROOT, msg, run_cli

CANARY_ID = 987_654_321  # a chunk id that appears nowhere else
DIM = 64


def canary_vector() -> np.ndarray:
    v = np.linspace(0.011, 0.987, DIM, dtype=np.float32) ** 1.7
    return (v / np.linalg.norm(v)).astype(np.float32)


def plant_canary(mem) -> None:
    """A chunk with a distinctive id and vector (as the index would store them)."""
    with mem.store.transaction() as db:
        sid = db.execute("INSERT INTO sources(kind, external_id, time, app) VALUES "
                         "('note', 'canary', 1.7e9, 'notes')").lastrowid
        db.execute("INSERT INTO chunks(id, source_id, seq, text) VALUES (?, ?, 0, 'canary note')",
                   (CANARY_ID, sid))
    mem.store.put_embeddings(mem.embedder.id, [(CANARY_ID, canary_vector())])


def needles() -> list[bytes]:
    v = canary_vector()
    return [str(CANARY_ID).encode(), v[:4].tobytes(), v[20:24].tobytes()]


def files_with(root: Path, wanted: list[bytes]) -> list[str]:
    hits = []
    for path in Path(root).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path} has {w!r}" for w in wanted if w in data]
    return hits


def places(tmp_path) -> list[Path]:
    """Every disk folder a test's memory may write to: the home, temp, cache and data dirs."""
    return [p for p in (tmp_path / "home", tmp_path / "tmp", tmp_path / "cache", tmp_path / "xdg-data")
            if p.exists()]


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def filled(open_mem, n=40, **kw):
    mem = open_mem(**kw)
    mem.import_messages([msg(i, f"lighthouse keeper note {i} about tide {i % 7}") for i in range(n)])
    mem.embed_pending()
    assert mem.wait_ready(30)
    return mem


def stored_ids(mem) -> set[int]:
    return {cid for ids, _ in mem.store.iter_embeddings(mem.embedder.id) for cid in ids}


def reopen(open_mem, **kw):
    mem = open_mem(**kw)
    assert mem.wait_ready(60), mem.index_problem()
    mem.wait_caught_up(60)
    return mem


def test_canary_vector_and_id_never_reach_the_disk_in_plaintext(open_mem, tmp_path):
    mem = filled(open_mem)
    plant_canary(mem)
    mem.embed_pending()
    mem._catch_up()
    assert CANARY_ID in mem.index.ids()
    folder = mem.index.folder
    assert snapshot.ram_backed(folder) and not (folder.stat().st_mode & 0o077)
    assert mem.save_index()
    # The canary is findable where it is meant to be (so the search below can fail) …
    assert files_with(folder, needles()), "the canary is not in the RAM folder: the grep proves nothing"
    # … and nowhere on disk: not in the snapshot, the store, temp or cache folders.
    assert files_with(tmp_path, needles()) == []
    mem.close()
    assert not folder.exists(), "the RAM folder stays after lock"
    assert (tmp_path / "home" / "index.snap").exists()
    assert files_with(tmp_path, needles()) == []


def test_after_kill_9_nothing_in_plaintext_and_the_ram_folder_is_cleaned_up(open_mem, tmp_path):
    mem = filled(open_mem)
    plant_canary(mem)
    mem.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = textwrap.dedent(f"""
        import sys, time
        from tests.conftest import FakeEmbedder
        from mneme.core import embedding
        from mneme.core.memory import open_memory
        embedding.register(FakeEmbedder.id, FakeEmbedder)
        mem = open_memory(embedder=FakeEmbedder())
        assert mem.wait_ready(60)
        assert {CANARY_ID} in mem.index.ids()
        mem.save_index()
        print(mem.index.folder, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        folder = Path(proc.stdout.readline().strip())
        assert folder.is_dir() and files_with(folder, needles())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
    assert files_with(tmp_path, needles()) == []
    assert folder.exists()  # a killed process cannot remove it: the next unlock does
    mem = reopen(open_mem)
    assert not folder.exists()
    assert mem.index.source == "snapshot" and CANARY_ID in mem.index.ids()
    mem.close()


def ranking(index, vector) -> list[tuple[float, int]]:
    """The whole index ranked against *vector* (ties in id order)."""
    return sorted((-round(s, 5), i) for i, s in index.query(vector, 10_000))


def _snapshot_bytes(home: Path) -> bytes:
    return (home / "index.snap").read_bytes()


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "cut the last chunk", "garbage", "empty"])
def test_tampered_or_truncated_snapshot_is_refused_and_rebuilt(open_mem, isolated_home, damage):
    mem = filled(open_mem)
    want = stored_ids(mem)
    probe = mem.embedder.embed(["lighthouse keeper note 3"])[0]
    expected = ranking(mem.index, probe)
    mem.close()
    path = isolated_home / "index.snap"
    raw = path.read_bytes()
    damaged = {"flip a byte": raw[:len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 1]) + raw[len(raw) // 2 + 1:],
               "truncate": raw[:len(raw) // 3],
               "cut the last chunk": raw[:-1],
               "garbage": os.urandom(len(raw)),
               "empty": b""}[damage]
    path.write_bytes(damaged)

    mem = reopen(open_mem)
    assert mem.index.source == "rebuilt"
    assert mem.snapshot_refused
    assert mem.index.ids() == want
    assert ranking(mem.index, probe) == expected
    mem.close()
    assert _snapshot_bytes(isolated_home) != damaged  # a good one was written again
    mem = reopen(open_mem)
    assert mem.index.source == "snapshot" and mem.index.ids() == want


def test_forgotten_chunk_is_absent_after_unlock_from_the_snapshot(open_mem, isolated_home, tmp_path):
    mem = filled(open_mem)
    plant_canary(mem)
    mem.close()
    before = _snapshot_bytes(isolated_home)  # still holds the canary (sealed)

    mem = reopen(open_mem)
    assert CANARY_ID in mem.index.ids()
    assert mem.forget(app="notes") == 1
    assert CANARY_ID not in mem.index.ids()  # gone from the live index at once
    mem.close()

    mem = reopen(open_mem)
    assert mem.index.source == "snapshot"
    assert CANARY_ID not in mem.index.ids()
    assert mem.index.ids() == stored_ids(mem)
    # Opened with the memory's key, the snapshot holds no trace of the forgotten vector or its id
    # (tests/test_index_forget.py looks for more forms of them, in graphs Chroma has written).
    out = tmp_path / "opened"
    out.mkdir()
    snapshot.read(isolated_home / "index.snap", out, mem._key_for)
    assert files_with(out, needles()) == []
    # The snapshot from before the forget, put back, is refused as stale.
    mem.close()
    (isolated_home / "index.snap").write_bytes(before)
    mem = reopen(open_mem)
    assert mem.index.source == "rebuilt" and "stale" in mem.snapshot_refused
    assert CANARY_ID not in mem.index.ids()


KILL_SCRIPT = """
import sys, numpy as np
from tests.conftest import FakeEmbedder
from mneme.core import embedding
from mneme.core.memory import open_memory
embedding.register(FakeEmbedder.id, FakeEmbedder)
mem = open_memory(embedder=FakeEmbedder())
assert mem.wait_ready(60)
rng = np.random.default_rng(int(sys.argv[1]))
print("saving", flush=True)
while True:  # keep writing snapshots of a changing index until killed
    ids = [int(i) for i in rng.choice(sorted(mem.index.ids()), 50, replace=False)]
    vecs = rng.standard_normal((50, 64)).astype(np.float32)
    mem.store.put_embeddings(mem.embedder.id, list(zip(ids, vecs / np.linalg.norm(vecs, axis=1, keepdims=True))))
    mem.save_index()
"""


def test_kill_9_during_snapshot_writes_leaves_a_usable_snapshot(open_mem, isolated_home):
    mem = filled(open_mem, n=3000)
    mem.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = np.random.default_rng(5)
    for round_ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(round_)], stdout=subprocess.PIPE,
                                text=True, env=env, cwd=ROOT)
        assert proc.stdout.readline().strip() == "saving"
        time.sleep(float(rng.uniform(0.2, 2.5)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
        mem = reopen(open_mem)
        assert mem.index.source == "snapshot", mem.snapshot_refused
        assert mem.index.ids() == stored_ids(mem)
        ids, vectors = mem.store.vectors_of(mem.embedder.id, sorted(stored_ids(mem)), DIM)
        indexed = mem.index.vectors(ids)  # each chunk's newest vector is the one indexed
        assert all(np.allclose(indexed[cid], v, atol=1e-6) for cid, v in zip(ids, vectors))
        assert not list(isolated_home.glob(".index.snap.*")) and not (isolated_home / "index.snap.old").exists()
        mem.close()


def test_journal_catch_up_gives_the_same_results_as_a_full_rebuild(open_mem, isolated_home, monkeypatch):
    mem = filled(open_mem, n=300)
    mem.close()
    # Changes the saved index never saw: new chunks, replaced vectors, forgotten ones.
    mem = open_mem(warm=False)
    mem.import_messages([msg(1000 + i, f"harbour crane shift {i} at dawn") for i in range(80)])
    mem.embed_pending()
    rng = np.random.default_rng(3)
    replaced = [int(i) for i in rng.choice(sorted(stored_ids(mem)), 25, replace=False)]
    vecs = rng.standard_normal((25, DIM)).astype(np.float32)
    mem.store.put_embeddings(mem.embedder.id, list(zip(replaced, vecs / np.linalg.norm(vecs, axis=1, keepdims=True))))
    mem.store.delete_embeddings(replaced[:5])  # removed vectors (their chunks wait to be embedded)
    # A forget as a kill -9 right after its store transaction leaves it: the index never saw it.
    mem.store.forget(source_ids=list(range(50, 90)))
    assert len(mem.store.journal_since(mem.store.checkpoint()["seq"])) > 100  # the journal has them
    mem.close()

    queries = [mem.embedder.embed([q])[0] for q in ("harbour crane dawn", "lighthouse keeper tide 3",
                                                    "note about tide 5", "shift 12")]
    queries += list(vecs[:5])
    caught_up = open_mem(warm=False)
    caught_up.warm(background=False, catch_up=False)  # not embedding the removed ones again
    assert caught_up.index.source == "snapshot"
    got = [ranking(caught_up.index, q) for q in queries]
    got_ids = caught_up.index.ids()
    got_vectors = caught_up.index.vectors(sorted(got_ids))
    caught_up.close()

    monkeypatch.setenv("MNEME_INDEX_RAM", "")  # no RAM folder: rebuilt from the store in memory
    rebuilt = open_mem(warm=False)
    rebuilt.warm(background=False, catch_up=False)
    assert rebuilt.index.source == "rebuilt" and rebuilt.index.kind == "memory"
    assert got_ids == rebuilt.index.ids() == stored_ids(rebuilt)
    want_vectors = rebuilt.index.vectors(sorted(got_ids))
    assert all(np.allclose(got_vectors[i], want_vectors[i], atol=1e-6) for i in got_ids)
    # Same ids, same vectors: the catch-up is exact. The rankings are HNSW's, which may leave out
    # a weakly similar chunk on either side (the whole rankings differed in 1 of ~7 runs on main;
    # random dense queries against these sparse vectors miss one even among their best three), so
    # the best ten of the text queries are compared.
    for q, mine in zip(queries[:4], got[:4]):
        assert mine[:10] == ranking(rebuilt.index, q)[:10]


def test_changed_key_reseals_the_snapshot(open_mem, isolated_home, monkeypatch):
    mem = filled(open_mem)
    want = stored_ids(mem)
    mem.close()
    old = _snapshot_bytes(isolated_home)
    mem = reopen(open_mem)
    monkeypatch.setenv("MNEME_PASSPHRASE", "a new passphrase")
    mem.change_key_mode("passphrase", None)
    mem.close()
    assert _snapshot_bytes(isolated_home) != old
    mem = reopen(open_mem)
    assert mem.index.source == "snapshot" and mem.index.ids() == want
    mem.close()
    (isolated_home / "index.snap").write_bytes(old)  # sealed under the old key
    mem = reopen(open_mem)
    assert mem.index.source == "rebuilt" and "authentication" in mem.snapshot_refused
    assert mem.index.ids() == want


def test_without_a_ram_backed_folder_the_index_stays_in_memory(open_mem, isolated_home, tmp_path, monkeypatch):
    disk = tmp_path / "not-ram"
    disk.mkdir()
    monkeypatch.setenv("MNEME_INDEX_RAM", str(disk))  # a folder on disk is refused
    assert snapshot.ram_root() is None
    mem = filled(open_mem)
    assert mem.index.kind == "memory" and mem.index.folder is None
    assert mem.status()["index"]["place"] == "memory"
    mem.close()
    assert not (isolated_home / "index.snap").exists() and list(disk.iterdir()) == []


def test_status_reports_the_index_memory(open_mem):
    mem = filled(open_mem, n=200)
    mem.close()
    mem = reopen(open_mem)
    index = mem.status()["index"]
    assert index["vectors"] == 200 and index["source"] == "snapshot"
    assert 200 * DIM * 4 <= index["resident_bytes"] < 200 * DIM * 4 * 3
    assert index["ram_folder_bytes"] > 0 and index["snapshot_vectors"] == 200
    assert index["snapshot_bytes"] == (mem.home / "index.snap").stat().st_size
    assert index["process_rss_bytes"] > 10_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def chroma_server(tmp_path):
    """A real Chroma server on loopback, with its own data folder."""
    exe = Path(sys.executable).with_name("chroma")
    port = _free_port()
    proc = subprocess.Popen([str(exe), "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        proc.wait(30)
        pytest.fail("the Chroma server did not start")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(30)


def test_the_same_index_interface_runs_against_a_chroma_server(open_mem, isolated_home, chroma_server):
    mem = open_mem(warm=False)
    mem.config.set("index_server", chroma_server)
    mem.config.save()
    mem.close()
    mem = filled(open_mem)
    assert mem.index.kind == "server" and mem.index.source == "rebuilt"
    hits = mem.search("lighthouse keeper note 3", mode="vector").hits
    assert hits and "lighthouse" in hits[0].text
    mem.close()
    assert not (isolated_home / "index.snap").exists()  # the server keeps it

    mem = open_mem(warm=False)  # changes while no index is open: the journal has them
    mem.forget(source_ids=[1, 2, 3])
    mem.import_messages([msg(500 + i, f"harbour crane {i}") for i in range(5)])
    mem.embed_pending()
    mem.close()
    mem = reopen(open_mem)
    assert mem.index.source == "server"  # caught up from the journal, not rebuilt
    assert mem.index.ids() == stored_ids(mem)
    name = mem.index._name
    mem.close()
    # What the server holds: opaque ids and vectors, no text, no metadata.
    seen = Index(mem.embedder, url=chroma_server, name=name)
    seen.open(fresh=False)
    got = seen._col.get(include=["documents", "metadatas"])
    seen.close()
    assert len(got["ids"]) == len(stored_ids(mem)) and "1" not in got["ids"]
    assert all(d is None for d in got["documents"]) and all(not m for m in got["metadatas"])


def test_cli_unlocks_from_the_snapshot_and_status_shows_the_index(tmp_path):
    from tests.test_cli import PASS, write_jsonl

    chats = write_jsonl(tmp_path / "c.jsonl", 30)
    run_cli("import", "chats", chats, env=PASS)
    run_cli("search", "status update", env=PASS)  # embeds, builds the index, saves it at exit
    out = run_cli("status", env=PASS).stdout
    assert "Index:    in RAM, saved as an encrypted snapshot; snapshot of 30 vectors" in out
    assert "MB in memory when loaded" in out
    home = Path(os.environ["MNEME_HOME"])
    before = (home / "index.snap").read_bytes()
    hits = json.loads(run_cli("search", "status update 7", "--json", env=PASS).stdout)
    assert "status update 7 on project 7" in [h["text"] for h in hits[:5]]
    assert (home / "index.snap").read_bytes() == before  # opened from it; nothing changed to save


def test_an_index_opened_from_its_snapshot_is_ready_with_its_graph_read(open_mem, monkeypatch):
    """Chroma reads the HNSW files at a collection's first query, not when it opens: the warm-up
    makes that query before it says the index is ready, so that the first search after unlock
    does not wait for it (seconds at 1M vectors, BENCHMARKS.md fourth round)."""
    from chromadb.api.models.Collection import Collection

    filled(open_mem, n=60).close()
    events: list[str] = []
    query, mark_ready = Collection.query, Index.mark_ready

    def spied_query(self, *args, **kwargs):
        events.append("query")
        return query(self, *args, **kwargs)

    def spied_ready(self):
        events.append("ready")
        return mark_ready(self)

    monkeypatch.setattr(Collection, "query", spied_query)
    monkeypatch.setattr(Index, "mark_ready", spied_ready)
    mem = reopen(open_mem)
    assert mem.index.source == "snapshot"
    assert events[:2] == ["query", "ready"], events


def test_a_vector_query_does_not_count_the_collection_first(open_mem, monkeypatch):
    """Chroma's count took 160 ms at 1M vectors, most of a vector query (BENCHMARKS.md, fourth
    round): a query asks for k and takes what Chroma gives, fewer when it holds fewer."""
    from chromadb.api.models.Collection import Collection

    mem = filled(open_mem, n=12)
    probe = mem.embedder.embed(["lighthouse keeper note 3"])[0]
    counts = []
    count = Collection.count
    monkeypatch.setattr(Collection, "count", lambda self: counts.append(1) or count(self))
    got = mem.index.query(probe, 50)
    assert len(got) == 12 and not counts
    empty = Index(mem.embedder, folder=snapshot.sibling_folder(mem.index.folder))
    empty.open(fresh=True)
    try:
        assert empty.query(probe, 5) == []
    finally:
        empty.close()
