from datetime import datetime

import pytest

from mneme.core.timefilter import parse_date, parse_query

NOW = datetime(2026, 11, 18, 15, 30).astimezone()  # a Wednesday


def day(s):
    return datetime.fromisoformat(s).astimezone().timestamp()


@pytest.mark.parametrize("query, since, until, text", [
    ("what did Anna say yesterday", "2026-11-17", "2026-11-18", "what did Anna say"),
    ("tax form today", "2026-11-18", "2026-11-19", "tax form"),
    ("invoice last week", "2026-11-09", "2026-11-16", "invoice"),
    ("meeting on Monday", "2026-11-16", "2026-11-17", "meeting"),
    ("standup last Wednesday", "2026-11-11", "2026-11-12", "standup"),
    ("flights in March 2024", "2024-03-01", "2024-04-01", "flights"),
    ("flights in March", "2026-03-01", "2026-04-01", "flights"),
    ("flights in December", "2025-12-01", "2026-01-01", "flights"),
    ("the 2024-03-05 call", "2024-03-05", "2024-03-06", "the call"),
    ("call on 5 March 2024", "2024-03-05", "2024-03-06", "call"),
    ("call on March 5, 2024", "2024-03-05", "2024-03-06", "call"),
    ("pictures last month", "2026-10-01", "2026-11-01", "pictures"),
    ("notes in 2023", "2023-01-01", "2024-01-01", "notes"),
])
def test_time_phrases(query, since, until, text):
    parsed = parse_query(query, now=NOW)
    assert (parsed.since, parsed.until, parsed.text) == (day(since), day(until), text)


def test_app_names_come_from_memory():
    parsed = parse_query("the deploy link in slack yesterday", apps=["Slack", "WhatsApp"], now=NOW)
    assert parsed.app == "Slack" and parsed.text == "the deploy link" and parsed.since == day("2026-11-17")
    assert parse_query("in the end", apps=["Slack"], now=NOW).app is None


def test_no_filter_leaves_text_alone():
    parsed = parse_query("mondays are hard", now=NOW)
    assert parsed.since is None and parsed.text == "mondays are hard"


def test_parse_date_errors_are_clear():
    assert parse_date("2024-03-05") == day("2024-03-05")
    with pytest.raises(ValueError, match="cannot read 'soonish' as a date"):
        parse_date("soonish")
