"""The vault: the whole memory as one encrypted, authenticated file, to carry or back up.

Layout: a sealed stream (``core.sealed``: ``MAGIC | u16 version | u32 n | header JSON | chunks…``,
AES-256-GCM chunks of ≤ 1 MiB bound to the header and their order). The header holds the Argon2id
parameters and salt, a key-check value and a random nonce prefix — nothing secret; any changed
byte, reordered or missing chunk, edited header or cut-off end is refused. The plaintext is a stream of records
(config, sources with their text and vectors, frames), so export and import run in bounded memory.
Import is one transaction: all of the vault or none of it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import struct
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from argon2.low_level import Type, hash_secret_raw

from mneme.core import sealed
from mneme.core.errors import BadInputError, UserError
from mneme.core.keys import kdf_problem
from mneme.core.paths import private_file, write_atomic

MAGIC = b"MNEMEVLT"
VERSION = 1
CHUNK = sealed.CHUNK
KDF = {"name": "argon2id", "time_cost": 3, "memory_kib": 65536, "parallelism": 1}
REC_CONFIG, REC_SOURCE, REC_FRAME, REC_END = 1, 2, 3, 255
BATCH = 500
EXPORTING = "exporting.json"  # in the home while an export runs: where its partial file is
Progress = Callable[[int, int], None]


class Cancelled(UserError):
    def __init__(self):
        super().__init__("cancelled; nothing was changed")


def _keys(passphrase: str, salt: bytes, kdf: dict) -> tuple[bytes, bytes]:
    if not passphrase:
        raise UserError("the vault passphrase is empty", "choose a passphrase")
    raw = hash_secret_raw(passphrase.encode(), salt, time_cost=int(kdf["time_cost"]),
                          memory_cost=int(kdf["memory_kib"]), parallelism=int(kdf["parallelism"]),
                          hash_len=64, type=Type.ID)
    return raw[:32], raw[32:]


def _check_value(check_key: bytes) -> str:
    return hmac.new(check_key, b"mneme vault key check", hashlib.sha256).hexdigest()[:32]


# -- writing ---------------------------------------------------------------------------------------
class _Writer:
    """Writes the record stream as a sealed stream."""

    def __init__(self, out, passphrase: str, kdf: dict):
        salt = secrets.token_bytes(16)
        key, check = _keys(passphrase, salt, kdf)
        prefix = secrets.token_bytes(8)
        head = sealed.head(MAGIC, VERSION, {
            "kdf": {**kdf, "salt": salt.hex()}, "check": _check_value(check), "nonce_prefix": prefix.hex(),
            "chunk": CHUNK, "cipher": "AES-256-GCM",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        out.write(head)
        self._out = sealed.Writer(out, key, prefix, head)

    def record(self, kind: int, payload: bytes) -> None:
        self._out.write(struct.pack(">BI", kind, len(payload)) + payload)

    def finish(self) -> None:
        self._out.finish()


def _blob(meta: dict, *parts: bytes) -> bytes:
    j = json.dumps(meta).encode()
    return struct.pack(">I", len(j)) + j + b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _unblob(payload: bytes, nparts: int) -> tuple[dict, list[bytes]]:
    (n,) = struct.unpack_from(">I", payload, 0)
    meta, pos, parts = json.loads(payload[4:4 + n]), 4 + n, []
    for _ in range(nparts):
        (m,) = struct.unpack_from(">I", payload, pos)
        parts.append(payload[pos + 4:pos + 4 + m])
        pos += 4 + m
    return meta, parts


def export_vault(memory, path: str | os.PathLike[str], passphrase: str, progress: Progress | None = None,
                 cancel: threading.Event | None = None, kdf: dict | None = None) -> dict:
    """Write the whole memory to *path* (atomically: a partial file never takes its name)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    tmp.unlink(missing_ok=True)  # left by an export that was killed
    record = memory.home / EXPORTING
    write_atomic(record, json.dumps({"part": str(tmp.resolve()), "pid": os.getpid()}))
    store = memory.store
    total = store.counts("")["sources"]
    done = 0
    try:
        with open(tmp, "wb") as f:
            private_file(tmp)
            w = _Writer(f, passphrase, kdf or KDF)
            w.record(REC_CONFIG, json.dumps(memory.config.as_dict()).encode())
            for rows in store.export_batches(BATCH):
                for src, texts, vectors, frame in rows:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled()
                    vec_bytes = b"".join(v for v in vectors if v is not None)
                    meta = {**src, "chunks": texts, "vectors": [v is not None for v in vectors]}
                    w.record(REC_SOURCE, _blob(meta, vec_bytes))
                    if frame is not None:
                        fmeta = {k: frame[k] for k in ("monitor", "width", "height", "words")}
                        w.record(REC_FRAME, _blob({**fmeta, "source": src["id"]}, frame["image"], frame["thumb"]))
                    done += 1
                if progress:
                    progress(done, total)
            w.record(REC_END, json.dumps({"sources": done}).encode())
            w.finish()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        record.unlink(missing_ok=True)
    return {"sources": done, "bytes": path.stat().st_size}


