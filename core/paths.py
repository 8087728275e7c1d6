"""Where Mneme keeps things: ``--home DIR`` > ``MNEME_HOME`` > the platform's data dir.

Folders are created 0700 and files 0600: the memory is one person's.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import platformdirs

APP = "mneme"


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    if home:
        path = Path(home)
    elif os.environ.get("MNEME_HOME"):
        path = Path(os.environ["MNEME_HOME"])
    else:
        path = Path(platformdirs.user_data_dir(APP, appauthor=False))
    return path.expanduser().resolve()


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def private_file(path: Path) -> None:
    """Tighten a file we created to owner-only."""
    if path.exists():
        os.chmod(path, 0o600)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Replace *path* with *data* so that a crash at any moment leaves the old file or the new
    one, never a torn one (see ``atomic_file``)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_file(path) as f:
        f.write(raw)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A file to stream into that replaces *path* only once complete: written to a private temp
    file beside it, fsynced, renamed over it, then the folder fsynced so the rename itself
    survives a power cut. An error (or a kill) leaves *path* as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def models_dir() -> Path:
    """Model files (not memory): shared by every home of this user."""
    env = os.environ.get("MNEME_MODELS_DIR")
    base = Path(env) if env else Path(platformdirs.user_cache_dir(APP, appauthor=False)) / "models"
    return ensure_private_dir(base.expanduser())


class HomeLayout:
    """The files inside one home."""

    def __init__(self, root: Path):
        self.root = root
        self.db = root / "memory.db"
        self.meta = root / "mneme.json"
        self.meta_next = root / "mneme.json.next"  # the new key's metadata while the key changes
        self.config = root / "config.json"
        self.index_snapshot = root / "index.snap"  # the vector index, encrypted (core/snapshot.py)
        self.logs = root / "logs"

    def create(self) -> "HomeLayout":
        ensure_private_dir(self.root)
        ensure_private_dir(self.logs)
        return self
