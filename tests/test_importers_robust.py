"""Chat importers against hostile and unusual exports: refused with the line (never a traceback,
never stored to crash later), odd but valid exports accepted, and a Hypothesis fuzz run."""

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mneme.capture.chats import MAX_MESSAGE_CHARS, parse_file
from mneme.core.errors import BadInputError
from tests.conftest import run_cli

PASS = {"MNEME_PASSPHRASE": "correct horse"}
FUZZ_CASES = 300  # per importer: 900 files in all, every one parsed without a traceback


def line(**kw):
    item = {"id": "1", "conversation": "c", "time": "2024-01-01T00:00:00Z", "speaker": "a", "text": "hello"}
    item.update(kw)
    return json.dumps(item)


def gpt(conv=None, **msg):
    m = {"id": "m1", "author": {"role": "user"}, "create_time": 1_700_000_000, "content": {"parts": ["hi"]}}
    m.update(msg)
    return json.dumps([{"title": "T", "mapping": {"n1": {"message": m}}, **(conv or {})}])


@pytest.mark.parametrize("time", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00Z", "2200-01-01T00:00:00Z"])
def test_out_of_range_jsonl_times_are_refused_with_the_line(tmp_path, time):
    f = tmp_path / "c.jsonl"
    f.write_text(line() + "\n" + line(id="2", time=time) + "\n")
    proc = run_cli("import", "chats", f, env=PASS, check=False)
    assert proc.returncode == 2 and "c.jsonl:2: field 'time'" in proc.stderr and "1970-2100" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("create_time", ["1e20", "-1e20", "Infinity", "NaN", "-Infinity"])
def test_out_of_range_or_nan_chatgpt_times_are_reported_not_stored(tmp_path, create_time):
    f = tmp_path / "conversations.json"
    f.write_text(gpt().replace("1700000000", create_time))
    with pytest.raises(BadInputError, match="create_time"):  # NaN was dropped silently before
        parse_file(f)
    parsed = parse_file(f, skip_bad=True)
    assert parsed.messages == [] and "create_time" in parsed.skipped[0]


def test_role_null_is_reported(tmp_path):
    f = tmp_path / "conversations.json"
    f.write_text(gpt(author={"role": None}))
    with pytest.raises(BadInputError, match="no author role"):
        parse_file(f)


@pytest.mark.parametrize("title", [7, {"a": 1}, ["x"], None, ""])
def test_odd_chatgpt_titles_do_not_crash(tmp_path, title):
    f = tmp_path / "conversations.json"
    f.write_text(gpt(conv={"title": title}))
    assert parse_file(f).messages[0].title == "Untitled"


def test_deep_nesting_and_lone_surrogates_exit_cleanly(tmp_path):
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    proc = run_cli("import", "chats", deep, env=PASS, check=False)
    assert proc.returncode == 2 and "nested too deeply" in proc.stderr and "Traceback" not in proc.stderr
    deep_gpt = tmp_path / "conversations.json"
    deep_gpt.write_text("[" * 100_000 + "]" * 100_000)
    proc = run_cli("import", "chats", deep_gpt, "--format", "chatgpt", env=PASS, check=False)
    assert proc.returncode == 2 and "nested too deeply" in proc.stderr
    lone = tmp_path / "lone.jsonl"
    lone.write_text('{"id": "1", "conversation": "c\\ud800", "time": "2024-01-01T00:00:00Z", '
                    '"speaker": "\\udfff", "text": "broken \\ud83d surrogate"}\n')
    proc = run_cli("import", "chats", lone, env=PASS)  # UnicodeEncodeError, exit 70 before
    assert "Imported 1 messages" in proc.stdout
    assert "surrogate" in run_cli("search", "surrogate", env=PASS).stdout


def test_bom_utf16_and_huge_messages(tmp_path):
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + line().encode() + b"\n")
    assert len(parse_file(bom).messages) == 1
    gbom = tmp_path / "conversations.json"
    gbom.write_bytes(b"\xef\xbb\xbf" + gpt().encode())
    assert len(parse_file(gbom).messages) == 1
    u16 = tmp_path / "u16.jsonl"
    u16.write_text(line(text="grüße aus köln") + "\n", encoding="utf-16")
    assert parse_file(u16).messages[0].text == "grüße aus köln"
    big = tmp_path / "big.jsonl"
    big.write_text(line(text="word " * 2_000_000) + "\n")
    parsed = parse_file(big)
    assert len(parsed.messages[0].text) == MAX_MESSAGE_CHARS and "was cut" in parsed.notes[0]


