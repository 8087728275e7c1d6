"""The encrypted store: one SQLCipher file, the source of truth for everything Mneme remembers.

All SQL lives here. Each write is one transaction, so a crash or ``kill -9`` at any moment leaves
either all of an operation or none of it. ``secure_delete`` zeroes what is forgotten.
"""

from __future__ import annotations

import json
import re
import threading
import time as _time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import sqlcipher3

from mneme.core import keys
from mneme.core.errors import LockedError, UserError
from mneme.core.paths import private_file
from mneme.core.records import Chunk, FrameIn, Hit, Message, Source, id_scope

CHUNK_CHARS = 800
FTS_SECURE_MAX = 200  # chunks forgotten row by row in the keyword index; more: it is rebuilt
SCRUB_WAIT = 30.0  # seconds forget waits for other readers before it says they hold old pages
BIG_MATCH = 5000  # keyword matches past which all-terms documents are ranked first
HUGE_MATCH = 5000  # …and past which the newest matches are taken instead of BM25-scoring them all
SCORE_WINDOW = 1500  # …and below that, the newest matches BM25 scores (a memory this small: all)
SHARE_WINDOW = 100_000  # the newest chunks a word's share is measured in (see _selective)
# BM25 weights of the keyword index's columns: the text, who said it, where (app, conversation,
# title). A name in a question ("What did Caroline say…") is worth less than a rare content word.
FTS_WEIGHTS = (1.0, 0.5, 0.5, 0.3)
# SQLCipher's page cache (decrypted pages) in KiB: 64 MiB before issue 15's second round; 16 MiB
# keeps keyword search as fast at 100k chunks (BENCHMARKS.md, "Encrypted persistent index").
CACHE_KIB = 16384
BM25 = f"bm25(chunks_fts, {', '.join(map(str, FTS_WEIGHTS))})"
# The keyword index (FTS5) grows in segments that its automerge folds together only level by level,
# and a search looks each word up in every one. A memory of 1M chunks had 11; merged into one, its
# keyword search took half as long at the median (BENCHMARKS.md, "Fifth round"). It is merged again
# (``merge_keywords``) once KEYWORD_MERGE_SHARE of its chunks, and at least KEYWORD_MERGE_MIN, are
# newer than the last merge (or a forget has rebuilt it), in steps of KEYWORD_MERGE_PAGES pages
# (~4 kB each), each its own short transaction, so that searches and writes wait for a step at most.
KEYWORD_MERGE_SHARE = 0.1
KEYWORD_MERGE_MIN = 10_000
KEYWORD_MERGE_PAGES = 200
FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"

MIGRATIONS: list[tuple[str, str | Callable]] = [
    ("m001_initial", """
    CREATE TABLE sources (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,                 -- chat | frame | note | assistant
        external_id TEXT NOT NULL,
        time REAL NOT NULL,                 -- UTC epoch seconds
        app TEXT NOT NULL DEFAULT '',
        conversation TEXT NOT NULL DEFAULT '',
        title TEXT NOT NULL DEFAULT '',
        speaker TEXT NOT NULL DEFAULT '',
        UNIQUE (kind, external_id)
    );
    CREATE INDEX sources_time ON sources(time);
    CREATE INDEX sources_app ON sources(app);
    CREATE TABLE chunks (
        id INTEGER PRIMARY KEY,
        source_id INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX chunks_source ON chunks(source_id);
    CREATE VIRTUAL TABLE chunks_fts USING fts5(
        text, content='chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2');
    CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
    END;
    CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END;
    CREATE TABLE embeddings (
        chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,
        embedder TEXT NOT NULL,
        vector BLOB NOT NULL
    );
    CREATE INDEX embeddings_embedder ON embeddings(embedder);
    """),
    ("m002_frames", """
    CREATE TABLE frames (
        source_id INTEGER PRIMARY KEY REFERENCES sources(id) ON DELETE CASCADE,
        monitor INTEGER NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        image BLOB NOT NULL,                -- WebP, encrypted with the rest of the database
        thumb BLOB NOT NULL,
        words TEXT NOT NULL DEFAULT '[]',   -- JSON [[text, left, top, width, height], ...]
        bytes INTEGER NOT NULL
    );
    """),
    # Search by who said it and where (speaker; app, conversation, window title) next to the text,
    # with Porter stemming. The assistant's own answers move out of the searchable sources into a
    # history of their own: they are never evidence.
    ("m003_searchable_fields", """
    DROP TRIGGER chunks_ai;
    DROP TRIGGER chunks_ad;
    DROP TABLE chunks_fts;
    ALTER TABLE chunks ADD COLUMN who TEXT NOT NULL DEFAULT '';
    ALTER TABLE chunks ADD COLUMN place TEXT NOT NULL DEFAULT '';
    -- The message before this one in its conversation: a reply is found by the question it answers.
    ALTER TABLE chunks ADD COLUMN context TEXT NOT NULL DEFAULT '';
    ALTER TABLE chunks ADD COLUMN context_source INTEGER;
    CREATE INDEX chunks_context_source ON chunks(context_source);
    CREATE INDEX sources_conversation ON sources(conversation, kind, time);
    CREATE TABLE answers (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        question TEXT NOT NULL,
        answer TEXT NOT NULL,
        status TEXT NOT NULL,               -- answered | quoted | unknown | nothing | legacy
        citations TEXT NOT NULL DEFAULT '[]' -- JSON: [{"n", "source_ids", "quote"}]
    );
    CREATE TABLE answer_sources (
        answer_id INTEGER NOT NULL REFERENCES answers(id) ON DELETE CASCADE,
        source_id INTEGER NOT NULL,
        PRIMARY KEY (answer_id, source_id)
    );
    CREATE INDEX answer_sources_source ON answer_sources(source_id);
    INSERT INTO answers(time, question, answer, status)
        SELECT q.time, group_concat(cq.text, ' '), coalesce((SELECT group_concat(ca.text, ' ') FROM sources a
               JOIN chunks ca ON ca.source_id = a.id WHERE a.kind = 'assistant'
               AND a.external_id = substr(q.external_id, 1, length(q.external_id) - 2) || '-a'), ''), 'legacy'
        FROM sources q JOIN chunks cq ON cq.source_id = q.id
        WHERE q.kind = 'assistant' AND q.external_id LIKE '%-q' GROUP BY q.id ORDER BY q.time;
    DELETE FROM sources WHERE kind = 'assistant';
    DELETE FROM chunks WHERE source_id NOT IN (SELECT id FROM sources);
    UPDATE chunks SET
        who = (SELECT speaker FROM sources WHERE id = chunks.source_id),
        place = (SELECT trim(app || ' ' || conversation || CASE WHEN title != conversation
                 THEN ' ' || title ELSE '' END) FROM sources WHERE id = chunks.source_id);
    UPDATE chunks SET context_source = (SELECT p.id FROM sources s JOIN sources p
        ON p.conversation = s.conversation AND p.kind = s.kind AND p.conversation != ''
        AND (p.time < s.time OR (p.time = s.time AND p.id < s.id))
        WHERE s.id = chunks.source_id ORDER BY p.time DESC, p.id DESC LIMIT 1) WHERE seq = 0;
    UPDATE chunks SET context = coalesce((SELECT group_concat(text, ' ') FROM chunks p
        WHERE p.source_id = chunks.context_source), '') WHERE context_source IS NOT NULL;
    CREATE VIRTUAL TABLE chunks_fts USING fts5(
        text, who, place, context, content='chunks', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2');
    CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts(rowid, text, who, place, context)
            VALUES (new.id, new.text, new.who, new.place, new.context);
    END;
    CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, text, who, place, context)
            VALUES ('delete', old.id, old.text, old.who, old.place, old.context);
    END;
    CREATE TRIGGER chunks_au AFTER UPDATE ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, text, who, place, context)
            VALUES ('delete', old.id, old.text, old.who, old.place, old.context);
        INSERT INTO chunks_fts(rowid, text, who, place, context)
            VALUES (new.id, new.text, new.who, new.place, new.context);
    END;
    INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild');
    DELETE FROM embeddings;
    """),
]

