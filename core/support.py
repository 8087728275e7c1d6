"""The support check: is every claim of an answer backed by the excerpts it cites?

A claim (one sentence of an answer) is supported when every name, number and content word in it
is found in the excerpts it is checked against — content words may also come from the question,
which the answer restates, but names and numbers must come from memory — and at least one of its
words comes from memory at all. Words are compared by their Snowball stem ("booked" = "booking" =
"book"), numbers by their digits ("3" = "three"). Nothing here knows about a model: the same check
guards answers and, later, every derived memory (episodes, facts, profile).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import simplemma
import snowballstemmer

WORD = re.compile(r"[^\W_](?:[\w'’.\-]*[^\W_])?", re.UNICODE)
CITE = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")
# A full stop after these is not a sentence's end ("Dr. Patel", "St. Mary's", "J. Smith").
ABBREVIATIONS = frozenset("""dr mr mrs ms mx prof st jr sr vs etc approx dept ave mt inc ltd co
e.g i.e a.m p.m cf fig""".split())


def split_sentences(text: str) -> list[str]:
    """*text* cut at sentence ends (the pieces keep their punctuation; the last may be unfinished)."""
    pieces, start = [], 0
    for m in SENTENCE_END.finditer(text):
        before = text[start:m.start()]
        word = before.rsplit(None, 1)[-1] if before.split() else ""
        if "\n" not in m.group() and word.endswith(".") and (
                word[:-1].lower().lstrip("(\"'") in ABBREVIATIONS or re.fullmatch(r"[A-Z]\.", word)):
            continue
        pieces.append(before)
        start = m.end()
    pieces.append(text[start:])
    return pieces
# Glue that carries no claim of its own (it is checked through the words around it).
GLUE = frozenset("""a about above after again against all also am an and any are as at be because
been before being below between both but by can could did do does doing done down during each even
ever few for from further had has have having he her here hers herself him himself his how i if in
into is it its itself just let me more most my myself no nor not now of off on once only or other
our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what
when where which while who whom whose why will with would yes you your yours yourself yourselves
there's it's that's i'm you're he's she's they're we're isn't wasn't don't didn't doesn't can't
won't haven't hasn't hadn't aren't weren't i've you've we've they've i'd you'd i'll you'll one
really quite just still already yet ago much many often long kind sort type hey hi hello thanks thank
ok okay sure wow oh yeah yep because lot lots""".split())
# Words an answer uses to point at memory rather than to claim something.
FRAMING = frozenset("""answer answers according mention mentioned mentions said says say told tell
tells wrote write writes note noted notes memory memories excerpt excerpts message messages
remember remembered recall recalled seems seem appears appear likely probably user""".split())
NUMBER_WORDS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
                "first": "1", "second": "2", "third": "3", "once": "1", "twice": "2", "dozen": "12"}
DONT_KNOW = re.compile(r"\b(?:(?:i )?(?:do not|don't|dont) know|not sure|no idea|(?:cannot|can't|could not"
                       r"|couldn't) (?:find|tell|say)|not (?:mentioned|stated|given|specified|in the excerpts|"
                       r"in (?:your|the) memory)|no (?:information|mention|record))\b", re.IGNORECASE)


_ENGLISH = snowballstemmer.stemmer("english")


@functools.lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """The word's Snowball (Porter2) stem, enough to equate inflections of one word ("booked" =
    "booking" = "book") without equating different words ("plane" is not "planning"); an
    irregular form is taken back to its dictionary word first (simplemma: "lent" = "lend",
    "bought" = "buy"), which no suffix rule can do."""
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    w = w.strip("'.-")
    if w.isalpha():
        w = simplemma.lemmatize(w, lang="en").lower()
    return _ENGLISH.stemWord(w)


def prepare() -> None:
    """Reads the dictionary ``stem`` uses (~0.2-0.5 s, ~20 MB), so the first answer's check does not
    wait for it: called where the model is loaded, off the GUI thread."""
    stem("prepared")


def digits(word: str) -> list[str]:
    runs = re.findall(r"\d+", word)
    if not runs and word.lower() in NUMBER_WORDS:
        runs = [NUMBER_WORDS[word.lower()]]
    return [r.lstrip("0") or "0" for r in runs]


@dataclass
class Evidence:
    """What one excerpt offers the check: its stems, its words, its numbers."""

    text: str
    stems: set[str] = field(init=False)
    lower: set[str] = field(init=False)
    numbers: set[str] = field(init=False)

    def __post_init__(self) -> None:
        words = WORD.findall(self.text)
        self.lower = {w.lower() for w in words}
        self.stems = {stem(w) for w in words}
        self.numbers = {d for w in words for d in digits(w)}
        # "2026-03-10" and "10:30" hold several numbers in one token.
        self.numbers |= {r.lstrip("0") or "0" for r in re.findall(r"\d+", self.text)}


@dataclass
class Verdict:
    claim: str
    supported: bool
    missing: list[str]              # the words nothing backs
    sources: list[int]              # indexes of the excerpts that back it (best first)
    from_memory: int = 0            # how many of its words came from the excerpts

    @property
    def reason(self) -> str:
        if self.supported:
            return "supported"
        if self.missing:
            return "not in the cited excerpts: " + ", ".join(self.missing)
        if self.from_memory:
            return "it only repeats the question"
        return "nothing in it comes from memory"


def claims(answer: str) -> list[str]:
    """An answer cut into its sentences (each a claim)."""
    return [c.strip() for c in split_sentences(answer.strip()) if c and c.strip()]


def cited(claim: str) -> list[int]:
    out: list[int] = []
    for m in CITE.finditer(claim):
        for part in m.group(1).split(","):
            n = int(part)
            if n not in out:
                out.append(n)
    return out


CURRENCY_WORDS = {"$": {"dollar", "dollars", "usd", "buck", "bucks"}, "€": {"euro", "euros", "eur"},
                  "£": {"pound", "pounds", "gbp", "quid"}, "¥": {"yen", "jpy", "yuan", "cny"}}
CURRENCY_SIGN = re.compile(r"([$€£¥])\s?\d")


def needs(claim: str) -> list[tuple[str, str]]:
    """(word, kind) the claim asserts: kind is 'code', 'number', 'name', 'word' or 'currency'."""
    text = CITE.sub(" ", claim)
    out = []
    for i, w in enumerate(WORD.findall(text)):
        low = w.lower().replace("’", "'")
        if any(ch.isdigit() for ch in w) and any(ch.isalpha() for ch in w):
            out.append((w, "code"))       # QX7PZT, B22, UA858: only the same code backs it
        elif digits(w) and (any(ch.isdigit() for ch in w) or low in NUMBER_WORDS):
            out.append((w, "number"))
        elif low in GLUE or low in FRAMING or len(low) < 2:
            continue
        elif w[0].isupper() and i > 0:
            out.append((w, "name"))
        else:
            out.append((w, "word"))
    # "$240" where memory says "240 pounds": the number is backed, the currency is not. A
    # currency sign is a claim of its own (WORD, which finds the rest, skips signs).
    out += [(sign, "currency") for sign in dict.fromkeys(CURRENCY_SIGN.findall(text))]
    return out


def adds(word: str, kind: str, asked: Evidence) -> bool:
    """Whether *word* (a ``needs`` kind) says something the question *asked* does not."""
    return not (stem(word) in asked.stems or word.lower() in asked.lower or
                (kind == "number" and all(d in asked.numbers for d in digits(word))))


def new_needs(claim: str, question: str) -> list[tuple[str, str]]:
    """What *claim* asserts beyond the words of *question*."""
    asked = Evidence(question)
    return [(w, kind) for w, kind in needs(claim) if adds(w, kind, asked)]


def check(claim: str, excerpts: Sequence[Evidence], question: str = "") -> Verdict:
    """Is *claim* backed by *excerpts* (all of them together)?"""
    q = Evidence(question)
    missing, from_memory, novel = [], 0, 0
    per_source = [0] * len(excerpts)
    for w, kind in needs(claim):
        if kind == "code":
            found = [i for i, e in enumerate(excerpts) if w.lower().strip(".-'") in e.lower]
            ok_q = False
        elif kind == "number":
            found = [i for i, e in enumerate(excerpts) if all(d in e.numbers for d in digits(w))]
            ok_q = False
        elif kind == "name":
            found = [i for i, e in enumerate(excerpts) if w.lower() in e.lower or stem(w) in e.stems]
            ok_q = False
        elif kind == "currency":
            found = [i for i, e in enumerate(excerpts) if w in e.text or CURRENCY_WORDS[w] & e.lower]
            ok_q = w in q.text or bool(CURRENCY_WORDS[w] & q.lower)
        else:
            found = [i for i, e in enumerate(excerpts) if stem(w) in e.stems or w.lower() in e.lower]
            ok_q = stem(w) in q.stems
        for i in found:
            per_source[i] += 1
        if found:
            from_memory += 1
            novel += adds(w, kind, q)
        elif not ok_q:
            missing.append(w)
    order = sorted((i for i, n in enumerate(per_source) if n), key=lambda i: -per_source[i])
    supported = not missing and novel > 0
    return Verdict(claim, supported, missing, order, from_memory)


def check_answer(answer: str, excerpts: Sequence[Evidence], question: str = "") -> list[Verdict]:
    """Each claim checked against the excerpts it cites; a claim that cites none, or whose cited
    excerpts do not back it, is checked against all of them (and then cites those that do)."""
    out = []
    for claim in claims(answer):
        numbers = [n for n in cited(claim) if 1 <= n <= len(excerpts)]
        verdict = None
        if numbers:
            own = check(claim, [excerpts[n - 1] for n in numbers], question)
            if own.supported:
                own.sources = [numbers[i] - 1 for i in own.sources]
                verdict = own
        if verdict is None:
            verdict = check(claim, excerpts, question)
            if verdict.supported:
                verdict.sources = _cover(claim, excerpts, question, verdict.sources)
        out.append(verdict)
    return out


def _cover(claim: str, excerpts: Sequence[Evidence], question: str, ranked: list[int]) -> list[int]:
    """The fewest excerpts (best first) that back the claim together."""
    chosen: list[int] = []
    for i in ranked:
        chosen.append(i)
        if check(claim, [excerpts[j] for j in chosen], question).supported:
            return chosen
    return ranked


def wanted(question: str) -> set[str]:
    """The question's content, as stems and digits (what an answer to it must be about)."""
    out = set()
    for w, kind in needs(question):
        if kind == "number":
            out.update(digits(w))
        elif kind == "code":
            out.add(w.lower())
        else:
            out.add(stem(w))
    return out


