"""Leave no forgotten vector or id in a copy of Chroma's folder before it is sealed as a snapshot.

A forget deletes ids from the live collection at once: hnswlib only marks their elements deleted
(search stops returning them) and Chroma logs the deletion. Their floats stay in the graph until it
is built anew, which takes as long as a rebuild. So the live graph keeps them (in RAM) and the
*copy* that a snapshot is sealed from is scrubbed instead, in place, off the index's lock:

- ``chroma.sqlite3``: the metadata segment is up to date (its ``max_seq_id`` is the log's last
  change), so the ids it holds are the live ones. Every log row (``embeddings_queue``) that a later
  deletion undoes, the deletions themselves, and rows of ids that are not live are removed; rows
  that both segments have applied already too. Then the file is rewritten (``VACUUM``, with
  ``secure_delete``) so that no freed page keeps an old row.
- the HNSW segment, as of its last write (``header.bin``: i32 version, then u64 offsetLevel0,
  max_elements, cur_element_count, size_data_per_element, label_offset, offsetData; each element of
  ``data_level0.bin``: link header and links | float32 vector | u64 label; bit 0 of byte 2 of the
  link header marks it deleted; ``index_metadata.pickle``: the id <-> label maps): an element is
  dead when it is marked, when its label maps to no id, to an id that is not live, or to one the
  log deletes after that write (a reused chunk id is added again as a new element). A dead
  element's floats are zeroed and it is marked deleted; its id leaves the maps.
  ``link_lists.bin`` and ``length.bin`` hold element numbers and sizes only.

Checked against chromadb 1.5's files: whatever does not match what is known here (another schema,
a graph without its id map, a metadata segment behind the log) raises ``Unsure``, and the caller
builds the graph anew instead.
"""

from __future__ import annotations

import io
import pickle
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHROMA_DELETE = 3  # chromadb's Operation.DELETE in its SQLite log (embeddings_queue.operation)
HEADER = struct.Struct("<i6Q")
MAP = "index_metadata.pickle"


class Unsure(Exception):
    """The folder is not in a form this scrub knows; it cannot vouch for what it leaves."""


@dataclass
class Scrubbed:
    live: int = 0           # ids the collection holds
    elements: int = 0       # elements in the written graph
    dead: int = 0           # of them zeroed and marked deleted
    log_rows_removed: int = 0


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):  # the map is dicts of str and int; nothing else is loaded
        raise Unsure(f"unexpected object {module}.{name} in Chroma's id map")


def _load_map(path: Path) -> dict:
    raw = path.read_bytes()
    if not raw.startswith(b"\x80") or raw[1] > 5:
        raise Unsure("Chroma's id map is not a pickle it knows")
    data = _PlainUnpickler(io.BytesIO(raw)).load()
    if not isinstance(data, dict) or not {"id_to_label", "label_to_id"} <= set(data):
        raise Unsure("Chroma's id map has an unknown layout")
    return data | {"_protocol": raw[1]}


def _segments(db: sqlite3.Connection) -> tuple[str, str]:
    cols = {r[1] for r in db.execute("PRAGMA table_info(embeddings_queue)")}
    if not {"seq_id", "operation", "topic", "id", "vector"} <= cols:
        raise Unsure(f"unknown Chroma log schema {sorted(cols)}")
    rows = db.execute("SELECT id, scope FROM segments").fetchall()
    meta = [sid for sid, scope in rows if scope == "METADATA"]
    vector = [sid for sid, scope in rows if scope == "VECTOR"]
    if len(meta) != 1 or len(vector) != 1:
        raise Unsure(f"expected one collection's two segments, found {rows}")
    return meta[0], vector[0]


def _seq(db: sqlite3.Connection, segment: str) -> int | None:
    row = db.execute("SELECT seq_id FROM max_seq_id WHERE segment_id = ?", (segment,)).fetchone()
    if row is None:
        return None
    value = row[0]
    return int.from_bytes(value, "big") if isinstance(value, bytes) else int(value)


