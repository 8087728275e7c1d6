"""The encrypted vault: round trip, merge, every refusal, and a fuzz of mutated vaults."""

import json
import random
import struct

import pytest

from mneme.core.errors import BadInputError
from mneme.core.memory import open_memory
from mneme.core.records import FrameIn
from mneme.core.vault import MAGIC, export_vault, import_vault
from tests.conftest import msg, run_cli

FAST_KDF = {"name": "argon2id", "time_cost": 1, "memory_kib": 1024, "parallelism": 1}
CANARY = "okapicanary2281"


WORDS = "garden tomatoes beans river invoice lamp violin harbour pepper orchard kettle meadow".split()


def filled(open_mem, embedder):
    mem = open_mem(embedder=embedder)
    rng = random.Random(7)
    mem.import_messages([msg(i, f"note {i}: " + " ".join(rng.sample(WORDS, 5))) for i in range(300)]
                        + [msg(999, f"the safe code is {CANARY}", app="Notes")])
    mem.add_frame(FrameIn("frame-1", 1_700_000_500, 1, "editor", "plan.txt", 10, 10, b"IMG" * 500,
                          b"THUMB", "frame text about the beans plan", "[]"))
    mem.embed_pending()
    mem.wait_caught_up()
    mem.config.set("capture_interval", 5.0)
    return mem


def snapshot(mem):
    rows = mem.store._q("SELECT s.id, s.kind, s.external_id, s.time, s.app, s.title, c.seq, c.text "
                        "FROM sources s JOIN chunks c ON c.source_id = s.id ORDER BY s.id, c.seq")
    frames = mem.store._q("SELECT source_id, image, thumb FROM frames ORDER BY source_id")
    vectors = mem.store._q("SELECT c.source_id, c.seq, e.vector FROM embeddings e JOIN chunks c "
                           "ON c.id = e.chunk_id ORDER BY c.source_id, c.seq")
    return rows, frames, vectors


def search_ids(mem, query):
    return [h.source_ids for h in mem.search(query, limit=10).hits]


@pytest.fixture
def vault(open_mem, tmp_path, real_embedder):
    mem = filled(open_mem, real_embedder)
    path = tmp_path / "memory.mnemevault"
    info = export_vault(mem, path, "vault pass", kdf=FAST_KDF)
    assert info["sources"] == 302
    expected = snapshot(mem), search_ids(mem, "garden tomatoes"), search_ids(mem, "beans plan")
    mem.close()
    return path, expected


def other_home(tmp_path, name, embedder):
    return open_memory(tmp_path / name, embedder=embedder)


def test_round_trip_into_an_empty_home_is_exact(vault, tmp_path, real_embedder):
    path, (snap, garden, beans) = vault
    assert CANARY.encode() not in path.read_bytes() and b"tomatoes" not in path.read_bytes()
    mem = other_home(tmp_path, "restored", real_embedder)
    result = import_vault(mem, path, "vault pass")
    assert result["added"] == 302 and result["restored_ids"]
    mem.wait_ready(30)
    assert snapshot(mem) == snap
    assert search_ids(mem, "garden tomatoes") == garden and search_ids(mem, "beans plan") == beans
    assert mem.config["capture_interval"] == 5.0
    assert mem.doctor() == []
    mem.close()


def test_merge_twice_adds_nothing(vault, tmp_path, real_embedder):
    path, (snap, _, _) = vault
    mem = other_home(tmp_path, "merge", real_embedder)
    mem.import_messages([msg(5000, "something of this machine's own")])
    first = import_vault(mem, path, "vault pass")
    second = import_vault(mem, path, "vault pass")
    assert first["added"] == 302 and second == {"added": 0, "duplicates": 302, "restored_ids": False, "bad_vectors": 0}
    assert mem.store.counts("")["sources"] == 303 and mem.store.frame_usage()[0] == 1
    assert mem.doctor() == []
    mem.close()


