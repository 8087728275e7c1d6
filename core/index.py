"""The vector index: a Chroma collection of vectors and opaque chunk ids (no text, no metadata).

Chroma keeps vectors in plaintext files when it persists, so Mneme's index is *derived* from the
encrypted store and lives in one of three places, behind the same ``Index`` interface:

- ``folder``: a ``PersistentClient`` in a RAM-backed folder (``snapshot.new_ram_folder``), saved
  as an encrypted snapshot (``snapshot.write``) and opened from it at the next unlock;
- neither: an ``EphemeralClient`` in process memory (no RAM folder on this machine), filled from
  the store at every unlock;
- ``url``: a Chroma server (``chromadb.HttpClient``), for a memory that outgrows one machine; the
  server keeps the collection on its own (encrypted) disk.

Keyword search works while it warms up. A forget deletes ids from the live graph at once (hnswlib
marks them; search stops returning them) and the copy each snapshot is sealed from is scrubbed of
their floats and ids (``chroma_scrub``), so no fresh graph is built for it.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import chromadb
import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.config import Settings
from chromadb.utils.embedding_functions import register_embedding_function

from mneme.core import chroma_scrub, heap, snapshot
from mneme.core import embedding as embedding_registry
from mneme.core.embedding import Embedder
from mneme.core.errors import UserError

log = logging.getLogger(__name__)
ADD_BATCH = 4000
COLLECTION = "mneme-index"
# A forgotten vector stays in the graph as a dead (zeroed, marked) element; a snapshot with more
# dead elements than live ones, and more than this, is rebuilt at unlock instead of opened.
DEAD_REBUILD = 10_000
# Seconds without a search or change after which an index in a RAM folder closes its Chroma client,
# letting go of the graph it holds in the process (its files stay in the RAM folder); the next use,
# or ``prepare`` when the overlay opens, opens it again (as the embedder's session, 5 minutes).
IDLE_RELEASE = 300.0
SETTINGS = dict(anonymized_telemetry=False, allow_reset=False)
# HNSW parameters, chosen by measurement (BENCHMARKS.md, "Encrypted persistent index"). The
# vectors themselves (384 float32) are ~90 % of the index's memory, so fewer links save little
# and cost recall. Chroma writes its HNSW files every ``sync_threshold`` changes and keeps the
# changes since in its SQLite log, which it replays into the graph when it opens: a larger
# threshold makes adding barely faster and opening a snapshot up to a full rebuild slower.
HNSW = {"space": "cosine", "max_neighbors": 16, "ef_construction": 100, "ef_search": 100,
        "batch_size": 100, "sync_threshold": 1000}


@register_embedding_function
class MnemeEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma's view of a Mneme embedder (offline; never downloads anything)."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.embedder.embed(list(input)))

    @staticmethod
    def name() -> str:
        return "mneme"

    def get_config(self) -> dict[str, Any]:
        return {"embedder": self.embedder.id}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "MnemeEmbeddingFunction":
        return MnemeEmbeddingFunction(embedding_registry.create(config["embedder"]))

    def default_space(self) -> str:
        return "cosine"


_client_lock = threading.Lock()
_client = None


def _ephemeral():
    global _client
    with _client_lock:
        if _client is None:
            _client = chromadb.EphemeralClient(Settings(**SETTINGS))
        return _client


def parse_server(url: str) -> tuple[str, int]:
    """host, port of a Chroma server URL, which must be http(s)://host:port."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"index server {url!r} is not a URL like http://127.0.0.1:8000",
                        "set index_server to http://HOST:PORT of a Chroma server")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 8000)


def _stale(meta: dict, expect: dict) -> str | None:
    """Why a saved index may not be used with the store's checkpoint *expect*; None if it may."""
    if meta.get("embedder") != expect.get("embedder"):
        return "it was made with another embedder"
    if not isinstance(meta.get("seq"), int) or meta["seq"] < expect.get("seq", 0):
        return "it is older than the latest one (stale)"
    return None  # the same position or a later one: every change up to it is in it


