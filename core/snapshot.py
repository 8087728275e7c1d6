"""The vector index at rest: a RAM-backed folder while unlocked, an encrypted snapshot file on disk.

Chroma's on-disk form (its SQLite file and HNSW segment files) holds vectors in plaintext, so it
only ever lives in a folder backed by RAM (``ram_folder``): ``$XDG_RUNTIME_DIR`` when that is a
private tmpfs, else a private folder (0700) in ``/dev/shm``. With neither, there is no such folder
and the index is kept in process memory only (rebuilt from the store at every unlock).

The snapshot file is a sealed stream (``core.sealed``, as the vault is: ``MAGIC | u16 version |
u32 n | header JSON | chunks…``); the header holds a random HKDF salt and nonce prefix (nothing
secret); a changed byte, a reordered or missing chunk, an edited header or a cut-off end is refused.
The key is derived from the memory's master key, so it follows a key change (the snapshot is
sealed again) and nothing but the unlocked memory can open it. The plaintext is a JSON record
(snapshot id, journal position, embedder, count) followed by the folder's files.

Written to a temp file beside the old one and renamed over it (a kill at any moment leaves the old
snapshot or the new one); the replaced file is overwritten with zeros before it is unlinked.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from mneme.core import sealed
from mneme.core.paths import atomic_file, fsync_dir

log = logging.getLogger(__name__)
MAGIC = b"MNEMEIDX"
VERSION = 1
CHUNK = sealed.CHUNK
PURPOSE = b"mneme index snapshot v1"
RAM_PREFIX = "mneme-index-"
RAM_FILESYSTEMS = ("tmpfs", "ramfs")
KeyFor = Callable[[bytes], bytes]  # HKDF salt -> 256-bit key


class SnapshotRefused(Exception):
    """The snapshot cannot be trusted (missing, damaged, altered, truncated, another key or
    stale); the index is rebuilt from the store instead."""


# -- the RAM-backed folder ------------------------------------------------------------------------
def _mounts() -> list[tuple[str, str]]:
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 3:
            out.append((parts[1].replace("\\040", " "), parts[2]))
    return out


def ram_backed(path: Path) -> bool:
    """True when *path* is on a filesystem held in memory (tmpfs/ramfs), by /proc/mounts."""
    real = os.path.realpath(path)
    best, kind = "", ""
    for point, fstype in _mounts():
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fstype
    return kind in RAM_FILESYSTEMS


def ram_root() -> Path | None:
    """Where RAM folders are made: a private, RAM-backed ``$XDG_RUNTIME_DIR``, else ``/dev/shm``
    when it is RAM-backed; None when neither is (``MNEME_INDEX_RAM`` overrides, for tests)."""
    forced = os.environ.get("MNEME_INDEX_RAM")
    if forced is not None:
        return Path(forced) if forced and ram_backed(Path(forced)) else None
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        path = Path(runtime)
        try:
            st = path.stat()
            if st.st_uid == os.getuid() and not st.st_mode & 0o077 and ram_backed(path):
                return path
        except OSError:
            pass
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and ram_backed(shm):
        return shm
    return None


def new_ram_folder() -> Path | None:
    """A fresh private (0700) folder in RAM for this process, or None when there is no RAM-backed
    place. Folders left by processes that died are removed first."""
    root = ram_root()
    if root is None:
        return None
    clean_stale_folders(root)
    return Path(tempfile.mkdtemp(prefix=f"{RAM_PREFIX}{os.getpid()}-", dir=root))


def sibling_folder(folder: Path) -> Path:
    """A new, empty private RAM folder beside *folder* (removed with the others of a process that
    died, by ``clean_stale_folders``)."""
    return Path(tempfile.mkdtemp(prefix=f"{RAM_PREFIX}{os.getpid()}-", dir=folder.parent))


def copy_folder(folder: Path) -> Path:
    """A copy of the RAM folder *folder* in a new RAM folder beside it (what a snapshot is sealed
    from while the index goes on); the caller removes it."""
    copy = sibling_folder(folder)
    try:
        shutil.copytree(folder, copy, dirs_exist_ok=True)
    except BaseException:
        shutil.rmtree(copy, ignore_errors=True)
        raise
    return copy


def clean_stale_folders(root: Path) -> None:
    """Remove our RAM folders whose process is gone (a kill -9 cannot remove its own)."""
    for path in root.glob(f"{RAM_PREFIX}*"):
        try:
            pid = int(path.name[len(RAM_PREFIX):].split("-", 1)[0])
            if path.stat().st_uid != os.getuid():
                continue
        except (ValueError, OSError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def folder_bytes(folder: Path | None) -> int:
    if folder is None or not folder.exists():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# -- the snapshot file ----------------------------------------------------------------------------
def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def write(path: Path, folder: Path, key_for: KeyFor, meta: dict) -> int:
    """Seal the files of *folder* with *meta* into *path*, atomically; returns its size. The file
    it replaces is overwritten and unlinked."""
    salt, prefix = secrets.token_bytes(16), secrets.token_bytes(8)
    head = sealed.head(MAGIC, VERSION, {"salt": salt.hex(), "nonce_prefix": prefix.hex(), "chunk": CHUNK,
                                        "cipher": "AES-256-GCM", "kdf": "HKDF-SHA256"})
    old = _keep_old(path)
    try:
        with atomic_file(path) as out:
            out.write(head)
            w = sealed.Writer(out, key_for(salt), prefix, head)
            raw = json.dumps(meta).encode()
            w.write(struct.pack(">I", len(raw)) + raw)
            for file in _files(folder):
                name = file.relative_to(folder).as_posix().encode()
                w.write(struct.pack(">H", len(name)) + name + struct.pack(">Q", file.stat().st_size))
                with open(file, "rb") as f:
                    while block := f.read(CHUNK):
                        w.write(block)
            w.write(struct.pack(">H", 0))
            w.finish()
    finally:
        if old is not None:
            scrub(old, keep=path)
    return path.stat().st_size


def read(path: Path, folder: Path, key_for: KeyFor) -> dict:
    """Open *path* into the empty *folder*; returns the sealed meta record. Raises
    SnapshotRefused (with *folder* emptied again) when the file cannot be trusted."""
    try:
        stream = _Stream(_chunks(path, key_for))
        meta = json.loads(stream.take(struct.unpack(">I", stream.take(4))[0]))
        while True:
            (n,) = struct.unpack(">H", stream.take(2))
            if n == 0:
                break
            name = stream.take(n).decode()
            target = (folder / name).resolve()
            if folder.resolve() not in target.parents:
                raise SnapshotRefused(f"a file name in it leaves its folder ({name!r})")
            (size,) = struct.unpack(">Q", stream.take(8))
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(target, "wb") as f:
                stream.copy_to(f, size)
        if stream.take(1, exact=False):
            raise SnapshotRefused("it has extra data after its end")
        return meta
    except SnapshotRefused:
        _empty(folder)
        raise
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, struct.error, OSError) as exc:
        _empty(folder)
        raise SnapshotRefused(f"it is damaged ({type(exc).__name__})") from None


class _Stream:
    """The plaintext as it is decrypted, chunk by chunk: the small fields by ``take``, a file's
    bytes written from the decrypted chunks as they are (``copy_to``: at 1M vectors, 1.9 GB that
    were copied three times more through a buffer before)."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks = chunks
        self.view = memoryview(b"")

    def _next(self) -> bool:
        chunk = next(self.chunks, None)
        if chunk is None:
            return False
        self.view = memoryview(chunk)
        return True

    def take(self, n: int, exact: bool = True) -> bytes:
        out = bytearray()
        while len(out) < n:
            if not self.view and not self._next():
                if exact:
                    raise SnapshotRefused("it is cut short (truncated)")
                break
            k = min(n - len(out), len(self.view))
            out += self.view[:k]
            self.view = self.view[k:]
        return bytes(out)

    def copy_to(self, f, n: int) -> None:
        while n:
            if not self.view and not self._next():
                raise SnapshotRefused("it is cut short (truncated)")
            k = min(n, len(self.view))
            f.write(self.view[:k])
            self.view = self.view[k:]
            n -= k


