"""The support check and relative dates: pure logic, no model."""

from datetime import datetime

from mneme.core import reltime, support
from mneme.core.support import Evidence, check, check_answer, coverage

EXCERPTS = [Evidence("Airline: your flight UA858 to Lisbon departs 09:40 from gate B22, booking reference QX7PZT"),
            Evidence("Plumber: I can come on Friday morning, the quote is 240 pounds")]


def test_names_numbers_and_codes_must_come_from_memory():
    assert check("The booking reference is QX7PZT.", EXCERPTS).supported
    assert not check("The booking reference is QX7PZQ.", EXCERPTS).supported
    assert not check("The quote is 450 pounds.", EXCERPTS).supported
    assert check("The plumber quoted 240 pounds.", EXCERPTS).supported        # "quoted" = "quote"
    assert not check("The flight goes to Porto.", EXCERPTS).supported         # a name not in memory
    # Restating the question is fine for plain words, never for names or numbers.
    assert check("Your flight departs at 09:40.", EXCERPTS, "when does my flight depart?").supported
    assert not check("Your flight to Porto departs at 09:40.", EXCERPTS, "my flight to Porto?").supported


def test_a_claim_made_only_of_the_question_is_not_evidence():
    verdict = check("The flight departs.", EXCERPTS[1:], "when does the flight depart?")
    assert not verdict.supported and verdict.reason == "nothing in it comes from memory"


def test_each_claim_is_checked_and_finds_the_excerpt_that_backs_it():
    verdicts = check_answer("It departs from gate B22 [2]. The quote is 300 pounds [2].", EXCERPTS)
    assert [v.supported for v in verdicts] == [True, False]
    assert verdicts[0].sources == [0]          # cited [2] wrongly: the check finds [1]
    assert "300" in verdicts[1].missing


def test_coverage_is_the_share_of_the_question_spoken_of():
    assert coverage("how much did the plumber quote?", "the quote is 240 pounds, plumber") == 1.0
    assert coverage("what colour is the plumber's van?", "Plumber: the quote is 240 pounds") < 0.5


def test_relative_dates_resolve_against_the_moment_they_were_said():
    said = datetime(2026, 3, 7, 12, 0)  # a Saturday
    assert reltime.resolve("see you next Tuesday", said) == "see you next Tuesday (Tuesday 10 March 2026)"
    assert "(Friday 6 March 2026)" in reltime.resolve("I went yesterday", said)
    assert "(Saturday 21 February 2026)" in reltime.resolve("two weeks ago", said)
    assert "(February 2026)" in reltime.resolve("last month", said)
    assert reltime.resolve("on Monday we meet", said) == "on Monday we meet"  # ambiguous: left alone
    # already resolved by whoever wrote it (or by an earlier pass): not said twice
    assert reltime.resolve("the budget for next year (2027) is set", said) == "the budget for next year (2027) is set"
    once = reltime.resolve("see you next Tuesday", said)
    assert reltime.resolve(once, said) == once
    assert reltime.resolve("next year (the big one)", said) == "next year (2027) (the big one)"


def test_a_title_or_an_initial_does_not_end_the_sentence():
    from mneme.core.support import best_sentence, claims

    text = "Reminder: your appointment with Dr. Patel is on 20 March at 15:30. Parking is free."
    assert claims(text)[0] == "Reminder: your appointment with Dr. Patel is on 20 March at 15:30."
    sentence, _ = best_sentence(text, "When is my appointment with the doctor?")
    assert sentence.endswith("15:30.")
    assert claims("J. Smith signed it. Then he left.") == ["J. Smith signed it.", "Then he left."]


def test_inflections_of_a_word_are_one_word_and_different_words_are_not():
    assert check("I booked it", [Evidence("booking confirmed")]).supported
    assert check("They were planning a trip", [Evidence("We planned the trip")]).supported
    # "plane" is not "planning": a photo caption of a plane does not speak of planning a trip
    assert coverage("When is Melanie planning a trip?", "Melanie: a photo of a plane in the sky") < 0.5
    assert not check("She cares for the car", [Evidence("the car is red")]).supported


def test_a_currency_sign_must_be_the_one_memory_names():
    quote = [Evidence("I can come on Friday; the quote is 240 pounds.")]
    wrong = check("$240.", quote, "How much will the plumber charge?")
    assert not wrong.supported and wrong.missing == ["$"]
    assert check("£240.", quote, "How much will the plumber charge?").supported
    assert check("It is 240 pounds.", quote, "How much will the plumber charge?").supported
    assert check("$1,200 a month.", [Evidence("rent is $1,200 a month")], "What is the rent?").supported
    assert check("$240.", quote, "How many $ will the plumber charge?").supported  # asked in dollars


def test_irregular_forms_are_one_word_and_different_words_stay_apart():
    assert support.stem("lent") == support.stem("lend") == support.stem("lending")
    assert support.stem("bought") == support.stem("buys")
    assert support.stem("plane") != support.stem("planning")
    assert support.check("Leo lent me the book.", [support.Evidence("Leo: I will lend you the book")]).supported


def test_a_value_nearest_the_asked_label_is_the_one_meant():
    text = "Your flight departs 09:40 from gate B22, booking reference QX7PZT."
    assert support.mislabelled("It is B22.", "What is my booking reference?", text) == ["B22"]
    assert support.mislabelled("QX7PZT", "What is my booking reference?", text) == []
    assert support.mislabelled("B22", "What is the gate number?", text) == []
    # no label asked for, or no other value beside it: nothing to tell apart
    assert support.mislabelled("B22", "Where do I board?", text) == []
    assert support.mislabelled("555-1234", "What is Anna's phone number?", "Call me at 555-1234.") == []
