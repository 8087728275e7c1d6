"""Redaction that survives OCR noise at word edges, and password-manager windows however titled."""

import pytest

from mneme.capture.privacy import Exclusions
from mneme.capture.redact import redact
from mneme.capture.window import Window
from mneme.core.config import BY_NAME


@pytest.mark.parametrize("text, secret, kind", [
    ("Jpassword: hunter2xyz", "hunter2xyz", "password"),
    ("Jpwd: abc12345", "abc12345", "password"),
    ("assword: hunter2xyz", "hunter2xyz", "password"),
    ("IAKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE", "aws key"),
    ("key:AKIAIOSFODNN7EXAMPLEl", "AKIAIOSFODNN7EXAMPLE", "aws key"),
    ("|ghp_" + "a1B2" * 9, "a1B2a1B2", "github token"),
    ("«sk-proj-abc123def456ghi789jkl0", "abc123def456", "openai key"),
])
def test_secrets_are_found_with_ocr_noise_at_word_edges(text, secret, kind):
    out, found = redact(text)
    assert found[kind] == 1 and secret not in out, out


def test_noise_tolerance_does_not_eat_ordinary_words():
    text = "risk-assessment-framework-version and spin: fast, keywords: search, forward: next"
    assert redact(text)[0] == text


def test_a_window_titled_after_a_password_manager_is_excluded_whatever_its_class():
    ex = Exclusions(BY_NAME["excluded_apps"].default)
    assert ex.excluded(Window(1, "XTerm", "KeePassXC - Passwords"))
    assert ex.excluded(Window(2, "Firefox", "Vault | Bitwarden Web vault"))
    assert not ex.excluded(Window(3, "XTerm", "keepassxcompanion notes"))  # a whole name, not a prefix
    assert not ex.excluded(Window(4, "XTerm", "~/src"))
