"""The sealed stream both the vault and the index snapshot are written as.

``MAGIC | u16 version | u32 n | header JSON (n bytes) | chunks…``. Each chunk is ``u32 length |
AES-256-GCM(plaintext ≤ 1 MiB)`` with nonce = an 8-byte prefix from the header ‖ u32 counter, and
the SHA-256 of everything before the first chunk plus a last-chunk flag (0 or 1) as associated
data: a changed byte, a reordered or missing chunk, an edited header or a cut-off end is refused.
The header (chosen by the caller: salts, KDF parameters, the nonce prefix) is authenticated, not
secret. This module knows nothing of what the plaintext means.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CHUNK = 1 << 20
TAG = 16
_NOT_LAST, _LAST = b"\x00", b"\x01"


class Broken(Exception):
    """The chunk stream cannot be trusted. ``kind`` is one of "truncated", "too long",
    "authentication" (altered, or another key), "extra data"; ``chunk`` is its 1-based number."""

    def __init__(self, kind: str, chunk: int = 0):
        super().__init__(kind if not chunk else f"{kind} (chunk {chunk})")
        self.kind = kind
        self.chunk = chunk


def head(magic: bytes, version: int, header: dict) -> bytes:
    """The bytes before the first chunk."""
    raw = json.dumps(header).encode()
    return magic + struct.pack(">HI", version, len(raw)) + raw


def read_start(f: BinaryIO, magic: bytes) -> tuple[int, int, bytes] | None:
    """(version, header length, the bytes read) at the start of *f*; None when it does not start
    with *magic*."""
    start = f.read(len(magic) + 6)
    if len(start) < len(magic) + 6 or not start.startswith(magic):
        return None
    version, n = struct.unpack(">HI", start[len(magic):])
    return version, n, start


class Writer:
    """Buffers plaintext and writes it to *out* as sealed chunks; ``finish`` seals the last one.
    The caller has written *head* to *out* already."""

    def __init__(self, out: BinaryIO, key: bytes, prefix: bytes, head_bytes: bytes):
        if len(prefix) != 8:
            raise ValueError("the nonce prefix is 8 bytes")
        self.out, self.prefix = out, prefix
        self.aes = AESGCM(key)
        self.aad = hashlib.sha256(head_bytes).digest()
        self.buf = bytearray()
        self.counter = 0

    def write(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) > CHUNK:
            self._seal(bytes(self.buf[:CHUNK]), last=False)
            del self.buf[:CHUNK]

    def _seal(self, data: bytes, last: bool) -> None:
        nonce = self.prefix + struct.pack(">I", self.counter)
        self.counter += 1
        ct = self.aes.encrypt(nonce, data, self.aad + (_LAST if last else _NOT_LAST))
        self.out.write(struct.pack(">I", len(ct)) + ct)

    def finish(self) -> None:
        self._seal(bytes(self.buf), last=True)
        self.buf = bytearray()


def chunks(f: BinaryIO, key: bytes, prefix: bytes, head_bytes: bytes,
           max_chunk: int = CHUNK + TAG) -> Iterator[bytes]:
    """The plaintext chunks that follow the head in *f*, each authenticated before it is given;
    raises Broken at the first one that cannot be trusted. *max_chunk* bounds a chunk's stored
    length (a larger one is damage, not a reason to allocate)."""
    aes, aad, counter, last = AESGCM(key), hashlib.sha256(head_bytes).digest(), 0, False
    while not last:
        lenb = f.read(4)
        if len(lenb) < 4:
            raise Broken("truncated")
        (n,) = struct.unpack(">I", lenb)
        if n > max_chunk:
            raise Broken("too long", counter + 1)
        ct = f.read(n)
        if len(ct) < n:
            raise Broken("truncated")
        nonce = prefix + struct.pack(">I", counter)
        counter += 1
        try:
            data = aes.decrypt(nonce, ct, aad + _NOT_LAST)
        except InvalidTag:
            try:
                data, last = aes.decrypt(nonce, ct, aad + _LAST), True
            except InvalidTag:
                raise Broken("authentication", counter) from None
        if last and f.read(1):
            raise Broken("extra data")
        yield data
