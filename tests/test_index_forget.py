"""A forget is cheap and leaves nothing in the next snapshot (issue 15, third round).

The live graph only marks forgotten vectors deleted (search stops returning them at once); the copy
a snapshot is sealed from is scrubbed of their floats and ids (``core.chroma_scrub``). Real Chroma
in a RAM-backed folder, real snapshot files, opened again with the key; the graphs are large
enough (over Chroma's ``sync_threshold``) that Chroma has written its HNSW files.
"""

import secrets
import threading
from pathlib import Path

import numpy as np
import pytest

from mneme.core import chroma_scrub, snapshot
from mneme.core.index import HNSW, Index
from tests.conftest import FakeEmbedder, msg
from tests.test_index_snapshot import CANARY_ID, cache_home, canary_vector, filled, plant_canary, stored_ids  # noqa: F401

DIM = FakeEmbedder.dim
CANARY_BASE = 987_654_000


def key_for(salt: bytes) -> bytes:
    return bytes(32) if not salt else bytes(b ^ 0x5A for b in (salt * 2)[:32])


def canary_vectors(n: int) -> np.ndarray:
    """Distinctive vectors: a smooth curve, each shifted, and *not* of unit length (Chroma keeps a
    cosine index's vectors normalised, so both forms are looked for)."""
    t = np.linspace(0.013, 0.991, DIM, dtype=np.float32)
    return np.stack([(t ** (1.3 + 0.11 * k) + 0.05 * k) * (2.5 + k) for k in range(n)]).astype(np.float32)


def forms(v: np.ndarray) -> list[tuple[str, np.ndarray]]:
    unit = v / np.linalg.norm(v)
    return [("float32", v.astype(np.float32)), ("unit float32", unit.astype(np.float32)),
            ("float16", v.astype(np.float16)), ("unit float16", unit.astype(np.float16)),
            ("float64", v.astype(np.float64)), ("unit float64", unit.astype(np.float64))]


def _views(data: bytes) -> dict:
    """*data* read as float16/32/64 at every alignment, as float64 arrays."""
    out = {}
    with np.errstate(all="ignore"):
        for dtype in (np.float16, np.float32, np.float64):
            size = np.dtype(dtype).itemsize
            for align in range(size):
                n = (len(data) - align) // size
                if n >= 4:
                    out[(np.dtype(dtype), align)] = np.frombuffer(data, dtype, n, align).astype(np.float64)
    return out


def _near(views: dict, probe: np.ndarray) -> bool:
    """*probe* (4 consecutive components) somewhere in the data at any alignment, within a
    tolerance a re-normalisation or rounding stays in."""
    want = probe.astype(np.float64)
    half = probe.dtype == np.float16
    tol = (2e-3 if half else 1e-5) * abs(want[0]) + 1e-6
    for (dtype, _), arr in views.items():
        if dtype != probe.dtype:
            continue
        with np.errstate(invalid="ignore"):
            hits = np.flatnonzero(np.abs(arr[:len(arr) - 3] - want[0]) <= tol)
        for h in hits:
            if np.allclose(arr[h:h + 4], want, rtol=3e-3 if half else 1e-4, atol=1e-6):
                return True
    return False


