"""Chat importers: each format, auto-detection, and every bad-input case."""

import json
from datetime import datetime, timezone

import pytest

from mneme.capture.chats import parse_file
from mneme.core.errors import BadInputError


def jsonl(tmp_path, lines, name="chats.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


GOOD = {"id": "1", "conversation": "Slack #eng", "time": "2024-03-05T14:00:00Z", "speaker": "Anna",
        "text": "deploy is frozen until Friday", "title": "eng"}


def test_jsonl_reads_all_fields(tmp_path):
    parsed = parse_file(jsonl(tmp_path, [GOOD, {**GOOD, "id": "2", "text": "ok"}]))
    assert parsed.format == "jsonl" and len(parsed.messages) == 2
    m = parsed.messages[0]
    assert (m.external_id, m.conversation, m.speaker, m.title) == ("1", "Slack #eng", "Anna", "eng")
    assert m.time == datetime(2024, 3, 5, 14, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("bad, message", [
    ("{not json", "chats.jsonl:2: not valid JSON"),
    ('["a list"]', "chats.jsonl:2: expected a JSON object"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "time"}), "chats.jsonl:2: missing field 'time'"),
    (json.dumps({**GOOD, "text": 5}), "chats.jsonl:2: field 'text' must be a string"),
    (json.dumps({**GOOD, "time": "last tuesday"}), "chats.jsonl:2: field 'time' is not ISO-8601"),
    (json.dumps({**GOOD, "id": ""}), "chats.jsonl:2: field 'id' is empty"),
])
def test_jsonl_bad_line_is_refused_with_its_line(tmp_path, bad, message):
    path = jsonl(tmp_path, [GOOD, bad, {**GOOD, "id": "3"}])
    with pytest.raises(BadInputError) as err:
        parse_file(path)
    assert message in err.value.message and "nothing was imported" in err.value.message
    assert "--skip-bad" in err.value.hint
    parsed = parse_file(path, skip_bad=True)
    assert [m.external_id for m in parsed.messages] == ["1", "3"]
    assert len(parsed.skipped) == 1 and parsed.skipped[0].startswith("chats.jsonl:2:")


def chatgpt_export():
    def node(nid, role, text, t, parent=None):
        return {"id": nid, "parent": parent, "children": [], "message": {
            "id": nid, "author": {"role": role}, "create_time": t,
            "content": {"content_type": "text", "parts": [text]}}}
    return [{"title": "Sourdough help", "create_time": 1700000000.0, "mapping": {
        "root": {"id": "root", "message": None, "children": ["a"]},
        "s": node("s", "system", "You are ChatGPT", 1700000000.0),
        "a": node("a", "user", "How long should I proof sourdough?", 1700000001.0, "root"),
        "b": node("b", "assistant", "Bulk ferment 4-6 hours at 24C.", 1700000002.0, "a")}}]


def test_chatgpt_export(tmp_path):
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(chatgpt_export()))
    parsed = parse_file(path)
    assert parsed.format == "chatgpt"
    assert [(m.speaker, m.text) for m in parsed.messages] == [
        ("you", "How long should I proof sourdough?"), ("ChatGPT", "Bulk ferment 4-6 hours at 24C.")]
    assert parsed.messages[0].title == "Sourdough help" and parsed.messages[0].app == "ChatGPT"


def test_chatgpt_bad_conversation_is_named(tmp_path):
    data = chatgpt_export() + [{"title": "broken"}]
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BadInputError, match="conversation #2"):
        parse_file(path)
    assert len(parse_file(path, skip_bad=True).messages) == 2
    path.write_text('{"not": "a list"}')
    with pytest.raises(BadInputError, match="expected a list of conversations"):
        parse_file(path, "chatgpt")


WHATSAPP_ANDROID = """\
25/12/2023, 18:01 - Messages and calls are end-to-end encrypted.
25/12/2023, 18:02 - Anna: Merry Christmas! The gift code is in the card
with a second line
25/12/2023, 18:05 - Ben: <Media omitted>
26/12/2023, 09:15 - Ben: thanks, see you at 10
26/12/2023, 09:15 - Ben: thanks, see you at 10
"""
WHATSAPP_IOS = """\
[3/14/24, 9:05:01 PM] Anna: pi day dinner at Luigi's
[3/14/24, 9:06:30 PM] Ben: booked for 8
"""


def test_whatsapp_android_and_ios(tmp_path):
    path = tmp_path / "WhatsApp Chat with Anna.txt"
    path.write_text(WHATSAPP_ANDROID)
    parsed = parse_file(path)
    assert parsed.format == "whatsapp"
    texts = [m.text for m in parsed.messages]
    assert texts == ["Merry Christmas! The gift code is in the card\nwith a second line",
                     "thanks, see you at 10", "thanks, see you at 10"]
    assert parsed.messages[0].conversation == "WhatsApp: Anna"
    assert len({m.external_id for m in parsed.messages}) == 3  # identical lines stay two messages
    assert datetime.fromtimestamp(parsed.messages[0].time).strftime("%Y-%m-%d %H:%M") == "2023-12-25 18:02"
    ios = tmp_path / "ios.txt"
    ios.write_text(WHATSAPP_IOS)
    parsed = parse_file(ios)
    assert datetime.fromtimestamp(parsed.messages[0].time).strftime("%Y-%m-%d %H:%M") == "2024-03-14 21:05"


def test_unknown_or_undetectable_files(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just some notes\n")
    with pytest.raises(BadInputError, match="cannot tell which chat format"):
        parse_file(path)
    with pytest.raises(BadInputError, match="no such file"):
        parse_file(tmp_path / "missing.jsonl")
    binary = tmp_path / "x.jsonl"
    binary.write_bytes(b'{"id": "\xff\xfe"}\n')
    with pytest.raises(BadInputError, match="not UTF-8"):
        parse_file(binary)
