"""core.sealed, the one chunked AES-GCM stream of the vault and the index snapshot; and a vault
written before the two shared it (``tests/data/vault-before-sealed.mnemevault``, exported by the
vault code of main at 0755be2, see ``tests/data/README.md``) still imports, exactly."""

import hashlib
import io
import json
import secrets
import struct
from pathlib import Path

import numpy as np
import pytest

from mneme.core import sealed
from mneme.core.vault import import_vault

DATA = Path(__file__).parent / "data"
MAGIC = b"TESTSEAL"


def sealed_bytes(plaintext: bytes, key: bytes, prefix: bytes) -> bytes:
    out = io.BytesIO()
    head = sealed.head(MAGIC, 1, {"nonce_prefix": prefix.hex()})
    out.write(head)
    w = sealed.Writer(out, key, prefix, head)
    for start in range(0, len(plaintext), 70_000):  # written in pieces that do not match chunks
        w.write(plaintext[start:start + 70_000])
    w.finish()
    return out.getvalue()


def opened(data: bytes, key: bytes) -> bytes:
    f = io.BytesIO(data)
    version, n, start = sealed.read_start(f, MAGIC)
    raw = f.read(n)
    prefix = bytes.fromhex(json.loads(raw)["nonce_prefix"])
    return b"".join(sealed.chunks(f, key, prefix, start + raw))


def test_round_trip_and_every_kind_of_damage_is_refused():
    key, prefix = secrets.token_bytes(32), secrets.token_bytes(8)
    plaintext = np.random.default_rng(1).bytes(sealed.CHUNK * 2 + 12345)
    data = sealed_bytes(plaintext, key, prefix)
    assert opened(data, key) == plaintext
    assert plaintext[1000:1100] not in data
    assert opened(sealed_bytes(b"", key, prefix), key) == b""

    def kind(bad: bytes, with_key: bytes = key) -> str:
        with pytest.raises(sealed.Broken) as err:
            opened(bad, with_key)
        return err.value.kind

    first = len(data) - 2 * (sealed.CHUNK + 16 + 4) - (12345 + 16 + 4)  # where the first chunk starts
    assert kind(data[:-10]) == "truncated"
    assert kind(data[:first + sealed.CHUNK + 20]) == "truncated"  # cut after the first chunk
    assert kind(data + b"x") == "extra data"
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    assert kind(bytes(flipped)) == "authentication"
    assert kind(data, secrets.token_bytes(32)) == "authentication"  # another key
    one = sealed.CHUNK + 16 + 4
    swapped = data[:first] + data[first + one:first + 2 * one] + data[first:first + one] + data[first + 2 * one:]
    assert kind(swapped) == "authentication"  # chunks reordered
    assert kind(data[:first] + data[first + one:]) == "authentication"  # a chunk left out
    edited = data.replace(b'"nonce_prefix"', b'"nonce_prefiX"', 1)
    f = io.BytesIO(edited)
    _, n, start = sealed.read_start(f, MAGIC)
    raw = f.read(n)
    with pytest.raises(sealed.Broken):  # an edited header: every chunk fails
        b"".join(sealed.chunks(f, key, prefix, start + raw))
    huge = data[:first] + struct.pack(">I", sealed.CHUNK + 17) + data[first + 4:]
    assert kind(huge) == "too long"


def test_a_vault_written_before_the_shared_stream_still_imports(open_mem, fake_embedder):
    path = DATA / "vault-before-sealed.mnemevault"
    expected = json.loads((DATA / "vault-before-sealed.json").read_text())
    mem = open_mem()
    result = import_vault(mem, path, expected["passphrase"])
    assert result == {"added": len(expected["texts"]), "duplicates": 0, "restored_ids": True, "bad_vectors": 0}
    rows = mem.store._q("SELECT s.external_id, c.text, e.vector FROM sources s JOIN chunks c ON c.source_id = s.id "
                        "JOIN embeddings e ON e.chunk_id = c.id ORDER BY s.id")
    assert [r[1] for r in rows] == expected["texts"]
    assert [hashlib.sha256(r[2]).hexdigest() for r in rows] == expected["vector_sha256"]  # the same vectors
    assert mem.search(expected["query"], limit=1).hits[0].text == expected["texts"][expected["answer"]]
    mem.close()