def coverage(question: str, text: str) -> float:
    """The share of the question's content that *text* speaks of (0 when it asks about nothing)."""
    want = wanted(question)
    if not want:
        return 0.0
    e = Evidence(text)
    return sum(1 for s in want if s in e.stems or s in e.numbers or s in e.lower) / len(want)


def best_sentence(text: str, question: str, context: str = "",
                  statements: bool = False, numbers: bool = False) -> tuple[str, float]:
    """The sentence of *text* that covers most of the question (with *context*, e.g. who said
    it, counted for every sentence), and that coverage. With *statements*, a sentence that is
    itself a question is passed over: it asks, it does not answer. With *numbers* (the question
    asks how much or how many), of sentences that cover as much, one that holds a number wins."""
    best, score, rank = text.strip(), -1.0, (-1.0, False)
    for sentence in claims(text) or [text]:
        if statements and sentence.rstrip(" \"'”)").endswith("?"):
            continue
        share = coverage(question, f"{context} {sentence}")
        key = (share, numbers and any(ch.isdigit() for ch in sentence))
        if key > rank:
            best, score, rank = sentence.strip(), share, key
    return best, max(score, 0.0)


# "What is my order number…?" asks for the value its moment labels "order": the word before a
# kind of identifier, and the kind itself ("booking reference", "gate number", "wifi password").
LABELLED = re.compile(r"\b([^\W\d_]+)\s+(number|no|code|id|reference|ref|pin|password|passcode)\b",
                      re.IGNORECASE)


