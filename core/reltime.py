"""Relative dates inside remembered text, resolved against the moment the text was said or seen.

"next Tuesday", said on Saturday 7 March 2026, is Tuesday 10 March 2026. The model and the person
reading an excerpt see the resolved date beside the words: ``next Tuesday (Tuesday 10 March 2026)``.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

from dateutil.relativedelta import relativedelta

DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
           "seven": 7, "eight": 8, "nine": 9, "ten": 10, "a couple of": 2, "a few": 3}
_NUM = r"(\d+|a couple of|a few|an?|one|two|three|four|five|six|seven|eight|nine|ten)"
_UNIT = r"(day|week|month|year)s?"


def day_text(d: date) -> str:
    return f"{d:%A} {d.day} {d:%B %Y}"


def month_text(d: date) -> str:
    return f"{d:%B %Y}"


def _weekday(said: date, name: str, which: str) -> date:
    target = DAYS.index(name.lower())
    if which == "last":
        back = (said.weekday() - target) % 7 or 7
        return said - timedelta(days=back)
    ahead = (target - said.weekday()) % 7
    if which == "next":
        return said + timedelta(days=ahead or 7)
    return said + timedelta(days=ahead)  # "this Friday": the coming one (today if it is Friday)


def _span(n: int, unit: str) -> relativedelta:
    return relativedelta(**{f"{unit}s": n})


def _resolve(m: re.Match, said: date) -> str | None:
    g = m.groupdict()
    if g.get("fixed"):
        word = g["fixed"].lower()
        offsets = {"today": 0, "tonight": 0, "this morning": 0, "this afternoon": 0, "this evening": 0,
                   "yesterday": -1, "last night": -1, "tomorrow": 1, "the day before yesterday": -2,
                   "the day after tomorrow": 2}
        return day_text(said + timedelta(days=offsets[word]))
    if g.get("wd"):
        return day_text(_weekday(said, g["wd"], (g.get("which") or "this").lower()))
    if g.get("period"):
        which, period = g["pwhich"].lower(), g["period"].lower()
        step = {"last": -1, "next": 1, "this": 0}[which]
        if period == "week":
            monday = said - timedelta(days=said.weekday()) + timedelta(weeks=step)
            return f"the week of {day_text(monday)}"
        if period == "weekend":
            saturday = said + timedelta(days=(5 - said.weekday()) % 7)
            if which == "last":
                saturday = said - timedelta(days=(said.weekday() - 5) % 7 or 7)
            elif which == "next" and said.weekday() < 5:
                saturday += timedelta(weeks=1)
            return f"the weekend of {day_text(saturday)}"
        if period == "month":
            return month_text(said + relativedelta(months=step))
        if period == "year":
            return str((said + relativedelta(years=step)).year)
    if g.get("num"):
        n = int(g["num"]) if g["num"].isdigit() else NUMBERS[g["num"].lower()]
        unit = g["unit"].lower()
        sign = -1 if g.get("ago") else 1
        d = said + sign * _span(n, unit)
        return day_text(d) if unit in ("day", "week") else month_text(d) if unit == "month" else str(d.year)
    return None


PATTERN = re.compile(
    r"\b(?:(?P<fixed>the day before yesterday|the day after tomorrow|today|tonight|yesterday|tomorrow|"
    r"last night|this morning|this afternoon|this evening)"
    r"|(?:(?P<which>last|next|this|on|coming) )?(?P<wd>" + "|".join(DAYS) + r")"
    r"|(?P<pwhich>last|next|this) (?P<period>week(?:end)?|month|year)"
    r"|(?P<num>" + _NUM[1:-1] + r") (?P<unit>day|week|month|year)s? (?P<ago>ago)"
    r"|in (?P<num2>" + _NUM[1:-1] + r") (?P<unit2>day|week|month|year)s?)\b",
    re.IGNORECASE)


def resolve(text: str, said_at: float | datetime) -> str:
    """*text* with each relative date followed by the date it means, in parentheses."""
    said = (said_at if isinstance(said_at, datetime) else datetime.fromtimestamp(said_at).astimezone()).date()

    def sub(m: re.Match) -> str:
        groups = m.groupdict()
        if groups.get("num2"):
            groups = dict(groups, num=groups["num2"], unit=groups["unit2"])
            resolved = _resolve(_Match(groups), said)
        else:
            if groups.get("wd") and (groups.get("which") or "on").lower() == "on":
                return m.group(0)  # "on Tuesday" may be the last one or the next: left alone
            resolved = _resolve(m, said)
        if not resolved or m.string[m.end():].lstrip().lower().startswith(f"({resolved.lower()})"):
            return m.group(0)  # "next year (2027)": the writer already said which
        return f"{m.group(0)} ({resolved})"

    return PATTERN.sub(sub, text)


class _Match:
    def __init__(self, groups: dict):
        self._groups = groups

    def groupdict(self) -> dict:
        return self._groups
