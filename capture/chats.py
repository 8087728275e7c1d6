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
from datetime import datetime
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


def _iso_time(value: str) -> float:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (dt if dt.tzinfo else dt.astimezone()).timestamp()


def _bad(parsed: Parsed, where: str, why: str, skip_bad: bool, hint: str) -> None:
    if not skip_bad:
        raise BadInputError(f"{where}: {why}; nothing was imported",
                            f"{hint}, or pass --skip-bad to import the rest and list what was skipped")
    parsed.skipped.append(f"{where}: {why}")


def parse_jsonl(path: Path, skip_bad: bool = False) -> Parsed:
    parsed = Parsed("jsonl")
    hint = 'each line must be {"id", "conversation", "time" (ISO-8601), "speaker", "text"}'
    with path.open(encoding="utf-8", errors="strict") as f:
        for lineno, line in enumerate(f, 1):
            where = f"{path.name}:{lineno}"
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                _bad(parsed, where, f"not valid JSON ({exc.msg} at column {exc.colno})", skip_bad, hint)
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
                except ValueError:
                    problem = f"field 'time' is not ISO-8601: {item['time'][:40]!r}"
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
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path.name}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                            f"{exc.msg}); nothing was imported", hint) from None
    if not isinstance(data, list):
        raise BadInputError(f"{path.name}: expected a list of conversations; nothing was imported", hint)
    for n, conv in enumerate(data):
        where = f"{path.name}: conversation #{n + 1}"
        if not isinstance(conv, dict) or not isinstance(conv.get("mapping"), dict):
            _bad(parsed, where, "has no 'mapping' of messages", skip_bad, hint)
            continue
        title = conv.get("title") or "Untitled"
        where = f"{path.name}: conversation #{n + 1} ({title[:40]!r})"
        found = []
        try:
            for node_id, node in conv["mapping"].items():
                msg = node.get("message") if isinstance(node, dict) else None
                if not msg:
                    continue
                role = (msg.get("author") or {}).get("role", "")
                text = _chatgpt_text(msg.get("content") or {})
                if role == "system" or not text:
                    continue
                ts = msg.get("create_time") or conv.get("create_time")
                if not isinstance(ts, (int, float)):
                    raise ValueError(f"message {node_id} has no create_time")
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
    r"^\u200e?\[?(?P<date>\d{1,4}[./-]\d{1,2}[./-]\d{1,4}),? (?P<time>\d{1,2}[:.]\d{2}(?:[:.]\d{2})?"
    r"(?:\s?[APap]\.?[Mm]\.?)?)\]?(?: -|:)? (?P<rest>.*)$")
WA_SENDER = re.compile(r"^(?P<speaker>[^:]{1,80}): (?P<text>.*)$", re.DOTALL)


def _wa_datetime(date: str, time_: str, dayfirst: bool) -> float:
    a, b, c = (int(x) for x in re.split(r"[./-]", date))
    if a > 31:
        year, month, day = a, b, c
    else:
        day, month = (a, b) if dayfirst else (b, a)
        year = c + 2000 if c < 100 else c
    t = time_.replace(".", ":").upper().replace(" ", "")
    pm, am = t.endswith(("PM", "P.M.")), t.endswith(("AM", "A.M."))
    t = re.sub(r"[APM.]+$", "", t)
    parts = [int(x) for x in t.split(":")]
    hour = parts[0] % 12 + (12 if pm else 0) if (pm or am) else parts[0]
    return datetime(year, month, day, hour, parts[1], parts[2] if len(parts) > 2 else 0).astimezone().timestamp()


def parse_whatsapp(path: Path, skip_bad: bool = False) -> Parsed:
    parsed = Parsed("whatsapp")
    hint = "give the .txt from WhatsApp's 'Export chat' (without media)"
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    m = re.match(r"WhatsApp Chat (?:with|-) (.+?)(?: \(\d+\))?$", path.stem)
    conversation = f"WhatsApp: {m.group(1) if m else path.stem}"
    heads = [(i, WA_LINE.match(line)) for i, line in enumerate(lines)]
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
        entries.append([i + 1, ts, sender["speaker"].strip("\u200e "), sender["text"]])
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
        head = f.read(4096).decode("utf-8", "replace").lstrip("\ufeff \r\n\t")
    if suffix == ".jsonl" or (head.startswith("{") and suffix != ".json"):
        return "jsonl"
    if any(WA_LINE.match(line) for line in head.splitlines()[:5]):
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
    parsed.messages = [replace(m, scope=id_scope(fmt, m.app, m.conversation)) for m in parsed.messages]
    return parsed
