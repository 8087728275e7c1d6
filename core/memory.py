"""``Memory``: one unlocked home — store, index, embedder, settings — and what can be done with it.

This is the stable Python API the CLI, the GUI, the local API and the tests call.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from mneme.core import heap, keys, snapshot, vault
from mneme.core.config import Config
from mneme.core.embedding import Embedder
from mneme.core.errors import LockedError, UserError
from mneme.core.index import IDLE_RELEASE, Index
from mneme.core.paths import HomeLayout, resolve_home
from mneme.core.records import FrameIn, Message
from mneme.core.retrieval import Retriever, SearchResult
from mneme.core.store import Store

log = logging.getLogger(__name__)
EMBED_BATCH = 64
WARM_STALL_SECONDS = 60.0  # warm-up that loads nothing for this long is given up on
SNAPSHOT_AFTER = 5000  # index changes after which a new snapshot is written (also at lock and quit)
CATCH_UP_BATCH = 10_000
Progress = Callable[[int, int], None]  # (done, total)


class Memory:
    def __init__(self, layout: HomeLayout, store: Store, meta: keys.KeyMeta, config: Config,
                 embedder: Embedder | None):
        self.layout = layout
        self.home = layout.root
        self.store = store
        self.meta = meta
        self.config = config
        self.embedder = embedder
        self.index = self._make_index() if embedder is not None else None
        if self.index is not None:
            self.index.idle_release = IDLE_RELEASE  # its graph let go while idle (a RAM folder's)
        self.retriever = Retriever(store, self.index, embedder)
        self._warm_thread: threading.Thread | None = None
        self._embed_lock = threading.Lock()
        self._write_lock = threading.RLock()  # a store change and its index change, together
        self._sync_lock = threading.RLock()   # journal catch-up and snapshots, one at a time
        self._snap_thread: threading.Thread | None = None
        self._saved: tuple[str, int] | None = None  # (snapshot id, seq) on disk for this index
        self.snapshot_refused: str | None = None    # why the last snapshot was not used
        self._closed = threading.Event()

    def _make_index(self) -> Index:
        """In a RAM-backed folder (saved as an encrypted snapshot), on a Chroma server, or, when
        this machine has no RAM-backed folder, in process memory (rebuilt at every unlock)."""
        if self.config["index_server"]:
            return Index(self.embedder, url=self.config["index_server"], name=self._server_name())
        folder = snapshot.new_ram_folder()
        if folder is None:
            log.warning("no RAM-backed folder (XDG_RUNTIME_DIR or /dev/shm) here: the vector index "
                        "is kept in memory only and rebuilt from the store at every unlock")
        return Index(self.embedder, folder=folder)

    def _server_name(self) -> str:
        return "mneme-" + self.store.subkey(b"mneme index server collection", b"").hex()[:24]

    def _key_for(self, salt: bytes) -> bytes:
        return self.store.subkey(snapshot.PURPOSE, salt)

    # -- life cycle -----------------------------------------------------------------------------
    def warm(self, background: bool = True, catch_up: bool = True) -> None:
        """Make the vector index usable: open the encrypted snapshot and apply the journal of
        what changed since; with no snapshot, or one that cannot be trusted (damaged, altered,
        stale, another key), rebuild it from the stored vectors and save it. Then embed what has
        no vector yet.

        Malformed stored vectors are left out (``index.bad``; ``doctor`` repairs them). A failed
        warm-up is logged with its traceback and recorded in ``index.error``; keyword search keeps
        working and nothing waits on it for ever."""
        if self.index is None:
            return

        def run() -> None:
            try:
                with self._sync_lock:
                    restored = self._restore()
                    if not restored and not self._rebuild():
                        return  # closed mid-way
                    self._catch_up()
                    if restored and self.index.kind == "ram":
                        self.index.read_graph()  # ready for meaning search means its graph is read
                self.index.mark_ready()
                heap.trim()  # what opening it and replaying Chroma's log needed for a moment
            except Exception as exc:  # a failed warm-up leaves keyword search working
                if not self._closed.is_set():
                    log.exception("index warm-up failed")
                self.index.mark_failed(f"{type(exc).__name__}: {exc}")
                return
            finally:
                self.index.settled.set()  # also when closed mid-way: nobody waits for ever
            if not restored and self.index.kind != "memory":
                try:
                    self.save_index()  # the next unlock starts from here
                except Exception:
                    log.exception("the rebuilt vector index could not be saved (it is again at lock)")
            if catch_up:
                try:
                    self.embed_pending()
                except Exception:
                    if not self._closed.is_set():
                        log.exception("catch-up embedding failed")
            self.tidy_keywords()

        if background:
            self._warm_thread = threading.Thread(target=run, name="mneme-index-warm", daemon=True)
            self._warm_thread.start()
        else:
            run()

    def tidy_keywords(self) -> None:
        """Merge the keyword index into one segment when enough is new since it last was
        (``Store.merge_keywords``); after the warm-up, in its thread. Stops at lock."""
        try:
            if self.store.keyword_merge_due():
                t = time.perf_counter()
                steps = self.store.merge_keywords(stop=self._closed)
                if steps is not None:
                    log.info("keyword index merged in %d steps, %.1f s", steps, time.perf_counter() - t)
        except Exception:
            if not self._closed.is_set():
                log.exception("merging the keyword index failed (keyword search works as before)")

    def _restore(self) -> bool:
        """Open the index from the checkpoint the store names; False when there is none to trust."""
        path = self.layout.index_snapshot
        snapshot.clean_leftovers(path)
        if self.index.kind == "memory":
            return False
        point = self.store.checkpoint()
        if point is None or point["embedder"] != self.embedder.id:
            if point is not None or path.exists():
                self._distrust("it was made for another embedder" if point else "no checkpoint names it")
            return False
        self.index.total = point["vectors"]  # (for progress; counting the stored vectors took 1-3 s at 1M)
        try:
            meta = self.index.load(path, self._key_for, point)
        except snapshot.SnapshotRefused as exc:
            self._distrust(str(exc))
            return False
        if meta["snapshot"] != point["snapshot"]:  # written, then killed before it was named
            self.store.set_checkpoint(self.embedder.id, meta["snapshot"], meta["seq"], meta["vectors"],
                                      path.stat().st_size if self.index.kind == "ram" else 0)
        self.index.source = "server" if self.index.kind == "server" else "snapshot"
        self._saved = (meta["snapshot"], meta["seq"])
        return True

    def _distrust(self, why: str) -> None:
        self.snapshot_refused = why
        log.warning("the saved vector index was not used (%s); rebuilding it from the store", why)
        self.store.drop_checkpoint()
        if self.index.kind == "ram":
            snapshot.remove(self.layout.index_snapshot)

    def _rebuild(self) -> bool:
        """Fill a fresh index from every stored vector; False when closed mid-way."""
        head = self.store.journal_head()  # changes after this are applied by the catch-up
        self.index.total = self.store.counts(self.embedder.id)["embedded"]
        self.index.open(fresh=True)
        self.index.seq = head
        bad: list[int] = []
        for ids, vectors in self.store.iter_embeddings(self.embedder.id, dim=self.embedder.dim, bad=bad):
            if self._closed.is_set():
                return False
            self.index.add(ids, vectors)
        self.index.bad = bad
        if bad:
            log.warning("%d stored vectors are malformed and were left out of the index", len(bad))
        self.index.source = "rebuilt"
        self.store.trim_journal(head)
        return True

    def _catch_up(self) -> int:
        """Apply the journal after ``index.seq``: each chunk named gets the vector the store has
        for it now, or leaves the index when it has none. Returns how many were applied."""
        done = 0
        with self._sync_lock:
            while not self._closed.is_set():
                rows = self.store.journal_since(self.index.seq, CATCH_UP_BATCH)
                if not rows:
                    break
                with self._write_lock:
                    changed = {cid for _, cid in rows}
                    have, vectors = self.store.vectors_of(self.embedder.id, changed, self.embedder.dim)
                    if have:
                        self.index.add(have, np.stack(vectors))
                    gone = sorted(changed - set(have))
                    self.index.delete(gone)
                    self.index.seq = rows[-1][0]
                done += len(changed)
        return done

    def save_index(self) -> bool:
        """Write the index as a new encrypted snapshot (or mark the server's collection) and make
        it the store's checkpoint. False when there is nothing to save it as."""
        if self.index is None or self.index.kind == "memory" or not self.index.ready.is_set():
            return False
        with self._sync_lock:
            self._catch_up()
            sid = secrets.token_hex(16)
            vectors, size = self.index.save(self.layout.index_snapshot, self._key_for, sid)
            self.store.set_checkpoint(self.embedder.id, sid, self.index.seq, vectors, size)
            self._saved = (sid, self.index.seq)
        heap.trim()
        return True

    def _unsaved(self) -> int:
        """Index changes not in the snapshot on disk (-1: there is no snapshot of this index)."""
        if self._saved is None:
            return -1
        return self.store.journal_head() - self._saved[1]

    def _save_soon(self) -> None:
        """After enough change, a snapshot in the background (one at a time)."""
        unsaved = self._unsaved()
        if (0 <= unsaved < SNAPSHOT_AFTER) or self.index is None or self.index.kind == "memory":
            return
        if self._snap_thread is not None and self._snap_thread.is_alive():
            return

        def run() -> None:
            try:
                if not self._closed.is_set():
                    self.save_index()
            except Exception:
                log.exception("the vector index snapshot could not be written (it is again at lock)")

        self._snap_thread = threading.Thread(target=run, name="mneme-index-snapshot", daemon=True)
        self._snap_thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once vector search is ready; False on timeout or when warm-up failed."""
        if self.index is None:
            return False
        self.index.settled.wait(timeout)
        return self.index.ready.is_set()

    def wait_index(self, on_progress: Progress | None = None, stall: float = WARM_STALL_SECONDS) -> bool:
        """Wait for warm-up to end while it makes progress. True when vector search is ready;
        False when it failed, was never started, or loaded nothing for *stall* seconds (then
        ``index_problem`` says why). Keyword search works either way."""
        if self.index is None:
            return False
        last, since = -1, time.monotonic()
        while not self.index.settled.wait(0.1):
            if on_progress:
                on_progress(self.index.loaded, self.index.total)
            if self._warm_thread is None or not self._warm_thread.is_alive():
                break
            if self.index.loaded != last:
                last, since = self.index.loaded, time.monotonic()
            elif time.monotonic() - since > stall:
                log.warning("index warm-up made no progress for %.0f s", stall)
                break
        return self.index.ready.is_set()

    def backlog(self) -> int:
        """Text chunks that have no vector from this embedder yet."""
        if self.embedder is None:
            return 0
        counts = self.store.counts(self.embedder.id)
        return counts["chunks"] - counts["embedded"]

    def index_problem(self) -> str | None:
        """Why vector search is not (fully) available, in a person's words; None when it is."""
        if self.index is None:
            return None
        if self.index.error:
            return f"the vector index could not be loaded ({self.index.error}); searching by keyword only"
        if not self.index.ready.is_set():
            return (f"the vector index is still loading ({self.index.loaded} of {self.index.total}); "
                    "searching by keyword only")
        if self.index.bad:
            return (f"{len(self.index.bad)} stored vectors are malformed and were left out of the index; "
                    "a doctor run repairs them")
        return None

    def wait_caught_up(self, timeout: float | None = None) -> bool:
        """Wait for warm-up and catch-up embedding to finish."""
        if self._warm_thread is not None:
            self._warm_thread.join(timeout)
            return not self._warm_thread.is_alive()
        return True

    @property
    def closed(self) -> bool:
        """The memory is locked: its store is closed and its key out of RAM."""
        return self._closed.is_set()

    def close(self) -> None:
        """Lock: save the index as a snapshot when it changed, remove its RAM folder, close the
        store. A failed save is logged; the next unlock rebuilds the index from the store."""
        self._closed.set()
        self.retriever.close()
        if self._warm_thread is not None:
            self._warm_thread.join()
        if self._snap_thread is not None:
            self._snap_thread.join()
        if self.index is not None:
            try:
                if self._unsaved() != 0:
                    self._closed.clear()  # the catch-up below must run to the end
                    try:
                        self.save_index()
                    finally:
                        self._closed.set()
            except Exception:
                log.exception("the vector index snapshot could not be written at lock; "
                              "the next unlock rebuilds it from the store")
            self.index.close()
        self.store.close()

    def __enter__(self) -> "Memory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------------
    def import_messages(self, messages: Sequence[Message], progress: Progress | None = None,
                        kind: str = "chat") -> tuple[int, int]:
        """All-or-nothing: every message is stored in one transaction, or none is."""
        done = 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(done, len(messages))

        return self.store.add_messages(messages, kind=kind, progress=step)

    def embed_pending(self, progress: Progress | None = None,
                      cancel: threading.Event | None = None) -> int:
        """Embed chunks that have no vector from this embedder yet; resumable at any point."""
        if self.embedder is None:
            return 0
        with self._embed_lock:
            counts = self.store.counts(self.embedder.id)
            total, done = counts["chunks"] - counts["embedded"], 0
            while not (cancel and cancel.is_set()) and not self._closed.is_set():
                batch = self.store.chunks_without_embedding(self.embedder.id, EMBED_BATCH)
                if not batch:
                    break
                vectors = self.embedder.embed([c.embed_text for c in batch])
                with self._write_lock:  # a forget cannot come between the two
                    self.store.put_embeddings(self.embedder.id, [(c.id, v) for c, v in zip(batch, vectors)])
                    if self.index is not None:
                        self.index.add([c.id for c in batch], vectors)
                done += len(batch)
                if progress:
                    progress(done, max(total, done))
        if done and self.index is not None and self.index.ready.is_set():
            self._save_soon()
        return done

    def add_frame(self, frame: FrameIn) -> int | None:
        """Store a captured frame; it is keyword-searchable at once and embedded right after."""
        sid = self.store.add_frame(frame)
        if sid is not None and self.index is not None and self.index.ready.is_set():
            self.embed_pending()
        return sid

    def apply_retention(self, now: float | None = None) -> int:
        """Delete frames past the retention days or size budget (whichever bites first)."""
        days, gb = self.config["retention_days"], self.config["retention_gb"]
        older = (now or time.time()) - days * 86400 if days else None
        doomed = self.store.oldest_frames(older, int(gb * 1e9) if gb else None)
        return self.forget(source_ids=doomed) if doomed else 0

    def forget(self, since: float | None = None, until: float | None = None,
               app: str | None = None, source_ids: Sequence[int] | None = None) -> int:
        """Delete for good: from the store (freed pages zeroed, keyword terms removed, the WAL
        checkpointed and truncated) and from the index. *app* is an exact app or conversation name.
        Raises UserError, after deleting, when another process keeps old copies alive."""
        with self._write_lock:
            chunk_ids = self.store.forget(since, until, app, source_ids)
            stale = self.store.take_relinked()
            if self.index is not None:
                self.index.delete(chunk_ids + stale)
        if chunk_ids or stale:
            self._forget_in_snapshot()
        self.store.scrub()
        return len(chunk_ids)

    def _forget_in_snapshot(self) -> None:
        """No saved index may keep what was just forgotten: open it if it is not open yet (the
        journal applies the forget), then save it again; when that fails, remove the snapshot
        (the next unlock rebuilds)."""
        if self.index is None or self.index.kind == "memory":  # nothing here can update it
            if self.layout.index_snapshot.exists() or self.store.checkpoint():
                self.store.drop_checkpoint()
                snapshot.remove(self.layout.index_snapshot)
            return
        try:
            if not self.index.settled.is_set() and self._warm_thread is None:
                self.warm(background=False, catch_up=False)
            elif not self.index.ready.is_set():
                self.wait_index()
            if self.save_index():
                return
        except Exception:
            log.exception("no new index snapshot after a forget; removing the old one")
        with self._sync_lock:
            self.store.drop_checkpoint()
            self._saved = None
            if self.index.kind == "ram":
                snapshot.remove(self.layout.index_snapshot)

    def forget_preview(self, since: float | None = None, until: float | None = None,
                       app: str | None = None) -> dict:
        """What ``forget`` would delete (counts, per app and conversation), to confirm first."""
        return self.store.forget_preview(since, until, app)

    def remember_answer(self, answer) -> int | None:
        """Keep an asked question in the history, with its answer only if the support check
        backed it (an unbacked answer is never stored; the history is never evidence)."""
        if answer.status not in ("answered", "quoted", "unknown", "nothing"):
            return None
        cites = [{"n": c.n, "source_ids": c.source_ids, "quote": c.quote} for c in answer.citations]
        return self.store.add_answer(time.time(), answer.question, answer.text, answer.status, cites,
                                     [sid for c in answer.citations for sid in c.source_ids])

    def history(self, limit: int = 50) -> list[dict]:
        return self.store.answers(limit)

    # -- reading --------------------------------------------------------------------------------
    def prepare_search(self) -> None:
        """A search is about to be typed (the overlay opened): an embedder and an index graph let
        go while idle are made ready meanwhile, so the first query does not wait for them."""
        prepare = getattr(self.embedder, "prepare", None)
        if prepare is not None:
            prepare()
        if self.index is not None:
            self.index.prepare()

    def search(self, query: str, limit: int = 10, **kwargs) -> SearchResult:
        return self.retriever.search(query, limit, **kwargs)

    def status(self) -> dict:
        counts = self.store.counts(self.embedder.id if self.embedder else "")
        lo, hi = self.store.time_range()
        size = sum(p.stat().st_size for p in self.home.glob("memory.db*") if p.is_file())
        frames, frame_bytes = self.store.frame_usage()
        return {
            "home": str(self.home), "key_mode": self.meta.mode, **counts,
            "embedder": self.embedder.id if self.embedder else None,
            "index": self.index_status(),
            "first": lo, "last": hi, "store_bytes": size,
            "migrations": self.store.migrations(),
            "frames": frames, "frame_bytes": frame_bytes,
            "retention": {"days": self.config["retention_days"], "gb": self.config["retention_gb"]},
        }

    def index_status(self) -> dict:
        """Where the vector index lives and what it costs: vectors, its memory in this process
        (estimated from the HNSW layout), its RAM folder, the snapshot on disk, and the whole
        process's resident memory."""
        point = self.store.checkpoint()
        idx = self.index
        return {"ready": bool(idx and idx.ready.is_set()), "vectors": idx.count() if idx else 0,
                "place": idx.kind if idx else None, "source": idx.source if idx else "",
                "resident_bytes": idx.resident_bytes() if idx else 0,
                "dead_vectors": idx.dead if idx else 0,
                "released": bool(idx and idx.released),
                "ram_folder_bytes": snapshot.folder_bytes(idx.folder) if idx else 0,
                "snapshot_vectors": point["vectors"] if point else 0,
                "snapshot_resident_bytes": idx.resident_bytes(point["vectors"]) if idx and point else 0,
                "snapshot_bytes": point["bytes"] if point else 0,
                "snapshot_refused": self.snapshot_refused, "process_rss_bytes": process_rss()}

    def doctor(self, repair: bool = False, backlog: bool = True) -> list[str]:
        """What disagrees between store and index; with *repair*, make them agree. Without
        *repair* nothing is changed. *backlog* lists chunks not embedded yet (ordinary after an
        import: they are embedded in the background) among the problems."""
        problems = self.store.check()
        if repair and any(p.startswith(("keyword index", "text chunks")) for p in problems):
            self.store.rebuild_fts()
        if self.embedder is None or self.index is None:
            return problems
        if not self.wait_index() and self.index.error:
            problems.append(f"the vector index failed to load ({self.index.error})")
        bad: list[int] = []
        stored = {cid for ids, _ in self.store.iter_embeddings(self.embedder.id, dim=self.embedder.dim, bad=bad)
                  for cid in ids}
        indexed = self.index.ids()
        missing, extra = stored - indexed, indexed - stored
        foreign = self.store.counts(self.embedder.id)
        pending = foreign["chunks"] - foreign["embedded"]
        if bad:
            problems.append(f"{len(bad)} stored vectors are malformed (wrong size or not finite)")
        if missing:
            problems.append(f"{len(missing)} stored vectors are missing from the index")
        if extra:
            problems.append(f"{len(extra)} index entries have no stored vector (forgotten data)")
        if pending and (backlog or repair):
            problems.append(f"{pending} text chunks have no vector from {self.embedder.id} yet")
        if repair:
            self.store.delete_embeddings(bad)  # their chunks are embedded again below
            self.index.delete(sorted(extra | set(bad)))
            for ids, vectors in self.store.iter_embeddings(self.embedder.id, dim=self.embedder.dim):
                keep = [i for i, cid in enumerate(ids) if cid in missing]
                if keep:
                    self.index.add([ids[i] for i in keep], vectors[keep])
            self.store.drop_foreign_embeddings(self.embedder.id)
            self.embed_pending()
            self.index.bad = []
            self.index.mark_ready()
        return problems

    def change_key_mode(self, mode: str, passphrase: keys.PassphraseSource | None) -> None:
        """Re-encrypt the store under a new key (keyring <-> passphrase, or a new passphrase).

        Crash-safe: the new key's metadata is synced before the store is touched, and the old one
        is replaced only once the store opens with the new key (see ``keys.settle_change``)."""
        self.wait_caught_up()  # no warm-up reads may run while the file is re-encrypted
        old = self.meta
        new_meta, key = keys.new_key(mode, passphrase, old)
        keys.save_pending(self.layout, new_meta)
        self.store.rekey(key)
        self.meta = new_meta
        keys.finish_change(self.layout, new_meta)
        self._reseal_index()

    def _reseal_index(self) -> None:
        """The index snapshot's key follows the master key: seal it again under the new one (a
        crash before that leaves a snapshot the new key cannot open: it is rebuilt)."""
        if self.index is None:
            return
        if self.index.kind == "server":
            self.index.rename(self._server_name())
        try:
            if self.save_index():
                return
        except Exception:
            log.exception("the vector index could not be sealed under the new key")
        with self._sync_lock:
            self.store.drop_checkpoint()
            self._saved = None
            if self.index.kind == "ram":
                snapshot.remove(self.layout.index_snapshot)


def process_rss() -> int:
    """This process's resident memory in bytes (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _unlock(layout: HomeLayout, meta: keys.KeyMeta, passphrase: keys.PassphraseSource | None
            ) -> tuple[keys.KeyMeta, Store]:
    """Open the store with the key *meta* describes; after a key change that a crash cut short,
    with whichever of the old and new keys the store now has, and finish or undo the change."""
    pending = keys.KeyMeta.load(layout.meta_next)
    if pending is None:
        store = Store(layout.db, keys.load_key(meta, passphrase))
    else:
        ask = keys.remembering(passphrase)
        try:
            store = Store(layout.db, keys.load_key(meta, ask))
        except LockedError:  # re-encrypted already: the new key opens it
            store = Store(layout.db, keys.load_key(pending, ask))
            keys.promote_pending(layout)
            log.warning("finished a key change that was interrupted (now %s mode)", pending.mode)
            meta = pending
        else:
            keys.drop_pending(layout)
            log.warning("undid a key change that was interrupted before the store was re-encrypted")
    if meta.retired:
        try:
            keys.retire_old_key(layout, meta)
        except UserError as exc:  # the memory opens all the same; the next unlock tries again
            log.error("the replaced master key is still in the keyring: %s", exc.message)
    return meta, store


def home_exists(home: str | os.PathLike[str] | None = None) -> bool:
    layout = HomeLayout(resolve_home(home))
    return layout.meta.exists() and layout.db.exists()


def open_memory(home: str | os.PathLike[str] | None = None, *, embedder: Embedder | None = None,
                passphrase: keys.PassphraseSource | None = None, create: bool = True,
                key_mode: str | None = None, warm: bool = True) -> Memory:
    """Unlock (or create) the memory in *home*. Keyword search works at once; with *warm* the
    vector index fills in the background (``Memory.wait_ready``)."""
    layout = HomeLayout(resolve_home(home))
    meta = keys.KeyMeta.load(layout.meta)
    if meta is None and layout.db.exists():
        raise UserError(f"{layout.meta} is missing, so the memory in {layout.root} cannot be unlocked",
                        "restore mneme.json from a backup")
    if meta is None:
        if not create:
            raise UserError(f"there is no memory in {layout.root} yet",
                            "run `mneme init` (or any import) to create one")
        layout.create()
        mode = key_mode or ("passphrase" if os.environ.get("MNEME_PASSPHRASE") else "keyring")
        meta, key = keys.create_key(layout.meta, mode, passphrase)
        store = Store(layout.db, key)
    else:
        if key_mode and key_mode != meta.mode:
            raise UserError(f"this memory uses {meta.mode} mode, not {key_mode}",
                            f"switch with `mneme key {key_mode}`")
        meta, store = _unlock(layout, meta, passphrase)
    vault.clean_killed_export(layout.root)
    config = Config.load(layout.config)
    memory = Memory(layout, store, meta, config, embedder)
    if warm:
        memory.warm(background=True)
    return memory
