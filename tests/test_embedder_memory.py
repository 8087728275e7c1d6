"""The embedder's memory levers (issue 15, second round) change no vector: onnxruntime's arena and
memory pattern off, batches cut to a token budget, the session made on first use, let go when idle
and made again. Real MiniLM."""

import threading
import time

import numpy as np

from mneme.models import embedder as embedder_module
from mneme.models.embedder import BATCH, MiniLMEmbedder

WORDS = "harbour lantern invoice violin meadow kettle orchard pepper tide keeper ledger".split()
# Short and long (past the 256-token limit) texts, more than one batch of them.
TEXTS = ([f"note {i}: " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(5)) for i in range(BATCH + 5)]
         + [" ".join(WORDS[(i * j) % len(WORDS)] for j in range(300)) for i in range(6)] + [""])


def test_the_lean_settings_and_a_session_made_again_give_identical_vectors():
    lean = MiniLMEmbedder(idle_release=0)
    plain = MiniLMEmbedder(idle_release=0, lean=False)  # onnxruntime's defaults, as before
    assert not lean.loaded and lean.loads == 0  # nothing is loaded until something is embedded
    first = lean.embed(TEXTS)
    assert first.shape == (len(TEXTS), 384) and np.isfinite(first).all()
    assert np.array_equal(first, plain.embed(TEXTS))
    assert lean.release() and not lean.loaded
    again = lean.embed(TEXTS)
    assert lean.loads == 2 and np.array_equal(first, again)
    # A text's vector does not depend on its batch (lean batches hold at most TOKEN_BUDGET tokens).
    alone = np.stack([plain.embed([t])[0] for t in TEXTS])
    assert np.array_equal(first, alone)


def test_the_session_is_let_go_when_idle_and_made_again_on_use():
    emb = MiniLMEmbedder(idle_release=0.3)
    vector = emb.embed(["the lighthouse keeper's ledger"])
    assert emb.loaded
    gone = threading.Event()
    for _ in range(200):  # the idle timer lets it go (polled, up to 20 s)
        if not emb.loaded:
            gone.set()
            break
        gone.wait(0.1)
    assert gone.is_set(), "the session was not let go after its idle period"
    assert np.array_equal(emb.embed(["the lighthouse keeper's ledger"]), vector)
    assert emb.loads == 2


def test_the_session_is_not_let_go_while_it_embeds(monkeypatch):
    emb = MiniLMEmbedder(idle_release=0)
    inside, go_on = threading.Event(), threading.Event()
    real = MiniLMEmbedder._embed_batch

    def held(self, session, texts):
        inside.set()
        go_on.wait(60)
        return real(self, session, texts)

    monkeypatch.setattr(MiniLMEmbedder, "_embed_batch", held)
    out = []
    th = threading.Thread(target=lambda: out.append(emb.embed(["a text"])))
    th.start()
    assert inside.wait(60)
    assert not emb.release() and emb.loaded  # busy: kept
    go_on.set()
    th.join(60)
    assert out and out[0].shape == (1, 384)
    assert emb.release() and not emb.loaded


def test_the_heap_is_trimmed_where_glibc_is():
    import platform

    from mneme.core import heap

    assert heap.trim() is (platform.libc_ver()[0] == "glibc")
    assert embedder_module.trim_heap is heap.trim


def test_a_session_let_go_is_made_again_ahead_of_a_search(open_mem):
    e = MiniLMEmbedder(idle_release=0)
    e.embed(["warm"])
    assert e.release() and not e.loaded
    mem = open_mem(embedder=e)
    mem.prepare_search()  # the overlay opened: the session is made on a thread of its own
    deadline = time.monotonic() + 60
    while not e.loaded and time.monotonic() < deadline:
        time.sleep(0.05)
    assert e.loaded and e.loads == 2
    e.embed(["typed"])
    assert e.loads == 2  # the search did not make it again
