"""Imported ids are unique only within one export's conversation: the same "1" from Slack and from
Discord, or "m1" from ChatGPT and from a JSONL file, are different messages. The id itself is
kept exactly as given; importing the same file again still adds nothing."""

import json

from mneme.core import store as store_module
from mneme.core.memory import open_memory
from mneme.core.store import Store
from tests.conftest import run_cli

PASS = {"MNEME_PASSPHRASE": "correct horse"}


def jsonl(path, conv, app, ids, word):
    path.write_text("".join(json.dumps({"id": i, "conversation": conv, "time": f"2024-03-01T10:0{n}:00Z",
                                        "speaker": "Anna", "text": f"{word} message {i}", "app": app}) + "\n"
                            for n, i in enumerate(ids)))
    return path


def chatgpt(path, ids):
    path.write_text(json.dumps([{"title": "Trip", "create_time": 1_700_000_000, "mapping": {
        i: {"message": {"id": i, "author": {"role": "user"}, "create_time": 1_700_000_000 + n,
                        "content": {"parts": [f"chatgpt message {i}"]}}} for n, i in enumerate(ids)}}]))
    return path


def test_ids_are_scoped_by_format_and_conversation(tmp_path, monkeypatch):
    slack = jsonl(tmp_path / "slack.jsonl", "Slack #general", "Slack", ["1", "2", "m1"], "slack")
    discord = jsonl(tmp_path / "discord.jsonl", "Discord #general", "Discord", ["1", "2"], "discord")
    gpt = chatgpt(tmp_path / "conversations.json", ["m1"])
    assert "Imported 3 messages" in run_cli("import", "chats", slack, env=PASS).stdout
    assert "Imported 2 messages" in run_cli("import", "chats", discord, env=PASS).stdout  # 0 before
    assert "Imported 1 messages" in run_cli("import", "chats", gpt, env=PASS).stdout  # 0 before
    for f in (slack, discord, gpt):  # idempotent
        assert "Imported 0 messages" in run_cli("import", "chats", f, env=PASS).stdout
    hits = json.loads(run_cli("search", "discord message", "--json", env=PASS).stdout)
    monkeypatch.setenv("MNEME_PASSPHRASE", PASS["MNEME_PASSPHRASE"])
    with open_memory(embedder=None, warm=False) as mem:
        ids = sorted(mem.store.source(h["source_ids"][0]).external_id for h in hits if "discord" in h["text"])
        assert ids == ["1", "2"]  # exactly as given
        assert mem.store.counts("")["sources"] == 6


def test_a_memory_from_before_scopes_is_migrated_in_place(tmp_path, monkeypatch):
    path, key = tmp_path / "m.db", b"k" * 32
    with monkeypatch.context() as m:
        m.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:2])
        old = Store(path, key)
        with old.transaction() as db:
            for n, (conv, app) in enumerate([("Slack #general", "Slack"), ("ChatGPT: Trip", "ChatGPT")]):
                sid = db.execute("INSERT INTO sources(kind, external_id, time, app, conversation, title, speaker) "
                                 "VALUES ('chat', 'm1', ?, ?, ?, '', 'Anna')", (1_700_000_000 + n, app, conv)
                                 ).lastrowid if n == 0 else None
                if sid:
                    db.execute("INSERT INTO chunks(source_id, seq, text) VALUES (?, 0, 'slack message m1')", (sid,))
                    db.execute("INSERT INTO embeddings VALUES (1, 'e', x'00000000')")
        old.close()
    store = Store(path, key)
    assert "m004_scoped_ids" in store.migrations()
    # nothing cascaded (vectors are made again: m003 embeds each message with the one it answers)
    assert store.counts("e") == {"sources": 1, "chunks": 1, "embedded": 0, "sources_chat": 1}
    assert store.keyword_search("slack", 5) and store.check() == []
    from mneme.capture.chats import parse_file

    again = parse_file(jsonl(tmp_path / "s.jsonl", "Slack #general", "Slack", ["m1"], "slack"))
    assert store.add_messages(again.messages) == (0, 1)  # the old row is recognised
    assert store.add_messages(parse_file(chatgpt(tmp_path / "conversations.json", ["m1"])).messages) == (1, 0)
    store.close()