_BROKEN = {"truncated": "it is cut short (truncated)", "too long": "it is damaged (a chunk is too long)",
           "authentication": "chunk {n} fails authentication (altered, or sealed with another key)",
           "extra data": "it has extra data after its end"}


def _chunks(path: Path, key_for: KeyFor) -> Iterator[bytes]:
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise SnapshotRefused("there is none") from None
    with f:
        start = sealed.read_start(f, MAGIC)
        if start is None:
            raise SnapshotRefused("it is not an index snapshot")
        version, n, raw_start = start
        if version != VERSION or n > 4096:
            raise SnapshotRefused(f"unknown snapshot version {version}")
        header_raw = f.read(n)
        try:
            header = json.loads(header_raw)
            salt, prefix = bytes.fromhex(header["salt"]), bytes.fromhex(header["nonce_prefix"])
            if len(salt) != 16 or len(prefix) != 8:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise SnapshotRefused("its header is damaged") from None
        try:
            yield from sealed.chunks(f, key_for(salt), prefix, raw_start + header_raw)
        except sealed.Broken as exc:
            raise SnapshotRefused(_BROKEN[exc.kind].format(n=exc.chunk)) from None


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


# -- replacing and removing, without leaving old copies ---------------------------------------------
def _old_name(path: Path) -> Path:
    return path.with_name(path.name + ".old")


def _keep_old(path: Path) -> Path | None:
    """A second name for the snapshot about to be replaced, so that it can be overwritten after
    the rename (and by ``clean_leftovers`` if a kill comes in between)."""
    if not path.exists():
        return None
    old = _old_name(path)
    scrub(old, keep=path)
    os.link(path, old)
    return old


def scrub(path: Path, keep: Path | None = None) -> None:
    """Overwrite *path* with zeros and unlink it, unless it is the same file as *keep* (then only
    the extra name goes). On SSDs and copy-on-write filesystems the old blocks may survive the
    overwrite; they hold ciphertext only."""
    try:
        if keep is not None and keep.exists() and os.path.samefile(path, keep):
            path.unlink()
            return
        size = path.stat().st_size
    except FileNotFoundError:
        return
    with open(path, "r+b") as f:
        zeros = bytes(CHUNK)
        left = size
        while left > 0:
            f.write(zeros[:min(left, CHUNK)])
            left -= CHUNK
        f.flush()
        os.fsync(f.fileno())
    path.unlink()
    fsync_dir(path.parent)


def clean_leftovers(path: Path) -> None:
    """Scrub what a kill during a snapshot write can leave beside *path*: the replaced file's
    second name and a partly written temp file."""
    scrub(_old_name(path), keep=path)
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        scrub(tmp)


def remove(path: Path) -> None:
    """No snapshot any more (it would be stale or is no longer wanted)."""
    clean_leftovers(path)
    scrub(path)
