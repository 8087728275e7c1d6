"""``Memory``: one unlocked home — store, index, embedder, settings — and what can be done with it.

This is the stable Python API the CLI, the GUI, the local API and the tests call.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence

from mneme.core import keys, vault
from mneme.core.config import Config
from mneme.core.embedding import Embedder
from mneme.core.errors import LockedError, UserError
from mneme.core.index import Index
from mneme.core.paths import HomeLayout, resolve_home
from mneme.core.records import FrameIn, Message
from mneme.core.retrieval import Retriever, SearchResult
from mneme.core.store import Store

log = logging.getLogger(__name__)
EMBED_BATCH = 64
WARM_STALL_SECONDS = 60.0  # warm-up that loads nothing for this long is given up on
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
        self.index = Index(embedder) if embedder is not None else None
        self.retriever = Retriever(store, self.index, embedder)
        self._warm_thread: threading.Thread | None = None
        self._embed_lock = threading.Lock()
        self._closed = threading.Event()

    # -- life cycle -----------------------------------------------------------------------------
    def warm(self, background: bool = True, catch_up: bool = True) -> None:
        """Fill the in-memory index from stored vectors, then embed what has none yet.

        Malformed stored vectors are left out (``index.bad``; ``doctor`` repairs them). A failed
        warm-up is logged with its traceback and recorded in ``index.error``; keyword search keeps
        working and nothing waits on it for ever."""
        if self.index is None:
            return

        def run() -> None:
            try:
                self.index.total = self.store.counts(self.embedder.id)["embedded"]
                bad: list[int] = []
                for ids, vectors in self.store.iter_embeddings(self.embedder.id, dim=self.embedder.dim,
                                                               bad=bad):
                    if self._closed.is_set():
                        return
                    self.index.add(ids, vectors)
                self.index.bad = bad
                if bad:
                    log.warning("%d stored vectors are malformed and were left out of the index", len(bad))
                self.index.mark_ready()
            except Exception as exc:  # a failed warm-up leaves keyword search working
                if not self._closed.is_set():
                    log.exception("index warm-up failed")
                self.index.mark_failed(f"{type(exc).__name__}: {exc}")
                return
            finally:
                self.index.settled.set()  # also when closed mid-way: nobody waits for ever
            if catch_up:
                try:
                    self.embed_pending()
                except Exception:
                    if not self._closed.is_set():
                        log.exception("catch-up embedding failed")

        if background:
            self._warm_thread = threading.Thread(target=run, name="mneme-index-warm", daemon=True)
            self._warm_thread.start()
        else:
            run()

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
        self._closed.set()
        if self._warm_thread is not None:
            self._warm_thread.join()
        if self.index is not None:
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
                self.store.put_embeddings(self.embedder.id, [(c.id, v) for c, v in zip(batch, vectors)])
                if self.index is not None:
                    self.index.add([c.id for c in batch], vectors)
                done += len(batch)
                if progress:
                    progress(done, max(total, done))
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
        chunk_ids = self.store.forget(since, until, app, source_ids)
        stale = self.store.take_relinked()
        if self.index is not None:
            self.index.delete(chunk_ids + stale)
        self.store.scrub()
        return len(chunk_ids)

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
            "index": {"ready": bool(self.index and self.index.ready.is_set()),
                      "vectors": self.index.count() if self.index else 0},
            "first": lo, "last": hi, "store_bytes": size,
            "migrations": self.store.migrations(),
            "frames": frames, "frame_bytes": frame_bytes,
            "retention": {"days": self.config["retention_days"], "gb": self.config["retention_gb"]},
        }

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
