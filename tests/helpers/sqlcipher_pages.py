"""Read a SQLCipher 4 file page by page, decrypted — including free pages and the WAL — so a test
can check what forgetting really left on disk (the library only ever shows live rows).

SQLCipher 4 defaults with a raw key: 4096-byte pages, each AES-256-CBC encrypted up to its 80
reserved bytes (16-byte IV, then a 64-byte HMAC); page 1 starts with the 16-byte salt.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

PAGE = 4096
RESERVE = 80
WAL_HEADER, FRAME_HEADER = 32, 24


def _decrypt(page: bytes, number: int, key: bytes) -> bytes:
    start = 16 if number == 1 else 0
    iv = page[PAGE - RESERVE:PAGE - RESERVE + 16]
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return dec.update(page[start:PAGE - RESERVE]) + dec.finalize()


def pages(db: Path, key: bytes) -> list[bytes]:
    """Every page of the database file and of its WAL (if any), decrypted."""
    out = []
    data = Path(db).read_bytes()
    for n in range(len(data) // PAGE):
        out.append(_decrypt(data[n * PAGE:(n + 1) * PAGE], n + 1, key))
    wal = Path(str(db) + "-wal")
    if wal.exists():
        data = wal.read_bytes()
        pos = WAL_HEADER
        while pos + FRAME_HEADER + PAGE <= len(data):
            number = int.from_bytes(data[pos:pos + 4], "big")
            out.append(_decrypt(data[pos + FRAME_HEADER:pos + FRAME_HEADER + PAGE], number, key))
            pos += FRAME_HEADER + PAGE
    return out


def holds(db: Path, key: bytes, needle: bytes) -> bool:
    return any(needle in p for p in pages(db, key))
