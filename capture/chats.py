"""Chat importers: generic JSONL, ChatGPT's ``conversations.json``, WhatsApp's exported ``.txt``.

Parsing is separate from storing: a file is read whole and checked first, so a malformed file is
refused with the line or item that is wrong and nothing is imported — or, with ``skip_bad``, the
good part is imported and every skipped line/item is reported.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from mneme.core.errors import BadInputError
from mneme.core.records import Message, id_scope

FORMATS = ("auto", "jsonl", "chatgpt", "whatsapp")
JSONL_FIELDS = {"id": str, "conversation": str, "time": str, "speaker": str, "text": str}


@dataclass
class Parsed:
    format: str
    messages: list[Message] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "where: why" for each bad line/item
    notes: list[str] = field(default_factory=list)    # what was changed on the way in (cut messages)


MIN_TIME = datetime(1970, 1, 2, tzinfo=timezone.utc).timestamp()
MAX_TIME = datetime(2100, 1, 1, tzinfo=timezone.utc).timestamp()
MAX_MESSAGE_CHARS = 100_000  # longer messages are cut (one 50 MB message made ~62,500 chunks)
ARABIC = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹،", "01234567890123456789,")


def _checked_time(ts) -> float:
    """An epoch time a chat can have had; ValueError (with what was given) otherwise."""
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise ValueError(f"time {ts!r} is not a number")
    if not MIN_TIME <= ts <= MAX_TIME:  # also NaN and infinities
        raise ValueError(f"time {ts!r} is outside 1970-2100")
    return float(ts)


def _iso_time(value: str) -> float:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        ts = (dt if dt.tzinfo else dt.astimezone()).timestamp()
    except (OverflowError, OSError):
        raise ValueError(f"time {value[:40]!r} is outside 1970-2100") from None
    if not MIN_TIME <= ts <= MAX_TIME:
        raise ValueError(f"time {value[:40]!r} is outside 1970-2100")
    return ts


def _read_text(path: Path) -> str:
    """An export's text: UTF-8 (with or without a byte-order mark) or UTF-16 with its mark."""
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    return raw.decode("utf-8-sig")


