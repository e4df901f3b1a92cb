"""The program's one way to complain: a line on stderr, which qmail-smtpd sends to its log.

Every log line the program writes (stderr, syslog, mailstats.csv, quarantine.log,
qmail-queue.log) passes through one_line here, so text from mail (an attachment name decoded
from RFC 2231 may hold a newline, an escape sequence, a NUL) can never start a line of its own
or reach a terminal raw, and no line grows without bound.
"""

from __future__ import annotations

import os

# One log line, in bytes of UTF-8 without its newline. RFC 5424 asks syslog receivers to take
# 2048 octets (rsyslog's default is 8096, old BSD syslogd's 1024: such a daemon cuts the line,
# it does not split it); and a stderr line is far below PIPE_BUF (4096), so it reaches
# multilog through the pipe qmail-smtpd shares with other sessions in one write, never
# interleaved with theirs. Lists in lines are shortened where they are made (name the first
# few, count the rest); this is the backstop.
LOG_LINE_LIMIT = 2048
_CUT_MARK = "... (%d more bytes)"


def one_line(text: str, limit: int = LOG_LINE_LIMIT, keep: str = "") -> str:
    """`text` as one log line: control characters and undecodable bytes escaped, at most `limit` UTF-8 bytes.

    `keep`: characters that stay as they are (the TAB between the fields of mailstats.csv).
    """
    if not text.isprintable():
        text = "".join(c if c.isprintable() or c in keep else _escape(c) for c in text)
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    mark = _CUT_MARK % (len(encoded) - limit)
    kept = encoded[: limit - len(mark) - 2].decode("utf-8", "ignore")  # a character split by the cut is dropped
    return kept + _CUT_MARK % (len(encoded) - len(kept.encode("utf-8")))


def _escape(char: str) -> str:
    """A character that is not printable as `\\n`, `\\x1b`, `\\u2028`; a byte that was not UTF-8 as `\\xff`."""
    if "\udc80" <= char <= "\udcff":  # surrogateescape: a raw byte from mail
        return f"\\x{ord(char) - 0xDC00:02x}"
    return char.encode("unicode_escape").decode("ascii")


def say(text: str) -> None:
    """One clear line on stderr, tagged with the program name and pid."""
    prefix = f"qmail-scanner[{os.getpid()}]: "
    try:
        os.write(2, (prefix + one_line(text, LOG_LINE_LIMIT - len(prefix)) + "\n").encode("utf-8"))
    except OSError:
        pass