def _m004_scoped_ids(db) -> None:
    """sources.external_id was unique per kind, so ids from different exports collided. Add a
    ``scope`` (format, app, conversation) and make (kind, scope, external_id) unique instead,
    rebuilding the table as SQLite requires (keeping any columns, indexes and triggers it has)."""
    (create,), = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'sources'")
    old_unique = re.search(r"UNIQUE\s*\(\s*kind\s*,\s*external_id\s*\)", create)
    new = (create[:old_unique.start()] + "scope TEXT NOT NULL DEFAULT '',\n        "
           "UNIQUE (kind, scope, external_id)" + create[old_unique.end():])
    new = re.sub(r"^CREATE TABLE\s+\"?sources\"?", "CREATE TABLE sources_m004", new)
    extras = [r[0] for r in db.execute("SELECT sql FROM sqlite_master WHERE tbl_name = 'sources' AND "
                                       "type IN ('index', 'trigger') AND sql IS NOT NULL")]
    cols = ", ".join(r[1] for r in db.execute("PRAGMA table_info(sources)"))
    db.execute(new)
    db.execute(f"INSERT INTO sources_m004({cols}) SELECT {cols} FROM sources")
    db.execute("DROP TABLE sources")
    db.execute("ALTER TABLE sources_m004 RENAME TO sources")
    for sql in extras:
        db.execute(sql)
    db.create_function("mneme_legacy_scope", 4, legacy_scope, deterministic=True)
    db.execute("UPDATE sources SET scope = mneme_legacy_scope(kind, app, conversation, external_id) "
                "WHERE kind = 'chat'")


def legacy_scope(kind: str, app: str, conversation: str, external_id: str) -> str:
    """The scope a chat message stored before scopes existed was imported under (told apart by
    what each importer writes), so that importing its file again still adds nothing."""
    if kind != "chat":
        return ""
    if app == "ChatGPT" and conversation.startswith("ChatGPT: "):
        fmt = "chatgpt"
    elif app == "WhatsApp" and conversation.startswith("WhatsApp: ") and re.fullmatch(r"[0-9a-f]{32}", external_id):
        fmt = "whatsapp"
    else:
        fmt = "jsonl"
    return id_scope(fmt, app, conversation)


MIGRATIONS.append(("m004_scoped_ids", _m004_scoped_ids))
# The vector index is saved as an encrypted snapshot now and then; what changed since is kept
# here, so that an unlock applies only that. Chunk ids only (no text, no vectors): a journal
# row says "this chunk's vector was added, replaced or removed"; the embeddings table says which.
# ``index_checkpoint`` names the one snapshot the journal continues from.
MIGRATIONS.append(("m005_index_journal", """
    CREATE TABLE index_journal (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        chunk_id INTEGER NOT NULL
    );
    CREATE TRIGGER embeddings_journal_ai AFTER INSERT ON embeddings BEGIN
        INSERT INTO index_journal(chunk_id) VALUES (new.chunk_id);
    END;
    CREATE TRIGGER embeddings_journal_au AFTER UPDATE ON embeddings BEGIN
        INSERT INTO index_journal(chunk_id) VALUES (new.chunk_id);
    END;
    CREATE TRIGGER embeddings_journal_ad AFTER DELETE ON embeddings BEGIN
        INSERT INTO index_journal(chunk_id) VALUES (old.chunk_id);
    END;
    CREATE TABLE index_checkpoint (
        embedder TEXT PRIMARY KEY,
        snapshot TEXT NOT NULL,             -- random id sealed inside the snapshot it names
        seq INTEGER NOT NULL,               -- the journal position the snapshot reflects
        vectors INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    );
    """))
# Migrations that only add (a table, an index): they move no rows, so they leave no old cells in
# pages, and the first open after them need not rewrite the file (a VACUUM of a 100k-chunk memory
# held its unlock ~5 s; at 1M, minutes).
ADDITIVE = {"m006_keyword_merge"}
# The newest chunk id when the keyword index was last merged into one segment (``merge_keywords``).
MIGRATIONS.append(("m006_keyword_merge", """
    CREATE TABLE keyword_merge (
        chunks INTEGER NOT NULL
    );
    """))

FTS_WORD = re.compile(r"\w+", re.UNICODE)
# Question words and glue that match everything and so rank nothing (English; others pass through):
# the words of a question plus NLTK's English stop-word list (pronouns such as "her", "some",
# "both", "during"), which keep a question's content words in charge of BM25. LoCoMo dev, the list
# added: recall@5 / @10 0.685 / 0.790 -> 0.691 / 0.793 (BENCHMARKS.md).
STOPWORDS = frozenset("""a about after all am an and any are as at be been before but by can can't
could did do does doing don't for from had has have how i i'm if in into is it it's its just me my
now of on or our should so than that the their them then there these they this to too us was we
were what when where which who whom whose why will with would you your""".split()) | frozenset("""
myself ours ourselves yours yourself yourselves he him his himself she her hers herself itself theirs
themselves those being having because until while against between through during above below up
down out off over under again further once both each few more most other some such no nor not only
own same very don ll re ve aren couldn didn doesn hadn hasn haven isn mightn mustn needn shan
shouldn wasn weren wouldn""".split())


def split_text(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Cut long text at whitespace into pieces of about *size* characters."""
    text = text.strip()
    if len(text) <= size:
        return [text] if text else []
    pieces, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind(" ", start + size // 2, end)
            end = cut if cut > start else end
        pieces.append(text[start:end].strip())
        start = end
    return [p for p in pieces if p]


def place_of(app: str, conversation: str, title: str) -> str:
    """Where a source was seen, as searched: app, conversation and (when different) title."""
    return " ".join(p for p in (app, conversation, title if title != conversation else "") if p)


def fts_query(text: str) -> str:
    """A user's words as an FTS5 OR-query of quoted terms (no syntax can leak through)."""
    words = [w for w in FTS_WORD.findall(text.lower()) if len(w) > 1 or w.isdigit()]
    content = [w for w in words if w not in STOPWORDS] or words
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(content))


