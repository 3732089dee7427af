"""hq/text.py: what a user typed never reaches a terminal or a log as control characters."""

import logging

from hypothesis import given, strategies as st

from hq.text import EscapeFilter, escape

CONTROLS = {chr(c) for c in [*range(0x20), *range(0x7f, 0xa0), 0x2028, 0x2029, 0x202e]}


def test_controls_become_visible_escapes():
    """Catches a terminal-control leak: ESC, newline, tab, DEL and C1 print as escapes."""
    assert escape("a\x1b]0;pwned\x07b") == "a\\x1b]0;pwned\\x07b"
    assert escape("one\ntwo\tthree\r") == "one\\ntwo\\tthree\\r"
    assert escape("\x7f\x9b\x00") == "\\x7f\\x9b\\x00"
    assert escape("left\u202eright\u2028") == "left\\u202eright\\u2028"


def test_printable_unicode_and_other_values_are_kept():
    """Catches over-escaping: accents, CJK, emoji and backslashes stay as typed."""
    for text in ("plain", "é ünïcødé 日本 🙂", "sed 's/\\./x/'", ""):
        assert escape(text) == text
    assert escape(None) == "" and escape(42) == "42"


@given(st.text())
def test_escaped_text_holds_no_control_character(text):
    """Catches any control character (or lone surrogate) that escape() lets through."""
    out = escape(text)
    assert not CONTROLS & set(out)
    assert all(not 0xd800 <= ord(c) <= 0xdfff for c in out)
    out.encode("utf-8")     # printable whatever the text held
    if text.isprintable():
        assert out == text


def test_log_filter_escapes_message_and_arguments():
    """Catches a forged log line: a newline in a logged argument starts no new line."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "job %s: %s", ("a\nb", "\x1b[2J"),
                               None)
    EscapeFilter().filter(record)
    assert record.getMessage() == "job a\\nb: \\x1b[2J"