def test_whatsapp_pm_with_dots_utf16_and_arabic_digits(tmp_path):
    f = tmp_path / "WhatsApp Chat with Anna.txt"
    f.write_text("12/03/2024, 9:41 p.m. - Anna: see you at nine\n12/03/2024, 9:45 a.m. - Bo: ok\n")
    m = parse_file(f).messages
    assert [x.text for x in m] == ["see you at nine", "ok"]
    from datetime import datetime

    assert datetime.fromtimestamp(m[0].time).hour == 21 and datetime.fromtimestamp(m[1].time).hour == 9
    u16 = tmp_path / "WhatsApp Chat with Bo.txt"
    u16.write_text("12/03/2024, 21:41 - Anna: utf sixteen\n", encoding="utf-16")
    assert parse_file(u16).messages[0].text == "utf sixteen"
    ar = tmp_path / "WhatsApp Chat with Omar.txt"
    ar.write_text("\u200f١٢/٠٣/٢٠٢٤، ٩:٤١ م - Omar: الرقم ٤٢ hello\n", encoding="utf-8")
    got = parse_file(ar).messages[0]
    assert got.speaker == "Omar" and got.text == "الرقم ٤٢ hello"  # the text keeps its own digits
    assert datetime.fromtimestamp(got.time).hour == 21


# -- fuzz ---------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=20)
field_names = st.sampled_from(["id", "conversation", "time", "speaker", "text", "title", "app"])
jsonl_items = st.dictionaries(field_names, json_values | st.text(max_size=40), max_size=7)
gpt_messages = st.fixed_dictionaries({}, optional={
    "id": json_values, "author": st.fixed_dictionaries({}, optional={"role": json_values}) | json_values,
    "create_time": st.floats(allow_nan=True, allow_infinity=True) | json_values,
    "content": st.fixed_dictionaries({}, optional={"parts": st.lists(json_values, max_size=3), "text": json_values})})
gpt_files = st.lists(st.fixed_dictionaries({}, optional={
    "title": json_values, "create_time": json_values,
    "mapping": st.dictionaries(st.text(max_size=5), st.fixed_dictionaries({}, optional={"message": gpt_messages})
                               | json_values, max_size=4) | json_values}) | json_values, max_size=4)
wa_lines = st.lists(st.one_of(
    st.builds(lambda d, mo, y, h, mi, ap, who, txt: f"{d}/{mo}/{y}, {h}:{mi:02d}{ap} - {who}: {txt}",
              st.integers(0, 40), st.integers(0, 14), st.integers(0, 3000), st.integers(0, 30), st.integers(0, 70),
              st.sampled_from(["", " PM", " p.m.", " a.m.", " م"]), st.text(max_size=10), st.text(max_size=20)),
    st.text(max_size=40)), max_size=8)
fuzz = settings(max_examples=FUZZ_CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                               HealthCheck.too_slow])


def _parse_cleanly(path, fmt):
    """Either messages that can be stored (finite, in-range times; encodable text) or a refusal."""
    for skip in (False, True):
        try:
            parsed = parse_file(path, fmt, skip_bad=skip)
        except BadInputError:
            continue
        for m in parsed.messages:
            assert math.isfinite(m.time) and 0 < m.time < 4.2e9
            for text in (m.text, m.speaker, m.title, m.conversation, m.app, m.external_id):
                assert isinstance(text, str)
                text.encode("utf-8")


@fuzz
@given(items=st.lists(jsonl_items | json_values, max_size=6), raw=st.binary(max_size=40))
def test_fuzz_jsonl(tmp_path, items, raw):
    f = tmp_path / "f.jsonl"
    f.write_bytes("\n".join(json.dumps(i) for i in items).encode() + b"\n" + raw)
    _parse_cleanly(f, "jsonl")


@fuzz
@given(data=gpt_files)
def test_fuzz_chatgpt(tmp_path, data):
    f = tmp_path / "conversations.json"
    f.write_text(json.dumps(data))
    _parse_cleanly(f, "chatgpt")


@fuzz
@given(lines=wa_lines)
def test_fuzz_whatsapp(tmp_path, lines):
    f = tmp_path / "WhatsApp Chat with X.txt"
    f.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    _parse_cleanly(f, "whatsapp")