class Store:
    """One open, unlocked SQLCipher database. Thread-safe: calls are serialised."""

    def __init__(self, path: Path, key: bytes):
        self.path = path
        self._lock = threading.RLock()
        self._apps: tuple[tuple[int, int, int], list[str]] | None = None
        self._generation = 0  # committed write transactions on this connection
        self._speakers: tuple[int, set[str]] | None = None
        self._key = key
        self._bulk = None  # a second connection for long reads (index warm-up), so they never
        self._bulk_lock = threading.Lock()  # hold up searches and writes (WAL allows both)
        self.relinked: list[int] = []  # chunks whose vectors a forget made stale (see take_relinked)
        new = not path.exists()
        self._db = sqlcipher3.connect(str(path), check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA cipher_log_level = NONE")
            self._db.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
            self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlcipher3.DatabaseError:
            self._db.close()
            raise LockedError(f"cannot unlock the memory at {path}: the key is wrong",
                              "check the passphrase (or MNEME_PASSPHRASE); nothing was changed") from None
        for pragma in ("secure_delete = ON", "foreign_keys = ON", "journal_mode = WAL",
                       "synchronous = NORMAL", "temp_store = MEMORY", f"cache_size = -{CACHE_KIB}", "cipher_memory_security = ON"):
            self._db.execute(f"PRAGMA {pragma}")
        if new:
            private_file(path)
        self._migrate()

    # -- plumbing -------------------------------------------------------------------------------
    def _bulk_read(self, sql: str, args: Sequence = ()) -> list[tuple]:
        with self._bulk_lock:
            if self._bulk is None:
                self._bulk = sqlcipher3.connect(str(self.path), check_same_thread=False)
                self._bulk.execute("PRAGMA cipher_log_level = NONE")
                self._bulk.execute(f"PRAGMA key = \"x'{self._key.hex()}'\"")
                self._bulk.execute("PRAGMA temp_store = MEMORY")
            return self._bulk.execute(sql, args).fetchall()

    def close(self) -> None:
        self._close_bulk()
        with self._lock:
            if self._db is not None:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._db.close()
                self._db = None

    @contextmanager
    def transaction(self) -> Iterator[sqlcipher3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._generation += 1

    def _q(self, sql: str, args: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _migrate(self) -> None:
        with self.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                       "(name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
            done = {r[0] for r in db.execute("SELECT name FROM schema_migrations")}
        applied = []
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            applied.append(name)
            self._db.execute("PRAGMA foreign_keys = OFF")  # a table rebuild must not cascade
            try:
                with self.transaction() as db:
                    if callable(sql):
                        sql(db)
                    else:
                        for statement in _statements(sql):
                            db.execute(statement)
                    if db.execute("PRAGMA foreign_key_check").fetchall():
                        raise UserError(f"{self.path}: migration {name} would break references",
                                        "nothing was changed; report this as a bug")
                    db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, _time.time()))
            finally:
                self._db.execute("PRAGMA foreign_keys = ON")
        if done and any(name not in ADDITIVE for name in applied):
            # A migration that rewrote rows of an existing memory can leave old cells in pages:
            # rewrite the file once, so nothing removed or moved by it stays readable.
            with self._lock:
                self._db.execute("VACUUM")
        known = {n for n, _ in MIGRATIONS}
        if done - known:
            raise UserError(f"the memory at {self.path} was written by a newer Mneme "
                            f"({', '.join(sorted(done - known))})", "update Mneme to open it")

    def migrations(self) -> list[str]:
        return [r[0] for r in self._q("SELECT name FROM schema_migrations ORDER BY name")]

    def _close_bulk(self) -> None:
        with self._bulk_lock:
            if self._bulk is not None:
                self._bulk.close()
                self._bulk = None

    def rekey(self, key: bytes) -> None:
        self._close_bulk()  # its key is about to go stale, and it would block the journal switch
        self._key = key
        with self._lock:
            self._db.execute("PRAGMA journal_mode = DELETE")
            self._db.execute(f"PRAGMA rekey = \"x'{key.hex()}'\"")
            self._db.execute("PRAGMA journal_mode = WAL")

    def subkey(self, purpose: bytes, salt: bytes) -> bytes:
        """A key for one purpose derived from this store's (current) master key."""
        return keys.subkey(self._key, salt, purpose)

    # -- the vector index's journal (see m005_index_journal) --------------------------------------
    def journal_head(self) -> int:
        """The newest journal position (it only grows, also when old entries are trimmed)."""
        rows = self._q("SELECT seq FROM sqlite_sequence WHERE name = 'index_journal'")
        return int(rows[0][0]) if rows else 0

    def journal_since(self, seq: int, limit: int = 10_000) -> list[tuple[int, int]]:
        """(position, chunk id) of changes after *seq*, oldest first."""
        return self._q("SELECT seq, chunk_id FROM index_journal WHERE seq > ? ORDER BY seq LIMIT ?",
                       (seq, limit))

    def vectors_of(self, embedder: str, chunk_ids: Sequence[int], dim: int | None
                   ) -> tuple[list[int], list[np.ndarray]]:
        """The well-formed stored vectors of *embedder* among these chunks (others have none)."""
        ids, vectors = [], []
        for part in _batches(sorted(set(chunk_ids))):
            for cid, blob in self._q("SELECT chunk_id, vector FROM embeddings WHERE embedder = ? AND "
                                     f"chunk_id IN ({','.join('?' * len(part))})", [embedder, *part]):
                vector = decode_vector(blob, dim)
                if vector is not None:
                    ids.append(cid)
                    vectors.append(vector)
        return ids, vectors

    def checkpoint(self) -> dict | None:
        """The snapshot the journal continues from: embedder, snapshot id, seq, vectors, bytes."""
        rows = self._q("SELECT embedder, snapshot, seq, vectors, bytes FROM index_checkpoint")
        return dict(zip(("embedder", "snapshot", "seq", "vectors", "bytes"), rows[0])) if rows else None

    def set_checkpoint(self, embedder: str, snapshot: str, seq: int, vectors: int, size: int) -> None:
        """Name the snapshot just written (one at a time) and drop the journal it covers."""
        with self.transaction() as db:
            db.execute("DELETE FROM index_checkpoint")
            db.execute("INSERT INTO index_checkpoint VALUES (?,?,?,?,?)", (embedder, snapshot, seq, vectors, size))
            db.execute("DELETE FROM index_journal WHERE seq <= ?", (seq,))

    def drop_checkpoint(self) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM index_checkpoint")

    def trim_journal(self, seq: int) -> None:
        """Drop journal entries up to *seq* that no snapshot needs (an index rebuilt from the
        store at *seq* does not)."""
        with self.transaction() as db:
            row = db.execute("SELECT seq FROM index_checkpoint").fetchone()
            db.execute("DELETE FROM index_journal WHERE seq <= ?", (min(seq, row[0]) if row else seq,))

    # -- writing --------------------------------------------------------------------------------
    def add_messages(self, messages: Iterable[Message], kind: str = "chat",
                     progress: Callable[[int], None] | None = None) -> tuple[int, int]:
        """Add messages in one transaction; ones already stored (same kind and id) are skipped.

        Returns (added, skipped).
        """
        added = skipped = i = 0
        with self.transaction() as db:
            for i, m in enumerate(messages, 1):
                cur = db.execute(
                    "INSERT OR IGNORE INTO sources(kind, external_id, time, app, conversation, title,"
                    " speaker, scope) VALUES (?,?,?,?,?,?,?,?)",
                    (kind, m.external_id, m.time, m.app, m.conversation, m.title, m.speaker, m.scope))
                if cur.rowcount == 0:
                    skipped += 1
                else:
                    added += 1
                    _insert_chunks(db, cur.lastrowid, split_text(m.text), m.speaker,
                                   place_of(m.app, m.conversation, m.title),
                                   _context_of(db, cur.lastrowid, kind, m.conversation, m.time))
                if progress and i % 500 == 0:
                    progress(500)
            if progress and i % 500:
                progress(i % 500)
        return added, skipped

    def add_frame(self, frame: FrameIn) -> int | None:
        """Store one captured frame with its text; returns its source id (None if already stored)."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO sources(kind, external_id, time, app, conversation, title, speaker)"
                " VALUES ('frame', ?, ?, ?, '', ?, '')",
                (frame.external_id, frame.time, frame.app, frame.title))
            if cur.rowcount == 0:
                return None
            sid = cur.lastrowid
            _insert_chunks(db, sid, split_text(frame.text), "", place_of(frame.app, "", frame.title))
            db.execute("INSERT INTO frames VALUES (?,?,?,?,?,?,?,?)",
                       (sid, frame.monitor, frame.width, frame.height, frame.image, frame.thumb,
                        frame.words_json, len(frame.image) + len(frame.thumb)))
            return sid

    def frame(self, source_id: int) -> dict | None:
        rows = self._q("SELECT f.source_id, f.monitor, f.width, f.height, f.image, f.thumb, f.words, "
                       "s.time, s.app, s.title FROM frames f JOIN sources s ON s.id = f.source_id "
                       "WHERE f.source_id = ?", (source_id,))
        if not rows:
            return None
        keys = ("source_id", "monitor", "width", "height", "image", "thumb", "words", "time", "app", "title")
        return dict(zip(keys, rows[0]))

    def thumbs(self, source_ids: Sequence[int]) -> dict[int, bytes]:
        """Timeline thumbnails of frames (frames without a picture are left out)."""
        if not source_ids:
            return {}
        return dict(self._q(f"SELECT source_id, thumb FROM frames WHERE length(thumb) > 0 AND source_id IN "
                            f"({','.join('?' * len(source_ids))})", list(source_ids)))

    def picture_for(self, source_id: int) -> tuple[int, float, bytes] | None:
        """The picture of a frame: its own, or for a text-only frame the latest one before it on the
        same monitor (what the screen looked like then, apart from the new lines)."""
        rows = self._q("SELECT f.source_id, s.time, f.image FROM frames f JOIN sources s ON s.id = f.source_id "
                       "WHERE f.monitor = (SELECT monitor FROM frames WHERE source_id = ?) "
                       "AND s.time <= (SELECT time FROM sources WHERE id = ?) AND length(f.image) > 0 "
                       "ORDER BY s.time DESC LIMIT 1", (source_id, source_id))
        return tuple(rows[0]) if rows else None

    def frames_between(self, since: float, until: float) -> list[tuple[int, float, str, str]]:
        return self._q("SELECT s.id, s.time, s.app, s.title FROM sources s WHERE s.kind = 'frame' "
                       "AND s.time >= ? AND s.time < ? ORDER BY s.time", (since, until))

    def frame_usage(self) -> tuple[int, int]:
        (count, total), = self._q("SELECT count(*), coalesce(sum(bytes), 0) FROM frames")
        return count, total

    def oldest_frames(self, older_than: float | None, over_bytes: int | None) -> list[int]:
        """Frame source ids to delete: older than a time, then oldest first until under a size."""
        doomed = []
        if older_than is not None:
            doomed = [r[0] for r in self._q("SELECT s.id FROM sources s WHERE s.kind = 'frame' AND s.time < ?",
                                            (older_than,))]
        if over_bytes is not None:
            _, total = self.frame_usage()
            if older_than is not None:  # the same rows as above, without binding an id each
                (old,), = self._q("SELECT coalesce(sum(f.bytes), 0) FROM frames f JOIN sources s ON "
                                  "s.id = f.source_id WHERE s.kind = 'frame' AND s.time < ?", (older_than,))
                total -= old
            if total > over_bytes:
                gone = set(doomed)
                for sid, size in self._q("SELECT f.source_id, f.bytes FROM frames f JOIN sources s "
                                         "ON s.id = f.source_id ORDER BY s.time"):
                    if total <= over_bytes:
                        break
                    if sid not in gone:
                        doomed.append(sid)
                        total -= size
        return doomed

    # -- vault -----------------------------------------------------------------------------------
    def export_batches(self, batch: int) -> Iterator[list[tuple[dict, list[str], list, dict | None]]]:
        """Every source with its chunk texts, vectors and frame, in id order, a batch at a time."""
        last = 0
        cols = ("id", "kind", "external_id", "time", "app", "conversation", "title", "speaker", "scope")
        while True:
            sources = self._bulk_read(f"SELECT {', '.join(cols)} FROM sources WHERE id > ? ORDER BY id LIMIT ?",
                                      (last, batch))
            if not sources:
                return
            last = sources[-1][0]
            ids = [r[0] for r in sources]
            marks = ",".join("?" * len(ids))
            chunks: dict[int, list] = {}
            for sid, text, vec, emb in self._bulk_read(
                    "SELECT c.source_id, c.text, e.vector, e.embedder FROM chunks c LEFT JOIN embeddings e "
                    f"ON e.chunk_id = c.id WHERE c.source_id IN ({marks}) ORDER BY c.source_id, c.seq", ids):
                chunks.setdefault(sid, []).append((text, vec, emb))
            frames = {r[0]: dict(zip(("source_id", "monitor", "width", "height", "image", "thumb", "words"), r))
                      for r in self._bulk_read("SELECT source_id, monitor, width, height, image, thumb, words "
                                               f"FROM frames WHERE source_id IN ({marks})", ids)}
            out = []
            for row in sources:
                src = dict(zip(cols, row))
                parts = chunks.get(row[0], [])
                src["embedder"] = next((e for _, _, e in parts if e), "")
                out.append((src, [t for t, _, _ in parts],
                            [v if e == src["embedder"] else None for _, v, e in parts], frames.get(row[0])))
            yield out

    @staticmethod
    def import_source(db, meta: dict, vectors: bytes, keep_id: bool,
                      dims: dict[str, int] | None = None) -> tuple[int | None, int]:
        """Insert one vaulted source inside the caller's transaction. Returns its id (None if
        already present) and how many of its vectors were malformed and left out (their chunks
        are embedded again). *dims* gives the dimension of the embedders this Mneme knows."""
        scope = meta.get("scope")  # vaults from before scopes: as the migration sets it
        if not isinstance(scope, str):
            scope = legacy_scope(meta["kind"], meta["app"], meta["conversation"], meta["external_id"])
        values = (meta["kind"], meta["external_id"], float(meta["time"]), meta["app"], meta["conversation"],
                  meta["title"], meta["speaker"], scope)
        if keep_id:
            cur = db.execute("INSERT OR IGNORE INTO sources(id, kind, external_id, time, app, conversation,"
                             " title, speaker, scope) VALUES (?,?,?,?,?,?,?,?,?)", (int(meta["id"]), *values))
        else:
            cur = db.execute("INSERT OR IGNORE INTO sources(kind, external_id, time, app, conversation,"
                             " title, speaker, scope) VALUES (?,?,?,?,?,?,?,?)", values)
        if cur.rowcount == 0:
            return None, 0
        sid = int(meta["id"]) if keep_id else cur.lastrowid
        flags = [bool(f) for f in meta["vectors"]][:len(meta["chunks"])]
        count, dim, bad = sum(flags), 0, 0
        if count:
            dim = len(vectors) // 4 // count
            if len(vectors) != dim * 4 * count or (dims or {}).get(meta["embedder"], dim) != dim:
                flags, bad = [False] * len(flags), count  # sizes do not add up: keep none of them
        pos = 0
        place = place_of(meta["app"], meta["conversation"], meta["title"])
        context = _context_of(db, sid, meta["kind"], meta["conversation"], float(meta["time"]))
        for seq, text in enumerate(meta["chunks"]):
            cid = db.execute("INSERT INTO chunks(source_id, seq, text, who, place, context, context_source) "
                             "VALUES (?,?,?,?,?,?,?)", (sid, seq, str(text), meta["speaker"], place,
                                                       *(context if seq == 0 else ("", None)))).lastrowid
            if seq < len(flags) and flags[seq]:
                blob = bytes(vectors[pos:pos + dim * 4])
                pos += dim * 4
                if decode_vector(blob, dim) is None:
                    bad += 1
                    continue
                db.execute("INSERT INTO embeddings(chunk_id, embedder, vector) VALUES (?,?,?)",
                           (cid, meta["embedder"], blob))
        return sid, bad

    @staticmethod
    def import_frame(db, source_id: int, meta: dict, image: bytes, thumb: bytes) -> None:
        db.execute("INSERT OR IGNORE INTO frames VALUES (?,?,?,?,?,?,?,?)",
                   (source_id, int(meta["monitor"]), int(meta["width"]), int(meta["height"]), image, thumb,
                    str(meta["words"]), len(image) + len(thumb)))

    def put_embeddings(self, embedder: str, items: Sequence[tuple[int, np.ndarray]]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO embeddings(chunk_id, embedder, vector) "
                "SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM chunks WHERE id = ?)",
                [(cid, embedder, np.asarray(v, dtype=np.float32).tobytes(), cid) for cid, v in items])

    def forget_preview(self, since: float | None = None, until: float | None = None,
                       app: str | None = None) -> dict:
        """What ``forget`` with these filters would delete: counts, and the items per app and
        conversation, most first."""
        cond, args = self._forget_cond(since, until, app)
        (sources, chunks, frames), = self._q(
            f"SELECT count(*), coalesce(sum((SELECT count(*) FROM chunks c WHERE c.source_id = s.id)), 0), "
            f"coalesce(sum((SELECT count(*) FROM frames f WHERE f.source_id = s.id)), 0) FROM sources s "
            f"WHERE {cond}", args)
        groups = self._q(f"SELECT s.app, s.conversation, count(*) FROM sources s WHERE {cond} "
                         "GROUP BY s.app, s.conversation ORDER BY count(*) DESC, s.app, s.conversation", args)
        similar = []
        if app and not sources:
            needle = app.lower()
            similar = sorted({n for n in self.names() if needle in n.lower() or n.lower() in needle})
        return {"sources": sources, "chunks": chunks, "frames": frames,
                "groups": [{"app": a, "conversation": c, "sources": n} for a, c, n in groups],
                "similar": similar[:10]}

    def names(self) -> list[str]:
        """Every app and conversation name, exactly as stored."""
        return [r[0] for r in self._q("SELECT app FROM sources WHERE app != '' UNION "
                                      "SELECT conversation FROM sources WHERE conversation != '' ORDER BY 1")]

    @staticmethod
    def _forget_cond(since: float | None, until: float | None, app: str | None) -> tuple[str, list]:
        where, args = _source_filter(since, until, app, exact=True)
        if not where:
            raise UserError("forgetting needs a time range or an app",
                            "to forget everything, give a range that covers it (e.g. from 1970-01-01)")
        return " AND ".join(where), args

    def forget(self, since: float | None = None, until: float | None = None,
               app: str | None = None, source_ids: Sequence[int] | None = None) -> list[int]:
        """Delete matching sources with their chunks and vectors; returns the deleted chunk ids.

        *app* is an exact app or conversation name (case-insensitive), never a pattern. No term
        of what is deleted stays in the keyword index, and ``secure_delete`` zeroes freed pages; call ``scrub`` afterwards to get the old page copies out of the WAL."""
        cond, args = ("1", []) if source_ids is not None and not (since or until or app) else \
            self._forget_cond(since, until, app)
        chunk_ids: list[int] = []
        with self.transaction() as db:
            if source_ids is None:
                doomed = [r[0] for r in db.execute(f"SELECT s.id FROM sources s WHERE {cond}", args)]
            else:
                doomed = []
                for part in _batches(source_ids):
                    doomed += [r[0] for r in db.execute(
                        f"SELECT s.id FROM sources s WHERE s.id IN ({','.join('?' * len(part))}) AND {cond}",
                        [*part, *args])]
            for part in _batches(doomed):
                chunk_ids += [r[0] for r in db.execute(
                    f"SELECT id FROM chunks WHERE source_id IN ({','.join('?' * len(part))})", part)]
            rebuild = self._fts_before_delete(db, len(chunk_ids))
            # A message whose context is a forgotten one gets its previous kept message instead, and
            # its vector (made from the forgotten text) goes. Done before the deletes, so that the
            # rows rewritten here cannot carry freed cells of the forgotten ones.
            db.execute("CREATE TEMP TABLE IF NOT EXISTS forget_doomed(id INTEGER PRIMARY KEY)")
            db.execute("DELETE FROM temp.forget_doomed")
            db.executemany("INSERT INTO temp.forget_doomed VALUES (?)", [(sid,) for sid in doomed])
            relinked = _link_context(
                db, "c.context_source IN (SELECT id FROM temp.forget_doomed) AND "
                "c.source_id NOT IN (SELECT id FROM temp.forget_doomed)", [],
                skip="p.id NOT IN (SELECT id FROM temp.forget_doomed)")
            for part in _batches(relinked):
                db.execute(f"DELETE FROM embeddings WHERE chunk_id IN ({','.join('?' * len(part))})", part)
            self.relinked.extend(relinked)
            for part in _batches(doomed):
                marks = ','.join('?' * len(part))
                # Answers that quoted a forgotten source go with it (derived data is forgotten too).
                db.execute("DELETE FROM answers WHERE id IN (SELECT answer_id FROM answer_sources WHERE "
                           f"source_id IN ({marks}))", part)
                db.execute(f"DELETE FROM sources WHERE id IN ({marks})", part)
            db.execute("DELETE FROM temp.forget_doomed")
            self._fts_after_delete(db, rebuild)
        with self._lock:
            self._speakers = None  # a forgotten person's name is not kept, even here
        return chunk_ids

    @staticmethod
    def _fts_tables(db) -> list[str]:
        return [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                         "AND lower(sql) LIKE '%using fts5(%'").fetchall()]

    def _fts_before_delete(self, db, chunks: int) -> list[str]:
        """By default FTS5 only marks a deleted row's terms as deleted: the terms, with their row
        ids, stay in its shadow tables. A few rows are removed outright (FTS5 ``secure-delete``,
        ~5 ms a row); past FTS_SECURE_MAX, or where earlier deletes may have left terms, the index
        is rebuilt from what remains instead. Returns the tables to rebuild."""
        rebuild = []
        for name in self._fts_tables(db):
            seen = db.execute(f'SELECT v FROM "{name}_config" WHERE k = \'secure-delete\'').fetchone()
            if chunks <= FTS_SECURE_MAX and seen is not None:
                db.execute(f'INSERT INTO "{name}"("{name}", rank) VALUES (\'secure-delete\', 1)')
            else:
                rebuild.append(name)
        return rebuild

    def _fts_after_delete(self, db, rebuild: list[str]) -> None:
        for name in self._fts_tables(db):
            if name in rebuild:
                db.execute(f'INSERT INTO "{name}"("{name}") VALUES (\'rebuild\')')
                if name == "chunks_fts":  # a rebuild leaves it in segments again: merged at the next warm-up
                    db.execute("DELETE FROM keyword_merge")
            db.execute(f'INSERT INTO "{name}"("{name}", rank) VALUES (\'secure-delete\', 0)')

    def scrub(self, wait: float = SCRUB_WAIT) -> None:
        """Get what was just deleted out of the write-ahead log: checkpoint it into the (zeroed)
        pages of the database and truncate it. Readers keep old pages alive, so Mneme's own bulk
        reader is closed and other processes are waited for up to *wait* seconds; the result is
        checked, not assumed."""
        self._close_bulk()
        wal = self.path.with_name(self.path.name + "-wal")
        deadline = _time.monotonic() + wait
        with self._lock:
            while True:
                busy, frames, done = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if busy == 0 and frames == done and (not wal.exists() or wal.stat().st_size == 0):
                    return
                if _time.monotonic() > deadline:
                    break
                _time.sleep(0.2)
        raise UserError("the items were deleted, but another program (another Mneme window or "
                        "command) holds the memory open, so old copies of them stay in the file "
                        "until it closes",
                        "close the other Mneme and forget again (or run a doctor check) to finish")

    def take_relinked(self) -> list[int]:
        """Chunk ids whose context changed in a forget: their old vectors must leave the index."""
        with self._lock:
            out, self.relinked = self.relinked, []
        return out

    # -- the assistant's history (never evidence: not in sources, chunks or the index) ------------
    def add_answer(self, time: float, question: str, answer: str, status: str, citations: list[dict],
                   source_ids: Iterable[int]) -> int:
        with self.transaction() as db:
            aid = db.execute("INSERT INTO answers(time, question, answer, status, citations) VALUES (?,?,?,?,?)",
                             (time, question, answer, status, json.dumps(citations))).lastrowid
            db.executemany("INSERT OR IGNORE INTO answer_sources VALUES (?, ?)",
                           [(aid, sid) for sid in set(source_ids)])
            return aid

    def answers(self, limit: int = 50) -> list[dict]:
        """The newest asked questions first, with the answers given and what they cited."""
        return [{"id": r[0], "time": r[1], "question": r[2], "answer": r[3], "status": r[4],
                 "citations": json.loads(r[5])} for r in self._q(
            "SELECT id, time, question, answer, status, citations FROM answers ORDER BY time DESC, id DESC "
            "LIMIT ?", (limit,))]

    # -- reading --------------------------------------------------------------------------------
    def keyword_search(self, query: str, limit: int, since: float | None = None,
                       until: float | None = None, app: str | None = None,
                       kinds: Sequence[str] | None = None) -> list[tuple[int, float]]:
        """(chunk_id, bm25) best first; bm25 is lower-is-better as FTS5 gives it."""
        match, matches = self._selective(fts_query(query))
        if not match:
            return []
        where, args = _source_filter(since, until, app, kinds)
        if not where:
            if matches > BIG_MATCH and " OR " in match:
                # BM25 scores every match; when there are many, the documents holding all the
                # terms are the best ones anyway: rank those first, fall back to any-term.
                best = self._q(f"SELECT rowid, {BM25} AS r FROM chunks_fts WHERE chunks_fts MATCH ? "
                               "ORDER BY r LIMIT ?", (match.replace(" OR ", " AND "), limit))
                if len(best) >= limit:
                    return [(r[0], r[1]) for r in best]
            if matches > HUGE_MATCH:
                # Only near-ubiquitous terms are left: BM25 can barely tell the matches apart and
                # would score every one of them. The newest matches are the useful ones.
                return [(r[0], 0.0) for r in self._q(
                    "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rowid DESC LIMIT ?",
                    (match, limit))]
            if matches > SCORE_WINDOW:
                # BM25 costs ~30 us a match (1,000s of them at 1M chunks): the newest SCORE_WINDOW
                # matches are scored (the same scores: IDF is the whole index's), not all of them.
                start = self._q("SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rowid DESC "
                                "LIMIT 1 OFFSET ?", (match, SCORE_WINDOW - 1))
                if start:
                    return [(r[0], r[1]) for r in self._q(
                        f"SELECT rowid, {BM25} AS r FROM chunks_fts WHERE chunks_fts MATCH ? AND rowid >= ? "
                        "ORDER BY r LIMIT ?", (match, start[0][0], limit))]
            return [(r[0], r[1]) for r in self._q(
                f"SELECT rowid, {BM25} AS r FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY r LIMIT ?",
                (match, limit))]
        cond = " AND " + " AND ".join(where)
        return [(r[0], r[1]) for r in self._q(
            f"SELECT c.id, {BM25} AS rank FROM chunks_fts "
            "JOIN chunks c ON c.id = chunks_fts.rowid JOIN sources s ON s.id = c.source_id "
            f"WHERE chunks_fts MATCH ?{cond} ORDER BY rank LIMIT ?", [match, *args, limit])]

    def recent(self, limit: int, since: float | None = None, until: float | None = None,
               app: str | None = None, kinds: Sequence[str] | None = None) -> list[tuple[int, float]]:
        where, args = _source_filter(since, until, app, kinds)
        cond = ("WHERE " + " AND ".join(where)) if where else ""
        return [(r[0], r[1]) for r in self._q(
            f"SELECT c.id, s.time FROM chunks c JOIN sources s ON s.id = c.source_id {cond} "
            "ORDER BY s.time DESC, c.id DESC LIMIT ?", [*args, limit])]

    def embeddings_where(self, embedder: str, limit: int, since: float | None = None,
                         until: float | None = None, app: str | None = None,
                         kinds: Sequence[str] | None = None) -> tuple[list[int], np.ndarray]:
        where, args = _source_filter(since, until, app, kinds)
        cond = (" AND " + " AND ".join(where)) if where else ""
        rows = self._q("SELECT e.chunk_id, e.vector FROM embeddings e JOIN chunks c ON c.id = e.chunk_id "
                       f"JOIN sources s ON s.id = c.source_id WHERE e.embedder = ?{cond} LIMIT ?",
                       [embedder, *args, limit])
        if not rows:
            return [], np.zeros((0, 0), dtype=np.float32)
        return [r[0] for r in rows], np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])

    def _selective(self, match: str, max_share: float = 0.05) -> tuple[str, int]:
        """When a query would match many chunks, drop terms found in more than *max_share* of them
        (of the newest SHARE_WINDOW) while rarer ones remain: they add almost nothing to BM25 (IDF
        near zero) but cost a score for every match. Returns the query and its estimated number of
        matches (each term's counted up to BIG_MATCH + 1)."""
        terms = match.split(" OR ") if match else []
        if not terms:
            return match, 0
        (total,), = self._q("SELECT coalesce(max(rowid), 0) FROM chunks")
        # Matches are counted only as far as the choices look: fts5vocab's full count of a word
        # found in most chunks read its whole doclist (120-220 ms each at 1M chunks).
        df = {t: self._count(t, BIG_MATCH + 1) for t in terms}
        if len(terms) == 1 or sum(df.values()) <= BIG_MATCH:  # cheap, or nothing to drop
            return match, sum(df.values())
        # A common word: in more than max_share of the newest SHARE_WINDOW chunks (of them all, in
        # a memory that small). When every word is, the rarest in the newest 10,000 is kept.
        seen = min(total, SHARE_WINDOW)
        share = {t: self._count(t, int(max_share * seen) + 1, after=total - seen) for t in terms}
        keep = ([t for t in terms if share[t] <= max_share * seen]
                or [min(terms, key=lambda t: self._count(t, 10_001, after=total - 10_000))])
        return " OR ".join(keep), sum(df[t] for t in keep)

    def _count(self, match: str, bound: int, after: int = 0) -> int:
        """Chunks (with an id past *after*) matching *match*, counted up to *bound*."""
        return self._q("SELECT count(*) FROM (SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? "
                       "AND rowid > ? LIMIT ?)", (match, after, bound))[0][0]

    def keyword_merge_due(self) -> bool:
        """Whether enough chunks are newer than the keyword index's last merge (``merge_keywords``)."""
        (top,), = self._q("SELECT coalesce(max(id), 0) FROM chunks")
        (last,), = self._q("SELECT coalesce(max(chunks), 0) FROM keyword_merge")
        return top - last >= max(KEYWORD_MERGE_MIN, KEYWORD_MERGE_SHARE * top)

    def merge_keywords(self, pages: int | None = None, stop: threading.Event | None = None) -> int | None:
        """Merge the keyword index's segments into one (FTS5's 'merge' with a negative page count:
        any segments, whatever their level), in steps of about *pages* pages, each its own
        transaction; the same rows and the same scores, fewer places to look a word up. Returns the
        steps that did work, or None when *stop* was set first (it goes on from there next time)."""
        pages = pages or KEYWORD_MERGE_PAGES
        (top,), = self._q("SELECT coalesce(max(id), 0) FROM chunks")
        steps = 0
        while True:
            if stop is not None and stop.is_set():
                return None
            with self.transaction() as db:
                before = db.total_changes
                db.execute("INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('merge', ?)", (-pages,))
                worked = db.total_changes - before >= 2  # (FTS5: under 2 changes, nothing was left to merge)
                if not worked:
                    db.execute("DELETE FROM keyword_merge")
                    db.execute("INSERT INTO keyword_merge VALUES (?)", (top,))
            if not worked:
                return steps
            steps += 1

    def filter_chunks(self, chunk_ids: Sequence[int], since: float | None = None,
                      until: float | None = None, app: str | None = None,
                      kinds: Sequence[str] | None = None, speakers: Sequence[str] = ()) -> set[int]:
        if not chunk_ids:
            return set()
        where, args = _source_filter(since, until, app, kinds)
        if speakers:
            where.append(f"lower(s.speaker) IN ({','.join('?' * len(speakers))})")
            args.extend(x.lower() for x in speakers)
        cond = (" AND " + " AND ".join(where)) if where else ""
        marks = ",".join("?" * len(chunk_ids))
        return {r[0] for r in self._q(
            f"SELECT c.id FROM chunks c JOIN sources s ON s.id = c.source_id "
            f"WHERE c.id IN ({marks}){cond}", [*chunk_ids, *args])}

    def hits(self, scored: Sequence[tuple[int, float]]) -> list[Hit]:
        if not scored:
            return []
        marks = ",".join("?" * len(scored))
        rows = {r[0]: r for r in self._q(
            "SELECT c.id, c.source_id, s.kind, s.time, s.app, s.title, c.text, s.conversation, "
            f"s.speaker, s.external_id FROM chunks c JOIN sources s ON s.id = c.source_id WHERE c.id IN ({marks})",
            [cid for cid, _ in scored])}
        out = []
        for cid, score in scored:
            r = rows.get(cid)
            if r:
                out.append(Hit(chunk_id=r[0], source_ids=[r[1]], kind=r[2], time=r[3], app=r[4],
                               title=r[5] or r[7], text=r[6], score=score, conversation=r[7],
                               speaker=r[8], external_id=r[9]))
        return out

    def neighbours(self, source_id: int, before: int = 1, after: int = 1) -> list[Source]:
        """Messages around a source in the same conversation, in time order (for context)."""
        (conv, t, kind), = self._q("SELECT conversation, time, kind FROM sources WHERE id = ?",
                                   (source_id,)) or [("", 0.0, "")]
        if not conv:
            return []
        cols = "id, kind, external_id, time, app, conversation, title, speaker"
        prev = self._q(f"SELECT {cols} FROM sources WHERE conversation = ? AND kind = ? AND "
                       "(time < ? OR (time = ? AND id < ?)) ORDER BY time DESC, id DESC LIMIT ?",
                       (conv, kind, t, t, source_id, before))
        nxt = self._q(f"SELECT {cols} FROM sources WHERE conversation = ? AND kind = ? AND "
                      "(time > ? OR (time = ? AND id > ?)) ORDER BY time, id LIMIT ?",
                      (conv, kind, t, t, source_id, after))
        return [Source(*r) for r in [*reversed(prev), *nxt]]

    def neighbour_chunks(self, chunk_ids: Sequence[int], since: float | None = None,
                         until: float | None = None, app: str | None = None,
                         kinds: Sequence[str] | None = None) -> dict[int, list[int]]:
        """For each chunk, the first chunks of the messages just before and after its message in the
        same conversation (within the filters)."""
        where, args = _source_filter(since, until, app, kinds)
        cond = (" AND " + " AND ".join(where)) if where else ""
        out: dict[int, list[int]] = {}
        for cid in chunk_ids:
            rows = self._q(
                "SELECT x.kind, x.conversation, x.time, x.id FROM chunks c JOIN sources x ON x.id = c.source_id "
                "WHERE c.id = ? AND x.conversation != '' AND x.kind != 'frame'", (cid,))
            if not rows:
                continue
            kind, conv, t, sid = rows[0]
            got = []
            for op, order in (("<", "DESC"), (">", "ASC")):
                # "time <= t" is the same condition said so that the index (conversation, kind,
                # time) starts at t: without it SQLite walks the conversation from its newest (or
                # oldest) message to this one, ~20,000 rows per neighbour at 1M chunks.
                got += [r[0] for r in self._q(
                    "SELECT c.id FROM sources s JOIN chunks c ON c.source_id = s.id AND c.seq = 0 "
                    f"WHERE s.conversation = ? AND s.kind = ? AND s.time {op}= ? AND (s.time {op} ? OR s.id {op} ?)"
                    f"{cond} ORDER BY s.time {order}, s.id {order} LIMIT 1", [conv, kind, t, t, sid, *args])]
            out[cid] = got
        return out

    def source_text(self, source_id: int) -> str:
        return " ".join(r[0] for r in self._q(
            "SELECT text FROM chunks WHERE source_id = ? ORDER BY seq", (source_id,)))

    def source(self, source_id: int) -> Source | None:
        rows = self._q("SELECT id, kind, external_id, time, app, conversation, title, speaker "
                       "FROM sources WHERE id = ?", (source_id,))
        return Source(*rows[0]) if rows else None

    def chunks_without_embedding(self, embedder: str, limit: int) -> list[Chunk]:
        return [Chunk(*r) for r in self._q(
            "SELECT c.id, c.source_id, c.text, c.who, c.context FROM chunks c LEFT JOIN embeddings e "
            "ON e.chunk_id = c.id AND e.embedder = ? WHERE e.chunk_id IS NULL ORDER BY c.id LIMIT ?",
            (embedder, limit))]

    def iter_embeddings(self, embedder: str, batch: int = 5000, dim: int | None = None,
                        bad: list[int] | None = None) -> Iterator[tuple[list[int], np.ndarray]]:
        """Stored vectors of *embedder*, a batch at a time. Malformed ones (wrong size, not float32,
        not finite) are left out and their chunk ids appended to *bad*."""
        last = 0
        while True:
            rows = self._bulk_read("SELECT chunk_id, vector FROM embeddings WHERE embedder = ? AND "
                                   "chunk_id > ? ORDER BY chunk_id LIMIT ?", (embedder, last, batch))
            if not rows:
                return
            last = rows[-1][0]
            ids, vectors = [], []
            for cid, blob in rows:
                vector = decode_vector(blob, dim)
                if vector is None:
                    if bad is not None:
                        bad.append(cid)
                    continue
                dim = dim or len(vector)  # with no dimension given, the first good one sets it
                ids.append(cid)
                vectors.append(vector)
            if ids:
                yield ids, np.stack(vectors)

    def delete_embeddings(self, chunk_ids: Sequence[int]) -> None:
        with self.transaction() as db:
            for part in _batches(chunk_ids):
                db.execute(f"DELETE FROM embeddings WHERE chunk_id IN ({','.join('?' * len(part))})", part)

    def embedding(self, chunk_id: int) -> np.ndarray | None:
        rows = self._q("SELECT vector FROM embeddings WHERE chunk_id = ?", (chunk_id,))
        return np.frombuffer(rows[0][0], dtype=np.float32) if rows else None

    def drop_foreign_embeddings(self, embedder: str) -> int:
        with self.transaction() as db:
            return db.execute("DELETE FROM embeddings WHERE embedder != ?", (embedder,)).rowcount

    def apps(self) -> list[str]:
        """Names a query can filter by: apps, conversations and their first word ("Slack").
        Cached until the memory changes: a committed write here, one by another connection
        (``data_version``), or a new source. (``total_changes`` moved with every search, whose
        temporary tables count as changes: the names were read again each time, 37 ms at 100k.)"""
        with self._lock:
            (version,), = self._db.execute("PRAGMA data_version").fetchall()
            (top,), = self._db.execute("SELECT coalesce(max(id), 0) FROM sources").fetchall()
            stamp = (self._generation, version, top)
            if self._apps is not None and self._apps[0] == stamp:
                return self._apps[1]
        names = self._distinct("app") | self._distinct("conversation")
        names |= {re.split(r"[\s:#/]", n, maxsplit=1)[0] for n in names}
        result = sorted(n for n in names if len(n) > 1)
        self._apps = (stamp, result)
        return result

    def _distinct(self, column: str) -> set[str]:
        """The non-empty values of *column* of sources (app or conversation, each first in an
        index), found by stepping from one value to the next in its index: a lookup per value
        instead of a scan of every source (SELECT DISTINCT took 2 s at 1M sources, at every
        search after a write)."""
        out: set[str] = set()
        last = ""
        while True:
            (value,), = self._q(f"SELECT min({column}) FROM sources WHERE {column} > ?", (last,))
            if value is None:
                return out
            out.add(value)
            last = value

    def speakers(self) -> list[str]:
        """Who has said something in memory. Kept up to date from the rows added since the last call
        (a scan of every source would cost ~0.1 s a search at 100k); a forget starts it afresh."""
        (top,), = self._q("SELECT coalesce(max(id), 0) FROM sources")
        with self._lock:
            seen, names = self._speakers if self._speakers and self._speakers[0] <= top else (0, set())
        if top > seen:
            names = names | {r[0] for r in self._q(
                "SELECT DISTINCT speaker FROM sources WHERE id > ? AND speaker != ''", (seen,))}
        with self._lock:
            self._speakers = (top, names)
        return sorted(names)

    def counts(self, embedder: str) -> dict[str, int]:
        (sources, chunks, embedded), = self._q(
            "SELECT (SELECT count(*) FROM sources), (SELECT count(*) FROM chunks), "
            "(SELECT count(*) FROM embeddings WHERE embedder = ?)", (embedder,))
        by_kind = dict(self._q("SELECT kind, count(*) FROM sources GROUP BY kind"))
        return {"sources": sources, "chunks": chunks, "embedded": embedded, **{
            f"sources_{k}": v for k, v in by_kind.items()}}

    def time_range(self) -> tuple[float | None, float | None]:
        (lo, hi), = self._q("SELECT min(time), max(time) FROM sources")
        return lo, hi

    def check(self) -> list[str]:
        """Problems the database itself can see (integrity, FTS agreement, orphans)."""
        problems = []
        result = self._q("PRAGMA integrity_check")
        if result != [("ok",)]:
            problems.append("integrity: " + "; ".join(r[0] for r in result[:5]))
        try:
            self._q("INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)")
        except sqlcipher3.DatabaseError as exc:
            problems.append(f"keyword index: {exc}")
        (orphans,), = self._q("SELECT count(*) FROM chunks WHERE source_id NOT IN (SELECT id FROM sources)")
        if orphans:
            problems.append(f"{orphans} text chunks have no source")
        return problems

    def rebuild_fts(self) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')")
            db.execute("DELETE FROM chunks WHERE source_id NOT IN (SELECT id FROM sources)")


def _link_context(db, where: str, args: Sequence, skip: str = "1") -> list[int]:
    """Give the first chunk of each message matching *where* the text of the message before it in
    its conversation (what a reply answers). Returns the chunk ids whose context changed."""
    rows = db.execute(
        "SELECT c.id, (SELECT p.id FROM sources p WHERE p.conversation = s.conversation AND p.kind = s.kind "
        f"AND (p.time < s.time OR (p.time = s.time AND p.id < s.id)) AND {skip} ORDER BY p.time DESC, p.id DESC "
        "LIMIT 1) "
        f"FROM chunks c JOIN sources s ON s.id = c.source_id WHERE c.seq = 0 AND s.conversation != '' "
        f"AND s.kind != 'frame' AND {where}", list(args)).fetchall()
    changed = []
    for cid, prev in rows:
        text = " ".join(r[0] for r in db.execute(
            "SELECT text FROM chunks WHERE source_id = ? ORDER BY seq", (prev,))) if prev else ""
        cur = db.execute("UPDATE chunks SET context = ?, context_source = ? WHERE id = ? AND "
                         "(context != ? OR context_source IS NOT ?)", (text[:CHUNK_CHARS], prev, cid, text[:CHUNK_CHARS], prev))
        if cur.rowcount:
            changed.append(cid)
    return changed


def _context_of(db, source_id: int, kind: str, conversation: str, time: float) -> tuple[str, int | None]:
    """The message before this one in its conversation, as (text, source id). Set when a chunk is
    inserted, never by updating it afterwards: an updated row can leave a copy of its old cell in a
    page, which a forget would then not reach."""
    if not conversation or kind == "frame":
        return "", None
    row = db.execute("SELECT id FROM sources WHERE conversation = ? AND kind = ? AND id != ? AND time <= ? "
                     "ORDER BY time DESC, id DESC LIMIT 1", (conversation, kind, source_id, time)).fetchone()
    if row is None:
        return "", None
    text = " ".join(r[0] for r in db.execute("SELECT text FROM chunks WHERE source_id = ? ORDER BY seq", row))
    return text[:CHUNK_CHARS], row[0]


def _insert_chunks(db, source_id: int, texts: Sequence[str], who: str, place: str,
                   context: tuple[str, int | None] = ("", None)) -> None:
    db.executemany("INSERT INTO chunks(source_id, seq, text, who, place, context, context_source) "
                   "VALUES (?,?,?,?,?,?,?)",
                   [(source_id, n, t, who, place, *(context if n == 0 else ("", None)))
                    for n, t in enumerate(texts)])


def _source_filter(since: float | None, until: float | None, app: str | None,
                   kinds: Sequence[str] | None = None, exact: bool = False) -> tuple[list[str], list]:
    """WHERE terms for a time range, an app and kinds. A search's *app* also matches the
    conversations it starts ("Slack" finds "Slack #team"); with *exact* (forgetting) it must be the
    whole app or conversation name, case-insensitively, and nothing in it is a pattern."""
    where, args = [], []
    if since is not None:
        where.append("s.time >= ?")
        args.append(since)
    if until is not None:
        where.append("s.time < ?")
        args.append(until)
    if app and exact:
        where.append("(lower(s.app) = lower(?) OR lower(s.conversation) = lower(?))")
        args.extend([app, app])
    elif app:
        # A prefix compared as text, not a LIKE pattern: "%" or "_" in a name is only that character.
        where.append("(lower(s.app) = lower(?) OR substr(lower(s.conversation), 1, length(?)) = lower(?))")
        args.extend([app, app, app])
    if kinds:
        where.append(f"s.kind IN ({','.join('?' * len(kinds))})")
        args.extend(kinds)
    return where, args


def decode_vector(blob, dim: int | None) -> np.ndarray | None:
    """A stored float32 vector, or None when it is malformed (wrong size or not finite)."""
    if not isinstance(blob, bytes) or not blob or len(blob) % 4 or (dim and len(blob) != dim * 4):
        return None
    vector = np.frombuffer(blob, dtype=np.float32)
    return vector if np.isfinite(vector).all() else None


SQL_BATCH = 10_000  # ids bound per statement: well under SQLite's 32,766 parameters


def _batches(items: Sequence, size: int = SQL_BATCH) -> Iterator[list]:
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (triggers keep their inner semicolons)."""
    out, buf = [], []
    for line in sql.strip().splitlines():
        buf.append(line)
        joined = "\n".join(buf).strip()
        if joined.endswith(";") and sqlcipher3.complete_statement(joined):
            out.append(joined)
            buf = []
    if "\n".join(buf).strip():
        out.append("\n".join(buf))
    return out
