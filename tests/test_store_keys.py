"""The encrypted store and its keys: real SQLCipher files in tmp_path."""

import json

import pytest

from mneme.core import keys
from mneme.core.errors import LockedError, UserError
from mneme.core.memory import open_memory
from mneme.core.store import Store, fts_query, split_text
from tests.conftest import msg

CANARY = "zebracanary7731"


def test_store_file_is_encrypted_and_needs_the_key(tmp_path):
    path = tmp_path / "m.db"
    store = Store(path, b"k" * 32)
    store.add_messages([msg(1, f"the secret is {CANARY}")])
    store.close()
    raw = path.read_bytes()
    assert CANARY.encode() not in raw and b"SQLite format 3" not in raw
    with pytest.raises(LockedError, match="key is wrong"):
        Store(path, b"x" * 32)
    again = Store(path, b"k" * 32)
    assert again.keyword_search(CANARY, 5)
    assert again.migrations() == ["m001_initial", "m002_frames", "m003_searchable_fields", "m004_scoped_ids",
                                  "m005_index_journal", "m006_keyword_merge"]
    again.close()


def test_database_from_a_newer_mneme_is_refused(tmp_path):
    store = Store(tmp_path / "m.db", b"k" * 32)
    with store.transaction() as db:
        db.execute("INSERT INTO schema_migrations VALUES ('m999_future', 0)")
    store.close()
    with pytest.raises(UserError, match="newer Mneme"):
        Store(tmp_path / "m.db", b"k" * 32)


def test_readding_the_same_messages_adds_nothing(tmp_path):
    store = Store(tmp_path / "m.db", b"k" * 32)
    assert store.add_messages([msg(1, "a"), msg(2, "b")]) == (2, 0)
    assert store.add_messages([msg(1, "a"), msg(2, "b"), msg(3, "c")]) == (1, 2)
    assert store.counts("x")["sources"] == 3
    store.close()


def test_failed_transaction_leaves_nothing(tmp_path):
    store = Store(tmp_path / "m.db", b"k" * 32)

    def boom():
        yield msg(1, "first")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        store.add_messages(boom())
    assert store.counts("x")["sources"] == 0
    assert store.keyword_search("first", 5) == []
    store.close()


def test_forget_removes_text_from_fts_and_pages(tmp_path):
    store = Store(tmp_path / "m.db", b"k" * 32)
    store.add_messages([msg(1, "keep this"), msg(2, f"forget {CANARY}", app="Slack")])
    deleted = store.forget(app="Slack")
    assert len(deleted) == 1
    assert store.keyword_search(CANARY, 5) == []
    assert store.keyword_search("keep", 5)
    assert store.check() == []
    store.close()


def test_fts_query_cannot_inject_syntax():
    assert fts_query('NEAR("ab" cd) OR * -xy "') == '"near" OR "ab" OR "cd" OR "xy"'  # "or" is a stopword
    assert fts_query("!!!") == ""


def test_split_text_keeps_everything():
    text = " ".join(f"word{i}" for i in range(600))
    pieces = split_text(text, 800)
    assert all(len(p) <= 800 for p in pieces) and len(pieces) > 1
    assert " ".join(pieces).split() == text.split()


def test_passphrase_mode_wrong_passphrase_and_env(open_mem, monkeypatch, isolated_home):
    mem = open_mem(key_mode="passphrase")
    mem.import_messages([msg(1, "hello there")])
    mem.close()
    meta = json.loads((isolated_home / "mneme.json").read_text())
    assert meta["mode"] == "passphrase" and "key" not in json.dumps(meta).replace("keyring_id", "")
    monkeypatch.setenv("MNEME_PASSPHRASE", "wrong")
    with pytest.raises(LockedError, match="key is wrong"):
        open_mem()
    monkeypatch.delenv("MNEME_PASSPHRASE")
    with pytest.raises(LockedError, match="none was given"):
        open_mem()
    mem = open_mem(passphrase=lambda q: "correct horse")
    assert mem.store.counts("x")["sources"] == 1


def test_keyring_mode_keeps_a_random_key_in_the_keyring(fake_embedder, monkeypatch, isolated_home):
    mem = open_memory(embedder=fake_embedder, key_mode="keyring")
    mem.import_messages([msg(1, "hello there")])
    meta = keys.KeyMeta.load(isolated_home / "mneme.json")
    backend, _ = keys._keyring()
    stored = backend.get_password(keys.KEYRING_SERVICE, f"master-key:{meta.keyring_id}")
    assert len(bytes.fromhex(stored)) == 32
    mem.close()
    mem = open_memory(embedder=fake_embedder)
    assert mem.store.counts("x")["sources"] == 1
    # Switch to a passphrase: the store is re-encrypted and the keyring entry removed.
    mem.change_key_mode("passphrase", lambda q: "new pass")
    mem.close()
    assert backend.get_password(keys.KEYRING_SERVICE, f"master-key:{meta.keyring_id}") is None
    monkeypatch.setenv("MNEME_PASSPHRASE", "new pass")
    mem = open_memory(embedder=fake_embedder)
    assert mem.store.counts("x")["sources"] == 1
    mem.close()


def test_no_keyring_backend_says_so_and_offers_passphrase(monkeypatch, fake_embedder):
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    with pytest.raises(UserError) as err:
        open_memory(embedder=fake_embedder, key_mode="keyring")
    assert "no OS keyring" in str(err.value) and "--passphrase" in err.value.hint


def test_plaintext_keyrings_are_not_used_unless_asked_for(monkeypatch):
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND")
    backend, _ = keys._keyring()
    assert backend is None or not type(backend).__module__.startswith("keyrings.alt")


def test_a_migration_that_only_adds_a_table_does_not_rewrite_the_file(tmp_path):
    """The first open after m006 (a table of its own) must not VACUUM the whole memory: a VACUUM
    empties the free list, so free pages left before the upgrade must still be there after it."""
    path = tmp_path / "m.db"
    store = Store(path, b"k" * 32)
    store.add_messages([msg(i, f"message number {i} " + "words " * 200) for i in range(200)])
    store.forget(since=0)  # frees the pages those messages held
    with store.transaction() as db:
        db.execute("DROP TABLE keyword_merge")
        db.execute("DELETE FROM schema_migrations WHERE name = 'm006_keyword_merge'")
    free = store._q("PRAGMA freelist_count")[0][0]
    store.close()
    assert free > 0
    again = Store(path, b"k" * 32)
    assert "m006_keyword_merge" in again.migrations()
    assert again._q("PRAGMA freelist_count")[0][0] > 0, "the upgrade rewrote the file (VACUUM)"
    again.close()