def labels(question: str) -> set[str]:
    """The stems of the label a question asks a value by (empty when it asks for none)."""
    out: set[str] = set()
    for m in LABELLED.finditer(question):
        out.update(stem(w) for w in m.groups() if w.lower() not in GLUE)
    return out


def mislabelled(claim: str, question: str, text: str) -> list[str]:
    """The values (numbers, codes) of *claim* that *text* gives as something other than what
    *question* asks for: where a sentence holds the asked-for label and several values, the value
    meant is the one nearest the label ("order #A-55310 (running shoes, size 43)": 43 is the size,
    not the order number; of two as near, the one after the label). A value found nearest its
    label in any sentence, or in a sentence with no label or no other value, is not refused."""
    asked = labels(question)
    values = [w for w, kind in needs(claim) if kind in ("code", "number") and any(c.isdigit() for c in w)]
    if not asked or not values:
        return []
    sentences = []  # (words, each value's distance from the nearest label: empty with no label)
    for sentence in claims(text) or [text]:
        words = WORD.findall(sentence)
        at = [i for i, w in enumerate(words) if stem(w) in asked]
        # Labels come before their values ("gate B22, booking reference QX7PZT"): a value after
        # its label is nearer than one as far before it.
        gap = {i: min(i - j if i > j else j - i + 1 for j in at)
               for i, w in enumerate(words) if at and any(c.isdigit() for c in w)}
        sentences.append((words, gap))
    wrong = []
    for value in values:
        key, number = value.lower().strip(".-'"), digits(value)
        held = [(gap, spots) for words, gap in sentences
                if (spots := [i for i, w in enumerate(words)
                              if w.lower().strip(".-'") == key or digits(w) == number])]
        if held and not any(len(gap) < 2 or min(gap[i] for i in spots) <= min(gap.values())
                            for gap, spots in held):
            wrong.append(value)
    return wrong
