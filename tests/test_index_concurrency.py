"""Searches go on while the index is saved (issue 15, second round): the snapshot is sealed from a
copy of the RAM folder, and after a forget the fresh graph is built beside the live one, with the
changes made meanwhile applied to it before it takes over.

Real SQLCipher store, real Chroma in a RAM-backed folder, real snapshot files. Each check runs a
search (and changes) on another thread at the moment the old code held the index's lock, and
fails if that thread is still waiting after a generous deadline (a deadlock guard, not a speed
target)."""

import os
import threading

from mneme.core import snapshot
from tests.conftest import msg
from tests.test_index_snapshot import (CANARY_ID, cache_home, files_with, filled, needles,  # noqa: F401
                                       plant_canary, stored_ids)

DEADLINE = 60.0


def on_another_thread(fn):
    """Run *fn* on another thread; its result, or AssertionError when it is still blocked."""
    out, errors = [], []

    def run():
        try:
            out.append(fn())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    th = threading.Thread(target=run)
    th.start()
    th.join(DEADLINE)
    assert not th.is_alive(), "the search waited for the snapshot to be written"
    if errors:
        raise errors[0]
    return out[0]


def test_a_search_runs_while_the_snapshot_is_sealed(open_mem, monkeypatch):
    mem = filled(open_mem, n=60)
    query = mem.embedder.embed(["lighthouse keeper note 5"])[0]
    expected = mem.index.query(query, 5)
    seen = []
    real_write = snapshot.write

    def write(path, folder, key_for, meta):
        assert folder != mem.index.folder  # sealed from a copy, not from the live folder
        seen.append(on_another_thread(lambda: mem.index.query(query, 5)))
        return real_write(path, folder, key_for, meta)

    monkeypatch.setattr(snapshot, "write", write)
    assert mem.save_index()
    assert seen  # (a background save may have come too; among equal similarities the order may differ)
    assert [round(sim, 5) for _, sim in seen[-1]] == [round(sim, 5) for _, sim in expected]
    assert {cid for cid, sim in seen[-1] if sim > 0.71} == {cid for cid, sim in expected if sim > 0.71}
    assert len(list(mem.index.folder.parent.glob(f"{snapshot.RAM_PREFIX}{os.getpid()}-*"))) == 1  # copy removed
    mem.close()


def test_a_forget_builds_the_fresh_graph_while_searches_and_changes_go_on(open_mem, isolated_home, tmp_path,
                                                                        monkeypatch):
    mem = filled(open_mem, n=80)
    plant_canary(mem)
    mem.embed_pending()
    mem._catch_up()
    assert mem.save_index()
    query = mem.embedder.embed(["lighthouse keeper note 5"])[0]
    late = mem.embedder.embed(["a late arrival about the harbour"])
    during = []
    real_sibling = snapshot.sibling_folder

    def sibling(folder):
        if not during:  # the first: the fresh graph's folder, made with the index unlocked
            def meanwhile():
                hits = mem.index.query(query, 5)
                mem.index.add([424242], late)         # an embedding that arrives meanwhile …
                mem.index.delete([CANARY_ID])         # … and a forget of the canary
                return hits
            during.append(on_another_thread(meanwhile))
        return real_sibling(folder)

    mem.import_messages([msg(900, "a note to forget")])
    mem.embed_pending()
    before = len(stored_ids(mem))
    doomed = [h.source_ids[0] for h in mem.search("a note to forget", limit=1, mode="keyword").hits]
    monkeypatch.setattr(snapshot, "sibling_folder", sibling)
    assert mem.forget(source_ids=doomed) == 1  # the next snapshot is of a fresh graph
    assert during and len(during[0]) == 5
    ids = mem.index.ids()
    assert 424242 in ids and CANARY_ID not in ids  # the changes made meanwhile are in the new graph
    assert len(stored_ids(mem)) < before
    assert ids == (stored_ids(mem) - {CANARY_ID}) | {424242}  # and nothing else changed
    out = tmp_path / "opened"
    out.mkdir()
    snapshot.read(isolated_home / "index.snap", out, mem._key_for)
    assert files_with(out, needles()[1:]) == []  # the canary forgotten meanwhile: not in the snapshot
    mem.close()
