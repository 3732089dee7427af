"""User-supplied text made safe to print on a terminal or write to a log: control characters
become visible escapes (`\\x1b`, `\\n`, `\\t`); printable Unicode is left as it is."""

import re

# C0 controls, DEL, C1 controls; line and paragraph separators, the bidirectional controls
# (which reorder what follows them: "Trojan source") and lone surrogates (unprintable: they
# would make print() fail).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
                     "\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _replace(match):
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xff else f"\\u{code:04x}"


def escape(text):
    """`text` (any value: str() of it) with every control character shown as an escape."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(_replace, text)


class EscapeFilter:
    """A logging filter that escapes each record's message (its arguments included), so that
    a log line is one line whatever a user sent. Tracebacks are left as they are. (Logging
    takes any object with a `filter` method: command lines need not import logging.)"""

    def filter(self, record):
        if record.args or _UNSAFE.search(str(record.msg)):
            record.msg = escape(record.getMessage())
            record.args = None
        return True


def escape_logs(logger=None):
    """Install EscapeFilter on every handler of `logger` (default: the root logger)."""
    import logging
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, EscapeFilter) for f in handler.filters):
            handler.addFilter(EscapeFilter())