def _refused(path, tmp_path, fake_embedder, passphrase="vault pass", match=None):
    mem = other_home(tmp_path, f"r{random.random()}", fake_embedder)
    try:
        with pytest.raises(BadInputError, match=match):
            import_vault(mem, path, passphrase)
        assert mem.store.counts("")["sources"] == 0  # nothing imported
    finally:
        mem.close()


def test_refusals(vault, tmp_path, fake_embedder):
    path, _ = vault
    data = path.read_bytes()
    bad = tmp_path / "bad.vault"
    _refused(path, tmp_path, fake_embedder, "wrong pass", "wrong vault passphrase")
    bad.write_bytes(data[:-100])
    _refused(bad, tmp_path, fake_embedder, match="cut short")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(flipped))
    _refused(bad, tmp_path, fake_embedder, match="damaged or altered")
    bad.write_bytes(MAGIC + struct.pack(">HI", 99, 2) + b"{}")
    _refused(bad, tmp_path, fake_embedder, match="newer Mneme")
    bad.write_bytes(b"PK\x03\x04 a zip file, not a vault" * 10)
    _refused(bad, tmp_path, fake_embedder, match="not a Mneme vault")
    bad.write_bytes(data + b"extra")
    _refused(bad, tmp_path, fake_embedder, match="extra data")
    # A header edit (here: the creation date) breaks every chunk's authentication.
    n = struct.unpack(">I", data[len(MAGIC) + 2:len(MAGIC) + 6])[0]
    header = json.loads(data[len(MAGIC) + 6:len(MAGIC) + 6 + n])
    header["created"] = "1999-01-01T00:00:00+00:00"
    raw = json.dumps(header).encode()
    bad.write_bytes(MAGIC + struct.pack(">HI", 1, len(raw)) + raw + data[len(MAGIC) + 6 + n:])
    _refused(bad, tmp_path, fake_embedder, match="damaged or altered")


def test_fuzzed_vaults_are_all_refused_cleanly(vault, tmp_path, fake_embedder):
    path, _ = vault
    data = path.read_bytes()
    rng = random.Random(1234)
    mem = other_home(tmp_path, "fuzz", fake_embedder)
    bad = tmp_path / "fuzz.vault"
    for case in range(150):
        mutated = bytearray(data)
        how = case % 3
        if how == 0:
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] ^= rng.randint(1, 255)
        elif how == 1:
            del mutated[rng.randrange(len(mutated)):]
        else:
            pos = rng.randrange(len(MAGIC) + 6, len(MAGIC) + 200)
            mutated[pos:pos + 3] = bytes(rng.randrange(256) for _ in range(3))
        bad.write_bytes(bytes(mutated))
        with pytest.raises(BadInputError):
            import_vault(mem, bad, "vault pass")
    assert mem.store.counts("")["sources"] == 0
    mem.close()


def test_cli_export_and_import(tmp_path):
    chats = tmp_path / "c.jsonl"
    chats.write_text(json.dumps({"id": "1", "conversation": "c", "time": "2024-01-01T00:00:00Z",
                                 "speaker": "a", "text": f"remember {CANARY}"}) + "\n")
    env = {"MNEME_PASSPHRASE": "p", "MNEME_VAULT_PASSPHRASE": "v"}
    run_cli("import", "chats", chats, env=env)
    out = tmp_path / "m.vault"
    assert "Wrote 1 items" in run_cli("export", out, env=env).stdout
    other = {**env, "MNEME_HOME": str(tmp_path / "other")}
    assert "Imported 1 items" in run_cli("import", "vault", out, env=other).stdout
    assert CANARY in run_cli("search", CANARY, env=other).stdout
    proc = run_cli("import", "vault", out, env={**other, "MNEME_VAULT_PASSPHRASE": "nope"}, check=False)
    assert proc.returncode == 2 and "wrong vault passphrase" in proc.stderr
    assert not any(p.name.endswith(".part") for p in tmp_path.iterdir())
