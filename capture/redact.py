"""Secrets seen on screen are redacted before anything is stored: payment card numbers (Luhn),
API keys and tokens in common formats, IBANs (mod-97), and values shown next to password labels."""

from __future__ import annotations

import re
from collections import Counter

MASK = "[redacted {kind}]"

# OCR glues stray characters to word edges ("IAKIA…", "Jpassword:") and drops first letters
# ("assword:"): keys are found by their own shape anywhere in a word, not only at word starts.
TOKEN_PATTERNS = {
    "aws key": r"(?:AKIA|ASIA)[0-9A-Z]{16}",
    "github token": r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})",
    "slack token": r"xox[abposr]-[A-Za-z0-9-]{10,}",
    # inside a word only with a digit in it, so "risk-assessment-…" is not a key
    "openai key": r"(?:\bsk-|(?<=\w)sk-(?=[A-Za-z_-]*\d))(?:proj-|ant-)?[A-Za-z0-9_-]{20,}",
    "stripe key": r"[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}",
    "google key": r"AIza[0-9A-Za-z_-]{35}",
    "jwt": r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
    "bearer token": r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{20,}=*",
}
CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
PASSWORD = re.compile(r"(?i)((?:p?assword|passwort|passcode|passphrase|pwd|secret)|\bpin)\b(\s*[:=]\s*)(\S+)")


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    s = text.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


def redact(text: str) -> tuple[str, Counter]:
    """Text with secrets replaced, and how many of each kind were found."""
    found: Counter = Counter()

    def sub(kind):
        def repl(m):
            found[kind] += 1
            return MASK.format(kind=kind)
        return repl

    for kind, pattern in TOKEN_PATTERNS.items():
        text = re.sub(pattern, sub(kind), text)

    def card(m):
        digits = re.sub(r"\D", "", m.group(0))
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            found["card number"] += 1
            return MASK.format(kind="card number")
        return m.group(0)

    text = CARD.sub(card, text)

    def iban(m):
        if iban_ok(m.group(0)):
            found["iban"] += 1
            return MASK.format(kind="iban")
        return m.group(0)

    text = IBAN.sub(iban, text)

    def password(m):
        found["password"] += 1
        return f"{m.group(1)}{m.group(2)}{MASK.format(kind='password')}"

    text = PASSWORD.sub(password, text)
    return text, found