def scrub(folder: Path) -> Scrubbed:
    """Scrub the Chroma folder *folder* (a copy no client has open) in place."""
    out = Scrubbed()
    db = sqlite3.connect(folder / "chroma.sqlite3", isolation_level=None)
    try:
        meta_seg, vector_seg = _segments(db)
        live = {r[0] for r in db.execute("SELECT embedding_id FROM embeddings WHERE segment_id = ?", (meta_seg,))}
        out.live = len(live)
        meta_seq = _seq(db, meta_seg) or 0
        (log_max,) = db.execute("SELECT COALESCE(MAX(seq_id), 0) FROM embeddings_queue").fetchone()
        if meta_seq < log_max:
            raise Unsure(f"the metadata segment ({meta_seq}) is behind the log ({log_max})")
        graph_seq = _seq(db, vector_seg) or 0
        # the last deletion of each id after the graph was written
        deleted_after = dict(db.execute(
            "SELECT id, MAX(seq_id) FROM embeddings_queue WHERE operation = ? AND seq_id > ? GROUP BY id",
            (CHROMA_DELETE, graph_seq)).fetchall())
        db.execute("PRAGMA secure_delete = ON")
        db.execute("BEGIN")
        (before,) = db.execute("SELECT COUNT(*) FROM embeddings_queue").fetchone()
        db.execute("DELETE FROM embeddings_queue WHERE seq_id <= ?", (min(graph_seq, meta_seq),))
        # a change that a later deletion undoes, and the deletions (the graph is scrubbed of them)
        db.execute("DELETE FROM embeddings_queue WHERE EXISTS (SELECT 1 FROM embeddings_queue d WHERE "
                   "d.operation = ? AND d.id = embeddings_queue.id AND d.topic = embeddings_queue.topic "
                   "AND d.seq_id >= embeddings_queue.seq_id)", (CHROMA_DELETE,))
        db.execute("DELETE FROM embeddings_queue WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE "
                   "e.segment_id = ? AND e.embedding_id = embeddings_queue.id)", (meta_seg,))
        out.log_rows_removed = before - db.execute("SELECT COUNT(*) FROM embeddings_queue").fetchone()[0]
        # Chroma numbers a new change after the log's last one: with rows gone from the end, the
        # segments' positions come down to it (what they had applied after it was removed).
        (last,) = db.execute("SELECT COALESCE(MAX(seq_id), 0) FROM embeddings_queue").fetchone()
        db.execute("UPDATE max_seq_id SET seq_id = ? WHERE seq_id > ?", (last, last))
        db.execute("COMMIT")
        db.execute("VACUUM")
    finally:
        db.close()
    out.elements, out.dead = _scrub_graph(folder / vector_seg, live, set(deleted_after), last)
    for extra in ("chroma.sqlite3-journal", "chroma.sqlite3-wal"):
        if (folder / extra).exists() and (folder / extra).stat().st_size:
            raise Unsure(f"{extra} is left after the rewrite")
    return out


def _scrub_graph(seg_dir: Path, live: set[str], deleted_after: set[str], last: int) -> tuple[int, int]:
    """Zero and mark the dead elements of the written graph in *seg_dir*; (elements, dead)."""
    header = seg_dir / "header.bin"
    if not header.exists():
        if (seg_dir / "data_level0.bin").exists():
            raise Unsure("a graph without its header")
        return 0, 0
    raw = header.read_bytes()
    if len(raw) < HEADER.size:
        raise Unsure("the graph's header is short")
    version, off_level0, _max, count, size, label_off, off_data = HEADER.unpack_from(raw)
    if version != 1 or off_level0 != 0 or not off_data < label_off <= size - 8:
        raise Unsure(f"unknown graph header {HEADER.unpack_from(raw)}")
    data = seg_dir / "data_level0.bin"
    if count and (not data.exists() or data.stat().st_size < count * size):
        raise Unsure("the graph's elements are cut short")
    if data.exists() and data.stat().st_size > count * size:  # room past the last element: nothing of it is kept
        with open(data, "r+b") as f:
            f.seek(count * size)
            left = data.stat().st_size - count * size
            while left > 0:
                f.write(bytes(min(left, 1 << 20)))
                left -= 1 << 20
    if count == 0:
        return 0, 0
    if not (seg_dir / MAP).exists():
        raise Unsure("a written graph without its id map")
    idmap = _load_map(seg_dir / MAP)
    label_to_id, id_to_label = idmap["label_to_id"], idmap["id_to_label"]
    elements = np.memmap(data, dtype=np.uint8, mode="r+", shape=(count, size))
    try:
        labels = np.ascontiguousarray(elements[:, label_off:label_off + 8]).view("<u8").ravel().tolist()
        dead = (elements[:, 2] & 1).astype(bool)  # marked deleted already
        for i, label in enumerate(labels):
            cid = label_to_id.get(label)
            if cid is None or cid not in live or cid in deleted_after:
                dead[i] = True
        rows = np.flatnonzero(dead)
        if rows.size:
            elements[rows, off_data:label_off] = 0
            elements[rows, 2] |= 1
            elements.flush()
    finally:
        del elements
    # A dead element's label leaves the maps, and so does every id that is not live or that the
    # log deletes (one added again after its deletion is given a new element by the log).
    for i in np.flatnonzero(dead).tolist():
        cid = label_to_id.pop(labels[i], None)
        if cid is not None and id_to_label.get(cid) == labels[i]:
            del id_to_label[cid]
    gone = {cid for cid in id_to_label if cid not in live or cid in deleted_after}
    gone |= {cid for cid in label_to_id.values() if cid not in live or cid in deleted_after}
    lowered = isinstance(idmap.get("max_seq_id"), int) and idmap["max_seq_id"] > last
    if not rows.size and not gone and not lowered:
        return count, 0  # nothing in the map to change
    idmap["id_to_label"] = {cid: lab for cid, lab in id_to_label.items() if cid not in gone}
    idmap["label_to_id"] = {lab: cid for lab, cid in label_to_id.items() if cid not in gone}
    if isinstance(idmap.get("id_to_seq_id"), dict):
        idmap["id_to_seq_id"] = {cid: s for cid, s in idmap["id_to_seq_id"].items()
                                 if cid in idmap["id_to_label"]}
    if lowered:
        idmap["max_seq_id"] = last
    protocol = idmap.pop("_protocol")
    (seg_dir / MAP).write_bytes(pickle.dumps(idmap, protocol=protocol))
    return count, int(dead.sum())
