"""Searches go on while the index is saved (issue 15, second round): the snapshot is sealed from a
copy of the RAM folder, not with the index locked.

Real SQLCipher store, real Chroma in a RAM-backed folder, real snapshot files. The check runs a
search on another thread at the moment the old code held the index's lock, and fails if that
thread is still waiting after a generous deadline (a deadlock guard, not a speed target)."""

import os
import threading

from mneme.core import snapshot
from tests.test_index_snapshot import cache_home, filled  # noqa: F401

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