class Index:
    """ANN over chunk vectors of one embedder. Not open until ``open()`` (or ``load()``): adds and
    deletes before then are ignored, as the store's journal brings the index up to date."""

    def __init__(self, embedder: Embedder, folder: Path | None = None, url: str | None = None,
                 name: str | None = None):
        self.embedder = embedder
        self.folder = folder  # RAM-backed folder of a persistent local index
        self.url = url        # a Chroma server
        self._fn = MnemeEmbeddingFunction(embedder)
        self._name = name or (COLLECTION if folder is not None or url else f"mneme-{uuid.uuid4().hex}")
        self._client = None
        self._col = None
        self._lock = threading.RLock()
        self.seq = 0                      # the journal position this index reflects
        self.loaded = 0
        self.total = 0
        self.source = ""                  # how it was filled: "snapshot" | "rebuilt" | "server"
        self.ready = threading.Event()    # vector search may be used
        self.settled = threading.Event()  # warm-up has ended, ready or failed
        self.error: str | None = None     # why warm-up failed (keyword search still works)
        self.bad: list[int] = []          # chunk ids whose stored vectors are malformed
        self.dead = 0                     # forgotten elements the graph keeps (zeroed in snapshots)
        self.idle_release = 0.0           # see IDLE_RELEASE (0: the graph is kept)
        self._released = False            # the client is closed while idle; its files are in the folder
        self._released_count = 0
        self._last = time.monotonic()
        self._timer: threading.Timer | None = None
        self.reloads = 0                  # times it was opened again after a release
        self.reload_seconds = 0.0         # how long the last of them took

    @property
    def kind(self) -> str:
        return "server" if self.url else "ram" if self.folder is not None else "memory"

    # -- opening and closing ------------------------------------------------------------------
    def _connect(self):
        if self.url:
            host, port = parse_server(self.url)
            return chromadb.HttpClient(host=host, port=port, ssl=self.url.startswith("https"),
                                       settings=Settings(**SETTINGS))
        if self.folder is not None:
            return chromadb.PersistentClient(path=str(self.folder), settings=Settings(**SETTINGS))
        return _ephemeral()

    def open(self, fresh: bool = True) -> None:
        """Open the collection; *fresh* starts it empty (a rebuild), else the one that is there
        (a snapshot just unpacked into the folder, or the server's)."""
        with self._lock:
            self._client = self._connect()
            self._released = False
            if fresh:
                try:
                    self._client.delete_collection(self._name)
                except Exception:  # noqa: BLE001 - not there: nothing to delete
                    pass
                self._col = self._client.create_collection(
                    self._name, embedding_function=self._fn, configuration={"hnsw": dict(HNSW)})
            else:
                self._col = self._client.get_collection(self._name, embedding_function=self._fn)

    def load(self, path: Path, key_for: snapshot.KeyFor, expect: dict) -> dict:
        """Open the index from where it was saved: the encrypted snapshot *path* (RAM folder) or
        the server's collection; returns its record (snapshot id, seq). Raises SnapshotRefused
        when it is missing, damaged, altered, of another embedder, or older than *expect* (the
        store's checkpoint). A newer one is the one a kill kept from being named: the journal
        from the checkpoint on is still there, so it is used."""
        if self.url:
            return self._load_server(expect)
        if self.folder is None:
            raise snapshot.SnapshotRefused("there is no RAM-backed folder to open it in")
        meta = snapshot.read(path, self.folder, key_for)
        problem = _stale(meta, expect)
        if not problem and meta.get("dead", 0) > max(DEAD_REBUILD, meta.get("vectors", 0)):
            problem = f"most of its graph ({meta['dead']} elements) is forgotten vectors, rebuilt to let them go"
        if problem:
            snapshot._empty(self.folder)
            raise snapshot.SnapshotRefused(problem)
        try:
            self.open(fresh=False)
            count = self._col.count()
        except Exception as exc:  # noqa: BLE001 - Chroma refused what it was given
            self._drop_client()
            snapshot._empty(self.folder)
            raise snapshot.SnapshotRefused(f"Chroma cannot open it ({type(exc).__name__}: {exc})") from None
        if count != meta.get("vectors"):
            self._drop_client()
            snapshot._empty(self.folder)
            raise snapshot.SnapshotRefused(f"it holds {count} vectors, not {meta.get('vectors')}")
        self.seq = int(meta["seq"])
        self.loaded = count
        self.dead = int(meta.get("dead", 0))
        return meta

    def _load_server(self, expect: dict) -> dict:
        try:
            self.open(fresh=False)
            mark = self._col.metadata or {}
            count = self._col.count()
        except Exception as exc:  # noqa: BLE001 - no such collection, or the server refused
            self._drop_client()
            raise snapshot.SnapshotRefused(f"the server's collection cannot be used ({type(exc).__name__})") from None
        meta = {"snapshot": mark.get("mneme_checkpoint"), "seq": mark.get("mneme_seq"),
                "embedder": mark.get("mneme_embedder"), "vectors": count}
        problem = _stale(meta, expect)
        if problem:
            self._drop_client()
            raise snapshot.SnapshotRefused(f"the server's collection: {problem}")
        self.seq = int(meta["seq"])
        self.loaded = count
        return meta

    def save(self, path: Path, key_for: snapshot.KeyFor, snapshot_id: str) -> tuple[int, int]:
        """Save the index (the caller has brought it up to ``seq``): as an encrypted snapshot of
        the RAM folder, or, on a server, as a mark on its collection. Returns (vectors, bytes).
        A local client is closed first so that Chroma writes out every buffered vector, the
        folder is copied (to another RAM folder) and opened again: searches wait only for that.
        The copy is scrubbed of forgotten vectors and ids (``chroma_scrub``) and sealed; a copy
        the scrub cannot vouch for makes a fresh graph first (``_compact``, searches wait)."""
        with self._lock:
            if (self._col is None and not self._released) or self.kind == "memory":
                raise RuntimeError("only an open index in a RAM folder or on a server can be saved")
            if self.url:
                count = self._col.count()
                self._col.modify(metadata={"mneme_checkpoint": snapshot_id, "mneme_seq": self.seq,
                                           "mneme_embedder": self.embedder.id})
                return count, 0
        meta = {"snapshot": snapshot_id, "seq": self.seq, "embedder": self.embedder.id, "dim": self.embedder.dim}
        for attempt in (1, 2):
            copy, meta["vectors"] = self._copy()
            try:
                try:
                    done = chroma_scrub.scrub(copy)
                except chroma_scrub.Unsure as exc:
                    if attempt == 2:
                        raise RuntimeError(f"a fresh graph could not be scrubbed either: {exc}") from None
                    log.warning("the index copy cannot be scrubbed (%s); building a fresh graph", exc)
                    self._compact()
                    continue
                if done.live != meta["vectors"]:
                    raise RuntimeError(f"the copy holds {done.live} ids, the index {meta['vectors']}")
                self.dead = meta["dead"] = done.dead
                return meta["vectors"], snapshot.write(path, copy, key_for, meta)
            finally:
                shutil.rmtree(copy, ignore_errors=True)
        raise AssertionError("unreachable")

    def _copy(self) -> tuple[Path, int]:
        """A copy of the RAM folder with every change written out, and the vectors in it."""
        with self._lock:
            if self._released:  # closed already: nothing to write out, and it stays let go
                return snapshot.copy_folder(self.folder), self._released_count
            count = self._col.count()
            self._drop_client()
            try:
                return snapshot.copy_folder(self.folder), count
            finally:
                self.open(fresh=False)

    def _compact(self) -> None:
        """Build the RAM folder anew from the vectors the index still holds (no dead element is
        left in it). Done with the index locked: searches wait for it, as long as a rebuild
        (BENCHMARKS.md); only when a copy cannot be scrubbed."""
        with self._lock:
            self._live()
            keep_ids: list[str] = []
            pages = []
            n = self._col.count()
            for offset in range(0, n, 10000):
                got = self._col.get(limit=10000, offset=offset, include=["embeddings"])
                keep_ids += got["ids"]
                pages.append(np.asarray(got["embeddings"], dtype=np.float32).reshape(len(got["ids"]), -1))
            keep = np.concatenate(pages) if pages else np.zeros((0, self.embedder.dim), np.float32)
            del pages
            self._drop_client()
            snapshot._empty(self.folder)
            self.open(fresh=True)
            for start in range(0, len(keep_ids), ADD_BATCH):
                self._col.add(ids=keep_ids[start:start + ADD_BATCH], embeddings=keep[start:start + ADD_BATCH])
            self.dead = 0

    def rename(self, name: str) -> None:
        """Give a server collection a new name (its name follows the memory's key)."""
        with self._lock:
            if self._col is not None and self.url and name != self._name:
                self._col.modify(name=name)
            self._name = name

    def _drop_client(self) -> None:
        with self._lock:
            client, self._client, self._col = self._client, None, None
            if client is not None and self.kind != "memory":
                client.close()
                # chromadb 1.5's HTTP client (and its admin client) leave their pools open.
                for part in (client, getattr(client, "_admin_client", None)):
                    session = getattr(getattr(part, "_server", None), "_session", None)
                    if session is not None:
                        session.close()

    @property
    def is_open(self) -> bool:
        return self._col is not None or self._released

    # -- letting go of the graph while idle -------------------------------------------------------
    @property
    def released(self) -> bool:
        return self._released

    def _live(self):
        """The collection (the caller holds the lock), opened again if it was let go while idle
        (its graph is read by the first query); None when the index is not open."""
        if self._released:
            t = time.perf_counter()
            self.open(fresh=False)
            self.reloads += 1
            self.reload_seconds = time.perf_counter() - t
        return self._col

    def _used(self) -> None:
        """After a search or change: the idle clock starts again."""
        self._last = time.monotonic()
        if self.idle_release > 0 and self.kind == "ram" and (self._timer is None or not self._timer.is_alive()):
            self._arm(self.idle_release)

    def _arm(self, wait: float) -> None:
        self._timer = threading.Timer(wait, self._idle)
        self._timer.daemon = True
        self._timer.start()

    def _idle(self) -> None:
        self._timer = None
        if not self.release(idle_only=True) and self._col is not None and self.idle_release > 0:
            self._arm(max(0.05, self.idle_release - (time.monotonic() - self._last)))

    def release(self, idle_only: bool = False) -> bool:
        """Close the Chroma client of an index in a RAM folder, so that the process no longer
        holds its graph (the files stay; the next use opens them again). Not, with *idle_only*,
        before ``idle_release`` seconds without use."""
        with self._lock:
            if self.kind != "ram" or self._col is None:
                return False
            if idle_only and time.monotonic() - self._last < self.idle_release * 0.99:
                return False
            self._released_count = self._col.count()
            self._drop_client()
            self._released = True
        heap.trim()
        return True

    def prepare(self) -> None:
        """Open a let-go graph again now, on a thread of its own (a search is about to be typed)."""
        if self._released:
            threading.Thread(target=self._wake, name="mneme-index-prepare", daemon=True).start()

    def _wake(self) -> None:
        """Open it again and load the graph."""
        with self._lock:
            if not self._released:
                return
            t = time.perf_counter()
            self.read_graph()
            self.reload_seconds = time.perf_counter() - t
        self._used()

    def read_graph(self) -> None:
        """Have Chroma read the graph now: it reads the HNSW files at the first query, not when
        the collection is opened (at 1M vectors, seconds that the first search would wait)."""
        with self._lock:
            col = self._live()
            if col is not None and col.count():
                probe = np.zeros(self.embedder.dim, dtype=np.float32)
                probe[0] = 1.0
                col.query(query_embeddings=[probe], n_results=1, include=[])

    def mark_ready(self) -> None:
        self.error = None
        self.ready.set()
        self.settled.set()
        self._used()

    def mark_failed(self, why: str) -> None:
        self.error = why
        self.settled.set()

    # -- contents -------------------------------------------------------------------------------
    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        for start in range(0, len(ids), ADD_BATCH):
            part = ids[start:start + ADD_BATCH]
            with self._lock:
                col = self._live()
                if col is None:
                    return
                col.upsert(ids=[str(i) for i in part],
                           embeddings=np.asarray(vectors[start:start + ADD_BATCH], dtype=np.float32))
            self.loaded += len(part)
        self._used()

    def delete(self, ids: Sequence[int]) -> None:
        if ids:
            with self._lock:
                col = self._live()
                if col is None:
                    return
                for start in range(0, len(ids), ADD_BATCH):
                    col.delete(ids=[str(i) for i in ids[start:start + ADD_BATCH]])
            self._used()

    def count(self) -> int:
        with self._lock:
            if self._released:  # (a status does not open it again)
                return self._released_count
            return self._col.count() if self._col is not None else 0

    def ids(self) -> set[int]:
        out: set[int] = set()
        with self._lock:
            col = self._live()
            if col is None:
                return out
            n = col.count()
            for offset in range(0, n, 10000):
                got = col.get(limit=10000, offset=offset, include=[])
                out.update(int(i) for i in got["ids"])
        return out

    def vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The vectors the index holds for these chunk ids (as Chroma gives them back)."""
        out: dict[int, np.ndarray] = {}
        with self._lock:
            col = self._live()
            if col is None:
                return out
            for start in range(0, len(ids), ADD_BATCH):
                got = col.get(ids=[str(i) for i in ids[start:start + ADD_BATCH]], include=["embeddings"])
                out.update((int(i), np.asarray(v, dtype=np.float32)) for i, v in zip(got["ids"], got["embeddings"]))
        return out

    def resident_bytes(self, vectors: int | None = None) -> int:
        """Memory the index holds in this process (or would, with *vectors*), estimated from the
        HNSW layout: per vector its floats, its links (2 x max_neighbors on level 0) and hnswlib's
        label and header, dead (forgotten) elements included; Chroma's own SQLite page cache is
        not counted."""
        if self.kind == "server" or (vectors is None and self._released):
            return 0
        per = self.embedder.dim * 4 + 2 * HNSW["max_neighbors"] * 4 + 4 + 8 + 16
        return ((self.count() + self.dead) if vectors is None else vectors) * per

    def query(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(chunk_id, cosine similarity) best first."""
        return self._query(k, query_embeddings=[np.asarray(vector, dtype=np.float32)])

    def query_text(self, text: str, k: int) -> list[tuple[int, float]]:
        """Through the registered embedding function, as Chroma would do it itself."""
        return self._query(k, query_texts=[text])

    def _query(self, k: int, **query) -> list[tuple[int, float]]:
        with self._lock:
            col = self._live()
            if col is None:
                return []
            # No count first: Chroma gives fewer than k, or none, by itself, and its count cost
            # 18 ms a query at 100k vectors and 160 ms at 1M, most of a vector query.
            res = col.query(n_results=max(1, k), include=["distances"], **query)
        self._used()
        return [(int(i), 1.0 - float(d)) for i, d in zip(res["ids"][0], res["distances"][0])]

    def close(self) -> None:
        """Let go of the collection; a RAM folder is removed (save first to keep it)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self.idle_release = 0.0
            self._released = False
            if self.kind == "memory" and self._col is not None:
                try:
                    _ephemeral().delete_collection(self._name)
                except Exception:  # noqa: BLE001 - already gone with the client
                    log.debug("index collection already deleted")
            self._col = None
            self._drop_client()
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