def traces(root: Path, ids: list[int], vectors: np.ndarray) -> list[str]:
    """Every trace of the canary ids (text, u32/u64 either byte order) and vectors (three windows
    of each form above) in the files under *root*."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for cid in ids:
            for name, raw in (("text", str(cid).encode()), ("<u32", cid.to_bytes(4, "little")),
                              (">u32", cid.to_bytes(4, "big")), ("<u64", cid.to_bytes(8, "little")),
                              (">u64", cid.to_bytes(8, "big"))):
                if raw in data:
                    found.append(f"{path.name}: id {cid} as {name}")
        views = _views(data)
        for k, v in enumerate(vectors):
            for name, arr in forms(v):
                if any(_near(views, arr[s:s + 4]) for s in (0, DIM // 2, DIM - 4)):
                    found.append(f"{path.name}: canary vector {k} as {name}")
    return found


def opened(path: Path, tmp_path: Path) -> Path:
    out = tmp_path / f"opened-{secrets.token_hex(4)}"
    out.mkdir()
    snapshot.read(path, out, key_for)
    return out


def new_index() -> Index:
    folder = snapshot.new_ram_folder()
    assert folder is not None, "this test needs a RAM-backed folder (/dev/shm)"
    index = Index(FakeEmbedder(), folder=folder)
    index.open(fresh=True)
    return index


_BASIS = np.random.default_rng(99).standard_normal((6, DIM))


def random_units(rng, n):
    """Unit vectors of few intrinsic dimensions (as text embeddings are clustered): HNSW at this
    size finds the exact neighbours, so results can be compared one to one."""
    v = (rng.standard_normal((n, 6)) @ _BASIS).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def top(index: Index, queries: np.ndarray, k: int = 10) -> list[list[int]]:
    return [[cid for cid, _ in index.query(q, k)] for q in queries]


def exact_top(kept: dict[int, np.ndarray], queries: np.ndarray, k: int = 10) -> list[list[int]]:
    ids = np.array(sorted(kept))
    mat = np.stack([kept[i] / np.linalg.norm(kept[i]) for i in ids])
    return [ids[np.argsort(-(mat @ (q / np.linalg.norm(q))), kind="stable")[:k]].tolist() for q in queries]


@pytest.fixture
def ram(monkeypatch, tmp_path):
    if snapshot.ram_root() is None:
        pytest.skip("no RAM-backed folder on this machine")
    made = []
    yield made
    for index in made:
        index.close()


@pytest.mark.parametrize("when", ["deleted after the graph was written", "graph written after the delete"])
def test_forgotten_vectors_and_ids_leave_no_trace_in_the_snapshot(ram, tmp_path, when):
    assert HNSW["sync_threshold"] <= 1000  # the graph below is written to its files by Chroma
    rng = np.random.default_rng(7)
    index = new_index()
    ram.append(index)
    canaries = canary_vectors(6)
    canary_ids = [CANARY_BASE + k for k in range(6)]
    kept = {}
    # canaries 0-2 early (in the written graph), 3-4 late (in Chroma's log only), 5 early and
    # then given a new vector after its deletion (a reused chunk id)
    early = random_units(rng, 1200)
    # (Chroma writes its graph at the end of a write once 1000 changes are unwritten)
    index.add([10_000 + i for i in range(1200)] + canary_ids[:3] + canary_ids[5:],
              np.concatenate([early, canaries[[0, 1, 2, 5]]]))
    kept.update({10_000 + i: early[i] for i in range(1200)})
    more = random_units(rng, 300)
    index.add([20_000 + i for i in range(300)], more)
    kept.update({20_000 + i: more[i] for i in range(300)})
    index.add(canary_ids[3:5], canaries[3:5])
    live = traces(index.folder, canary_ids, canaries)
    assert any("vector 0" in t for t in live) and any("vector 3" in t for t in live), \
        "the canaries are not in the RAM folder: the search proves nothing"

    index.delete(canary_ids)
    reused = random_units(rng, 1)[0]
    index.add([canary_ids[5]], reused[None])
    kept[canary_ids[5]] = reused
    if when == "graph written after the delete":
        later = random_units(rng, 1200)
        index.add([30_000 + i for i in range(1200)], later)
        kept.update({30_000 + i: later[i] for i in range(1200)})
    assert index.count() == len(kept)

    snap = tmp_path / "index.snap"
    vectors, _ = index.save(snap, key_for, "s1")
    assert vectors == len(kept)
    assert index.dead >= 1, "no element was scrubbed: the graph files were not what the test needs"
    # the live folder still has them (RAM only): what the scrub works on is a copy
    assert any("vector 0" in t for t in traces(index.folder, canary_ids[:1], canaries[:1]))
    out = opened(snap, tmp_path)
    left = traces(out, canary_ids[:5], canaries)  # id 5 is live again, with another vector
    left += [t for t in traces(out, [], canaries[5:]) if "vector" in t]
    assert left == []

    # Opened from that snapshot, the index is the full rebuild minus the forgotten ones.
    again = Index(FakeEmbedder(), folder=snapshot.new_ram_folder())
    ram.append(again)
    again.load(snap, key_for, {"embedder": FakeEmbedder.id, "seq": 0})
    assert again.ids() == set(kept)
    queries = np.concatenate([canaries / np.linalg.norm(canaries, axis=1, keepdims=True),
                              random_units(rng, 20), reused[None]])
    assert top(again, queries) == exact_top(kept, queries)
    assert not set(canary_ids[:5]) & {cid for row in top(again, queries, 50) for cid in row}


def test_a_scrubbed_snapshot_takes_further_changes_and_forgets(ram, tmp_path):
    """Opened from a scrubbed snapshot, the index goes on: new vectors, another forget, another
    snapshot, opened again; each generation equal to an exact search over what is kept."""
    rng = np.random.default_rng(11)
    index = new_index()
    ram.append(index)
    kept = {}
    first = random_units(rng, 2200)
    index.add(list(range(1, 2201)), first)
    kept.update({i + 1: first[i] for i in range(2200)})
    snap = tmp_path / "index.snap"
    for generation in range(3):
        doomed = [int(i) for i in rng.choice(sorted(kept), 150, replace=False)]
        index.delete(doomed)
        for cid in doomed:
            del kept[cid]
        start = 10_000 * (generation + 1)
        fresh = random_units(rng, 700)
        index.add(list(range(start, start + 700)), fresh)
        kept.update({start + i: fresh[i] for i in range(700)})
        index.save(snap, key_for, f"s{generation}")
        index.close()
        index = Index(FakeEmbedder(), folder=snapshot.new_ram_folder())
        ram.append(index)
        index.load(snap, key_for, {"embedder": FakeEmbedder.id, "seq": 0})
        assert index.ids() == set(kept), generation
        queries = random_units(rng, 15)
        assert top(index, queries) == exact_top(kept, queries), generation


def saved_memory(open_mem, n: int, seed: int, first=None):
    """A memory of *n* random six-word messages (after *first*(memory), if given), embedded and
    its index saved."""
    mem = open_mem()
    assert mem.wait_ready(30)
    if first is not None:
        first(mem)
    rng = np.random.default_rng(seed)
    words = [f"w{k}" for k in range(300)]
    mem.import_messages([msg(i, " ".join(rng.choice(words, 6))) for i in range(n)])
    mem.embed_pending()
    mem._catch_up()
    assert mem.save_index()
    return mem


def test_a_forget_neither_blocks_search_nor_returns_the_forgotten_chunk(open_mem, monkeypatch, tmp_path):
    # the canary first: it is in the graph Chroma writes once 1000 changes are unwritten
    mem = saved_memory(open_mem, 1200, seed=4, first=plant_canary)
    probe = canary_vector()
    assert CANARY_ID in [cid for cid, _ in mem.index.query(probe, 10)]

    def no_compaction(self):
        raise AssertionError("a forget rebuilt the graph")

    monkeypatch.setattr(Index, "_compact", no_compaction)
    seen, errors = [], []
    real_scrub = chroma_scrub.scrub

    def scrub(folder):
        # while the copy is scrubbed (before it is sealed) a search goes through, without the
        # forgotten chunk, by meaning and hybrid
        done = threading.Event()

        def search():
            try:
                seen.append([cid for cid, _ in mem.index.query(probe, 10)])
                seen.append([h.chunk_id for h in mem.search("canary note", limit=10, mode="hybrid").hits])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                done.set()

        threading.Thread(target=search, daemon=True).start()
        assert done.wait(60), "a search waited for the scrub"
        return real_scrub(folder)

    monkeypatch.setattr(chroma_scrub, "scrub", scrub)
    assert mem.forget(app="notes") == 1
    assert not errors, errors
    assert len(seen) == 2 and seen[0] and CANARY_ID not in seen[0] + seen[1]
    assert mem.index.ids() == stored_ids(mem)
    assert mem.index.dead >= 1  # the graph keeps it, marked deleted, in RAM
    out = opened_with(mem, tmp_path)
    assert traces(out, [CANARY_ID], probe[None]) == []
    mem.close()
    mem = open_mem()
    assert mem.wait_ready(60) and mem.index.source == "snapshot"
    assert CANARY_ID not in mem.index.ids() and mem.index.ids() == stored_ids(mem)
    assert CANARY_ID not in [cid for cid, _ in mem.index.query(probe, 10)]


def opened_with(mem, tmp_path: Path) -> Path:
    out = tmp_path / f"opened-{secrets.token_hex(4)}"
    out.mkdir()
    snapshot.read(mem.layout.index_snapshot, out, mem._key_for)
    return out


def test_a_copy_the_scrub_cannot_vouch_for_gets_a_fresh_graph(ram, tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    index = new_index()
    ram.append(index)
    canaries = canary_vectors(2)
    base = random_units(rng, 1100)
    index.add(list(range(1, 1101)) + [CANARY_BASE, CANARY_BASE + 1], np.concatenate([base, canaries]))
    index.delete([CANARY_BASE, CANARY_BASE + 1])
    real, calls = chroma_scrub._load_map, []

    def unknown_map(path):
        calls.append(path)
        if len(calls) == 1:
            raise chroma_scrub.Unsure("an id map of another layout")
        return real(path)

    monkeypatch.setattr(chroma_scrub, "_load_map", unknown_map)
    snap = tmp_path / "index.snap"
    assert index.save(snap, key_for, "s1")[0] == 1100
    assert len(calls) == 2  # the copy of the fresh graph (1,100 vectors, written) was scrubbed
    assert index.dead == 0
    assert traces(opened(snap, tmp_path), [CANARY_BASE, CANARY_BASE + 1], canaries) == []
    assert index.ids() == set(range(1, 1101))


def test_a_snapshot_mostly_of_forgotten_vectors_is_rebuilt_at_unlock(open_mem, monkeypatch):
    from mneme.core import index as index_module

    monkeypatch.setattr(index_module, "DEAD_REBUILD", 10)
    mem = saved_memory(open_mem, 1100, seed=6)
    with mem.store.transaction() as db:
        sources = [sid for (sid,) in db.execute("SELECT id FROM sources ORDER BY id")]
    mem.forget(source_ids=sources[:700])
    assert 300 < len(stored_ids(mem)) < 500
    assert mem.index.dead > mem.index.count() and mem.index.dead > 10
    mem.close()
    mem = open_mem()
    assert mem.wait_ready(60)
    assert mem.index.source == "rebuilt" and "forgotten" in mem.snapshot_refused
    assert mem.index.ids() == stored_ids(mem)
    mem.close()
    mem = open_mem()
    assert mem.wait_ready(60) and mem.index.source == "snapshot" and mem.index.dead == 0


def test_an_idle_index_lets_go_of_its_graph_and_opens_it_again_when_used(open_mem, monkeypatch):
    """(In this file for its fixtures: real Chroma in a RAM folder.) The release is by the idle
    timer; a search, a change, a status and a save after it behave as before."""
    from mneme.core import memory as memory_module

    monkeypatch.setattr(memory_module, "IDLE_RELEASE", 0.5)
    mem = filled(open_mem, n=300)
    mem.wait_caught_up(60)
    assert mem.save_index()  # the journal is applied: a save after the release has nothing to add
    probe = mem.embedder.embed(["lighthouse keeper note 3"])[0]
    expected = mem.index.query(probe, 5)
    index = mem.index
    assert index.idle_release == 0.5
    deadline = threading.Event()
    for _ in range(100):
        if index.released:
            break
        deadline.wait(0.05)
    assert index.released, "the idle timer did not let the graph go"
    assert index._col is None and index._client is None  # the client is closed: nothing holds the graph
    status = mem.index_status()
    assert status["released"] and status["vectors"] == len(stored_ids(mem)) and status["resident_bytes"] == 0
    assert index.released  # a status does not open it again
    assert mem.save_index() and index.released  # nor does a snapshot
    reloads = index.reloads
    mem.prepare_search()  # the overlay opened: it is opened on a thread of its own
    for _ in range(200):
        if index.reloads > reloads:
            break
        deadline.wait(0.01)
    assert index.reloads == reloads + 1
    got = index.query(probe, 5)  # (among equal similarities the order may differ)
    assert [round(sim, 5) for _, sim in got] == [round(sim, 5) for _, sim in expected]
    assert got[0] == expected[0]
    index.release()
    mem.import_messages([msg(5000, "harbour crane at dawn")])
    mem.embed_pending()  # a change opens it again too
    assert index.reloads == reloads + 2
    assert index.ids() == stored_ids(mem)
