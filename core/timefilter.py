"""Filters people say inside a question: "yesterday", "last week", "on Monday", "in March 2024",
"2024-03-05", "in Slack". They are cut out of the text and become since/until/app.

Day boundaries are in the local time zone; ``now`` can be given for tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from dateutil.relativedelta import relativedelta

MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december"]
MONTH_RE = "|".join([*MONTHS, *(m[:3] for m in MONTHS), "sept"])
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


@dataclass
class ParsedQuery:
    text: str
    since: float | None = None
    until: float | None = None
    app: str | None = None
    prefer_since: float | None = None  # a time said in the query, preferred rather than required
    prefer_until: float | None = None


def _month(name: str) -> int:
    name = name.lower()[:3]
    return [m[:3] for m in MONTHS].index(name) + 1


def _ts(d: date) -> float:
    return datetime.combine(d, time.min).astimezone().timestamp()


def _span(start: date, end: date) -> tuple[float, float]:
    return _ts(start), _ts(end)


def parse_date(text: str) -> float:
    """An explicit date or date-time for --since/--until (local time unless it says otherwise)."""
    from dateutil import parser as dparser

    try:
        dt = dparser.isoparse(text)
    except ValueError:
        try:
            dt = dparser.parse(text, dayfirst=False)
        except (ValueError, OverflowError):
            raise ValueError(f"cannot read {text!r} as a date; use e.g. 2024-03-05 or "
                             "'2024-03-05 14:00'") from None
    return (dt if dt.tzinfo else dt.astimezone()).timestamp()


def parse_query(query: str, apps: Iterable[str] = (), now: datetime | None = None) -> ParsedQuery:
    now = (now or datetime.now().astimezone())
    today = now.date()
    text = f" {query} "
    out = ParsedQuery(text=query)

    def take(pattern: str, fn) -> None:
        nonlocal text
        m = re.search(pattern, text, re.IGNORECASE)
        if m and out.since is None:
            span = fn(m)
            if span:
                out.since, out.until = span
                text = text[:m.start()] + " " + text[m.end():]

    week_start = today - timedelta(days=today.weekday())
    month_start = today.replace(day=1)
    take(r"\b(?:on |from |since )?(\d{4})-(\d{2})-(\d{2})\b",
         lambda m: _span(d := date(int(m[1]), int(m[2]), int(m[3])), d + timedelta(days=1)))
    take(rf"\b(?:on )?(\d{{1,2}}) ({MONTH_RE})\.?,? (\d{{4}})\b",
         lambda m: _span(d := date(int(m[3]), _month(m[2]), int(m[1])), d + timedelta(days=1)))
    take(rf"\b(?:on )?({MONTH_RE})\.? (\d{{1,2}})(?:st|nd|rd|th)?,? (\d{{4}})\b",
         lambda m: _span(d := date(int(m[3]), _month(m[1]), int(m[2])), d + timedelta(days=1)))
    take(rf"\b(?:in |during )?({MONTH_RE}) (\d{{4}})\b",
         lambda m: _span(d := date(int(m[2]), _month(m[1]), 1), d + relativedelta(months=1)))
    take(r"\btoday\b", lambda m: _span(today, today + timedelta(days=1)))
    take(r"\byesterday\b", lambda m: _span(today - timedelta(days=1), today))
    take(r"\bthis week\b", lambda m: _span(week_start, today + timedelta(days=1)))
    take(r"\blast week\b", lambda m: _span(week_start - timedelta(days=7), week_start))
    take(r"\bthis month\b", lambda m: _span(month_start, today + timedelta(days=1)))
    take(r"\blast month\b", lambda m: _span(month_start - relativedelta(months=1), month_start))
    take(r"\bthis year\b", lambda m: _span(date(today.year, 1, 1), today + timedelta(days=1)))
    take(r"\blast year\b", lambda m: _span(date(today.year - 1, 1, 1), date(today.year, 1, 1)))
    take(r"\b(?:in the )?(?:last|past) (\d+) days\b",
         lambda m: _span(today - timedelta(days=int(m[1])), today + timedelta(days=1)))

    def weekday(m: re.Match) -> tuple[float, float]:
        back = (today.weekday() - DAYS.index(m[2].lower())) % 7
        back = back or (7 if m[1] and m[1].lower().startswith("last") else 0)
        d = today - timedelta(days=back)
        return _span(d, d + timedelta(days=1))

    take(rf"\b(on |last )?({'|'.join(DAYS)})\b", weekday)

    def month_only(m: re.Match) -> tuple[float, float]:
        month = _month(m[1])
        year = today.year if month <= today.month else today.year - 1
        d = date(year, month, 1)
        return _span(d, d + relativedelta(months=1))

    take(rf"\b(?:in |during )({MONTH_RE})\b", month_only)
    take(r"\b(?:in |during )(\d{4})\b", lambda m: _span(date(int(m[1]), 1, 1), date(int(m[1]) + 1, 1, 1)))

    for app in sorted({a for a in apps if a}, key=len, reverse=True):
        m = re.search(rf"\b(?:in|on|from|via) {re.escape(app)}\b", text, re.IGNORECASE)
        if m:
            out.app = app
            text = text[:m.start()] + " " + text[m.end():]
            break
    out.text = re.sub(r"\s+", " ", text).strip(" ,")
    return out