def clean_killed_export(home: Path) -> None:
    """Remove the partial file of an export that was killed (its process is gone)."""
    record = Path(home) / EXPORTING
    try:
        info = json.loads(record.read_text())
        part, pid = Path(info["part"]), int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        record.unlink(missing_ok=True)
        return
    try:
        os.kill(pid, 0)
        if pid != os.getpid():
            return  # still exporting
    except ProcessLookupError:
        pass
    except PermissionError:
        return
    if part.name.endswith(".part"):
        part.unlink(missing_ok=True)
    record.unlink(missing_ok=True)


# -- reading ---------------------------------------------------------------------------------------
_BROKEN = {"truncated": "the file is cut short (truncated)", "too long": "damaged",
           "authentication": "damaged or altered (chunk {n} fails authentication)",
           "extra data": "has extra data after its end"}


def _refuse(path: Path, why: str, hint: str = "nothing was imported") -> BadInputError:
    return BadInputError(f"{path}: {why}; nothing was imported", hint)


def read_header(f, path: Path) -> tuple[dict, bytes]:
    head = f.read(len(MAGIC) + 6)
    if len(head) < len(MAGIC) + 6 or head[:len(MAGIC)] != MAGIC:
        raise _refuse(path, "not a Mneme vault", "vaults are made with `mneme export`")
    version, n = struct.unpack(">HI", head[len(MAGIC):])
    raw = f.read(n) if n <= 65536 else b""
    try:
        header = json.loads(raw)
        readable = isinstance(header, dict)
    except ValueError:  # also bad UTF-8
        header, readable = None, False
    if not readable or version < 1:  # random bytes after the magic are damage, not a new format
        raise _refuse(path, "damaged header")
    if version > VERSION:
        raise _refuse(path, f"made by a newer Mneme (vault format {version}, this one reads {VERSION})",
                      "update Mneme to import it")
    try:
        _ = header["kdf"]["salt"], header["check"], header["nonce_prefix"]
    except (KeyError, TypeError):
        raise _refuse(path, "damaged header") from None
    return header, head + raw


def _records(path: Path, passphrase: str, progress: Progress | None) -> Iterator[tuple[int, bytes]]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        header, head = read_header(f, path)
        try:
            kdf = header["kdf"]
            salt = bytes.fromhex(kdf["salt"])
            prefix = bytes.fromhex(header["nonce_prefix"])
            if kdf_problem(kdf, salt) or len(prefix) != 8:  # checked before any work is done
                raise ValueError
            key, check = _keys(passphrase, salt, kdf)
        except (ValueError, KeyError, TypeError):
            raise _refuse(path, "damaged header") from None
        if not hmac.compare_digest(_check_value(check), str(header["check"])):
            raise _refuse(path, "wrong vault passphrase (or a changed header)", "check the passphrase")
        buf = bytearray()
        try:
            for data in sealed.chunks(f, key, prefix, head, max_chunk=CHUNK + 64):
                buf += data
                if progress:
                    progress(f.tell(), size)
                pos = 0
                while len(buf) - pos >= 5:
                    kind, m = struct.unpack_from(">BI", buf, pos)
                    if len(buf) - pos - 5 < m:
                        break
                    yield kind, bytes(buf[pos + 5:pos + 5 + m])
                    pos += 5 + m
                del buf[:pos]
        except sealed.Broken as exc:
            raise _refuse(path, _BROKEN[exc.kind].format(n=exc.chunk)) from None
        if buf:
            raise _refuse(path, "damaged (a record is cut off)")


def import_vault(memory, path: str | os.PathLike[str], passphrase: str, progress: Progress | None = None,
                 cancel: threading.Event | None = None) -> dict:
    """Restore into an empty memory exactly (same ids), or merge: what is already there is kept
    and not doubled. All or nothing."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such file", "check the path")
    store = memory.store
    restore = store.counts("")["sources"] == 0
    result = {"added": 0, "duplicates": 0, "restored_ids": restore, "bad_vectors": 0}
    dims = {memory.embedder.id: memory.embedder.dim} if memory.embedder is not None else {}
    ended = False
    with store.transaction() as db:
        id_map: dict[int, int | None] = {}
        config = None
        for kind, payload in _records(path, passphrase, progress):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if ended:
                raise _refuse(path, "has records after its end")
            try:
                if kind == REC_CONFIG:
                    config = json.loads(payload)
                elif kind == REC_SOURCE:
                    meta, (vecs,) = _unblob(payload, 1)
                    new_id, bad = store.import_source(db, meta, vecs, keep_id=restore, dims=dims)
                    result["bad_vectors"] += bad
                    id_map[meta["id"]] = new_id
                    result["added" if new_id else "duplicates"] += 1
                elif kind == REC_FRAME:
                    meta, (image, thumb) = _unblob(payload, 2)
                    target = id_map.get(meta["source"])
                    if target:
                        store.import_frame(db, target, meta, image, thumb)
                elif kind == REC_END:
                    ended = True
                    if json.loads(payload)["sources"] != len(id_map):
                        raise _refuse(path, "damaged (record count does not match)")
                else:
                    raise _refuse(path, f"has an unknown record type {kind}", "update Mneme")
            except (ValueError, KeyError, TypeError, struct.error):
                raise _refuse(path, "damaged (a record cannot be read)") from None
        if not ended:
            raise _refuse(path, "the file is cut short (no end record)")
    if restore and config:
        for name, value in config.items():
            try:
                memory.config.set(name, value)
            except UserError:
                pass  # a setting this version does not know is left out
        memory.config.save()
    memory.doctor(repair=True)  # bring the vector index up to date with what arrived
    return result