def _clean(text: str) -> str:
    """Lone surrogates (from JSON escapes like \\ud800) cannot be stored: replace them."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


class BadItemError(BadInputError):
    """One line or item of an export is bad; the rest can be imported with ``skip_bad``."""


def _bad(parsed: Parsed, where: str, why: str, skip_bad: bool, hint: str) -> None:
    if not skip_bad:
        raise BadItemError(f"{where}: {why}; nothing was imported",
                            f"{hint}, or pass --skip-bad to import the rest and list what was skipped")
    parsed.skipped.append(f"{where}: {why}")


def parse_jsonl(path: Path, skip_bad: bool = False) -> Parsed:
    parsed = Parsed("jsonl")
    hint = 'each line must be {"id", "conversation", "time" (ISO-8601), "speaker", "text"}'
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        where = f"{path.name}:{lineno}"
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            _bad(parsed, where, f"not valid JSON ({exc.msg} at column {exc.colno})", skip_bad, hint)
            continue
        except RecursionError:
            _bad(parsed, where, "JSON nested too deeply", skip_bad, hint)
            continue
        if not isinstance(item, dict):
            _bad(parsed, where, "expected a JSON object", skip_bad, hint)
            continue
        problem = next((f"missing field {k!r}" if k not in item else f"field {k!r} must be a string"
                        for k, t in JSONL_FIELDS.items()
                        if k not in item or not isinstance(item[k], t)), None)
        if problem is None and "title" in item and not isinstance(item["title"], str):
            problem = "field 'title' must be a string"
        if problem is None and not item["id"]:
            problem = "field 'id' is empty"
        if problem is None:
            try:
                ts = _iso_time(item["time"])
            except ValueError as exc:
                problem = (f"field 'time' {exc}" if "outside" in str(exc)
                           else f"field 'time' is not ISO-8601: {item['time'][:40]!r}")
        if problem:
            _bad(parsed, where, problem, skip_bad, hint)
            continue
        parsed.messages.append(Message(item["id"], item["conversation"], ts, item["speaker"],
                                       item["text"], title=item.get("title", ""),
                                       app=item.get("app") if isinstance(item.get("app"), str) else "chat"))
    return parsed


def _chatgpt_text(content: dict) -> str:
    parts = content.get("parts") or []
    texts = [p for p in parts if isinstance(p, str)]
    if not texts and isinstance(content.get("text"), str):
        texts = [content["text"]]
    return "\n".join(t for t in texts if t.strip())


def parse_chatgpt(path: Path, skip_bad: bool = False) -> Parsed:
    parsed = Parsed("chatgpt")
    hint = "give the conversations.json from ChatGPT's data export"
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path.name}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                            f"{exc.msg}); nothing was imported", hint) from None
    except RecursionError:
        raise BadInputError(f"{path.name}: JSON nested too deeply; nothing was imported", hint) from None
    if not isinstance(data, list):
        raise BadInputError(f"{path.name}: expected a list of conversations; nothing was imported", hint)
    for n, conv in enumerate(data):
        where = f"{path.name}: conversation #{n + 1}"
        if not isinstance(conv, dict) or not isinstance(conv.get("mapping"), dict):
            _bad(parsed, where, "has no 'mapping' of messages", skip_bad, hint)
            continue
        title = conv.get("title") if isinstance(conv.get("title"), str) and conv.get("title") else "Untitled"
        where = f"{path.name}: conversation #{n + 1} ({title[:40]!r})"
        found = []
        try:
            for node_id, node in conv["mapping"].items():
                msg = node.get("message") if isinstance(node, dict) else None
                if not msg:
                    continue
                role = (msg.get("author") or {}).get("role")
                text = _chatgpt_text(msg.get("content") or {})
                if role == "system" or not text:
                    continue
                if not isinstance(role, str) or not role:
                    raise ValueError(f"message {node_id} has no author role ({role!r})")
                ts = msg.get("create_time")
                ts = conv.get("create_time") if ts is None else ts
                if ts is None:
                    raise ValueError(f"message {node_id} has no create_time")
                try:
                    ts = _checked_time(ts)
                except ValueError as exc:
                    raise ValueError(f"message {node_id}: create_time {exc.args[0][5:]}") from None
                found.append(Message(str(msg.get("id") or node_id), f"ChatGPT: {title}", float(ts),
                                     "you" if role == "user" else ("ChatGPT" if role == "assistant" else role),
                                     text, title=title, app="ChatGPT"))
        except (AttributeError, TypeError, ValueError) as exc:
            _bad(parsed, where, f"malformed message ({exc})", skip_bad, hint)
            continue
        found.sort(key=lambda m: m.time)
        parsed.messages.extend(found)
    return parsed


WA_LINE = re.compile(
    r"^[\u200e\u200f]?\[?(?P<date>\d{1,4}[./-]\d{1,2}[./-]\d{1,4}),? (?P<time>\d{1,2}[:.]\d{2}(?:[:.]\d{2})?"
    r"(?:\s?(?:[APap]\.?\s?[Mm]\.?|[صم]))?)\]?(?: -|:)? (?P<rest>.*)$")
WA_SENDER = re.compile(r"^(?P<speaker>[^:]{1,80}): (?P<text>.*)$", re.DOTALL)


def _wa_datetime(date: str, time_: str, dayfirst: bool) -> float:
    a, b, c = (int(x) for x in re.split(r"[./-]", date))
    if a > 31:
        year, month, day = a, b, c
    else:
        day, month = (a, b) if dayfirst else (b, a)
        year = c + 2000 if c < 100 else c
    t = re.sub(r"\s", "", time_.upper())
    marker = re.search(r"([AP])\.?M\.?$|([صم])$", t)
    pm = bool(marker) and (marker.group(1) == "P" or marker.group(2) == "م")
    am = bool(marker) and not pm
    t = t[:marker.start()] if marker else t
    parts = [int(x) for x in re.split(r"[:.]", t)]
    hour = parts[0] % 12 + (12 if pm else 0) if (pm or am) else parts[0]
    try:
        ts = datetime(year, month, day, hour, parts[1], parts[2] if len(parts) > 2 else 0).astimezone().timestamp()
    except OverflowError:
        raise ValueError(f"{date} is outside 1970-2100") from None
    return _checked_time(ts)


def parse_whatsapp(path: Path, skip_bad: bool = False) -> Parsed:
    parsed = Parsed("whatsapp")
    hint = "give the .txt from WhatsApp's 'Export chat' (without media)"
    lines = _read_text(path).splitlines()
    m = re.match(r"WhatsApp Chat (?:with|-) (.+?)(?: \(\d+\))?$", path.stem)
    conversation = f"WhatsApp: {m.group(1) if m else path.stem}"
    heads = [(i, WA_LINE.match(line.translate(ARABIC))) for i, line in enumerate(lines)]  # same offsets
    firsts = [int(re.split(r"[./-]", h["date"])[0]) for _, h in heads if h]
    seconds = [int(re.split(r"[./-]", h["date"])[1]) for _, h in heads if h]
    if not firsts:
        raise BadInputError(f"{path.name}: no WhatsApp message lines found; nothing was imported", hint)
    dayfirst = not (max(seconds) > 12 and max(firsts) <= 12)
    entries: list[list] = []  # [lineno, ts, speaker, text]
    for i, head in heads:
        where = f"{path.name}:{i + 1}"
        if head is None:
            if entries:
                entries[-1][3] += "\n" + lines[i]
            elif lines[i].strip():
                _bad(parsed, where, "text before the first dated message", skip_bad, hint)
            continue
        try:
            ts = _wa_datetime(head["date"], head["time"], dayfirst)
        except ValueError as exc:
            _bad(parsed, where, f"bad date or time ({exc})", skip_bad, hint)
            entries.append([i + 1, None, None, ""])  # swallow its continuation lines
            continue
        sender = WA_SENDER.match(head["rest"])
        if sender is None:  # a system notice ("Messages are end-to-end encrypted", joins, …)
            entries.append([i + 1, None, None, ""])
            continue
        rest = lines[i][head.start("rest"):]  # the message as written (digits untranslated)
        sender = WA_SENDER.match(rest) or sender
        entries.append([i + 1, ts, sender["speaker"].strip("\u200e\u200f "), sender["text"]])
    seen: Counter = Counter()
    for lineno, ts, speaker, text in entries:
        if ts is None or not text.strip() or text.strip() == "<Media omitted>":
            continue
        key = f"{conversation}\x1f{ts}\x1f{speaker}\x1f{text}"
        seen[key] += 1
        ext = hashlib.sha256(f"{key}\x1f{seen[key]}".encode()).hexdigest()[:32]
        parsed.messages.append(Message(ext, conversation, ts, speaker, text, title=conversation,
                                       app="WhatsApp"))
    return parsed


def detect(path: Path) -> str:
    suffix = path.suffix.lower()
    with path.open("rb") as f:
        raw = f.read(4096)
    codec = "utf-16" if raw.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8"
    head = raw[:len(raw) - len(raw) % 2 if codec == "utf-16" else len(raw)].decode(codec, "replace")
    head = head.lstrip("\ufeff \r\n\t")
    if suffix == ".jsonl" or (head.startswith("{") and suffix != ".json"):
        return "jsonl"
    if any(WA_LINE.match(line.translate(ARABIC)) for line in head.splitlines()[:5]):
        return "whatsapp"
    if head.startswith("["):
        return "chatgpt"
    raise BadInputError(f"{path}: cannot tell which chat format this is",
                        "pass --format jsonl, chatgpt or whatsapp")


def parse_file(path: str | Path, fmt: str = "auto", skip_bad: bool = False) -> Parsed:
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such file", "check the path")
    if fmt not in FORMATS:
        raise BadInputError(f"unknown format {fmt!r}", "use one of " + ", ".join(FORMATS))
    fmt = detect(path) if fmt == "auto" else fmt
    try:
        parsed = {"jsonl": parse_jsonl, "chatgpt": parse_chatgpt, "whatsapp": parse_whatsapp}[fmt](path, skip_bad)
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: not UTF-8 text (byte {exc.start}); nothing was imported",
                            "export the chat again as UTF-8") from None
    except UnicodeError:
        raise BadInputError(f"{path}: not UTF-8 or UTF-16 text; nothing was imported",
                            "export the chat again as UTF-8") from None
    out = []
    for m in parsed.messages:
        text = _clean(m.text)
        if len(text) > MAX_MESSAGE_CHARS:
            parsed.notes.append(f"message {m.external_id[:40]!r} in {m.conversation[:40]!r} was cut from "
                                f"{len(text):,} to {MAX_MESSAGE_CHARS:,} characters")
            text = text[:MAX_MESSAGE_CHARS]
        conv, app = _clean(m.conversation), _clean(m.app)
        out.append(replace(m, text=text, speaker=_clean(m.speaker), title=_clean(m.title), conversation=conv,
                           app=app, external_id=_clean(m.external_id), scope=id_scope(fmt, app, conv)))
    parsed.messages = out
    return parsed
