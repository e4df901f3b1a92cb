"""The program's one way to complain: a line on stderr, which qmail-smtpd sends to its log.

Every stderr line starts with the local time in RFC 3339 form, then the syslog-style tag:

    2026-12-06T08:00:00.123+01:00 qmail-scanner[4711]: engine: stopped

so it reads alike under multilog or svlogd (which put their own stamp before it), in a file
that tcpserver's 2>> appends to, or in the journal; contrib/qs-report reads the time back.

Every log line the program writes (stderr, syslog, mailstats.csv, quarantine.log,
qmail-queue.log) passes through one_line here, so text from mail (an attachment name decoded
from RFC 2231 may hold a newline, an escape sequence, a NUL) can never start a line of its own
or reach a terminal raw, and no line grows without bound.
"""

from __future__ import annotations

import os
import time

# One log line, in bytes of UTF-8 without its newline. RFC 5424 asks syslog receivers to take
# 2048 octets (rsyslog's default is 8096, old BSD syslogd's 1024: such a daemon cuts the line,
# it does not split it); and a stderr line is far below PIPE_BUF (4096), so it reaches
# multilog through the pipe qmail-smtpd shares with other sessions in one write, never
# interleaved with theirs. Lists in lines are shortened where they are made (name the first
# few, count the rest); this is the backstop.
LOG_LINE_LIMIT = 2048
_CUT_MARK = "... (%d more bytes)"
PIPE_BUF = 4096  # POSIX guarantees 512; Linux and the BSDs 4096


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


def stamp(when: float | None = None) -> str:
    """The local time as RFC 3339 with milliseconds and the UTC offset: `2026-12-06T08:00:00.123+01:00`."""
    when = time.time() if when is None else when
    local = time.localtime(when)
    offset = local.tm_gmtoff // 60
    sign = "-" if offset < 0 else "+"
    offset = abs(offset)
    milliseconds = int(when % 1 * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", local) + f".{milliseconds:03d}{sign}{offset // 60:02d}:{offset % 60:02d}"


def say(text: str) -> None:
    """One clear line on stderr: the time, the program name and pid, the text."""
    say_lines([text])


def say_lines(texts: list[str]) -> None:
    """Lines on stderr, each stamped and tagged; written a few whole lines at a time, never split.

    A write to a pipe of at most PIPE_BUF (4096) bytes is atomic: a line never interleaves with
    the lines other qmail-smtpd sessions write into the same log at the same moment.
    """
    prefix = f"{stamp()} qmail-scanner[{os.getpid()}]: "
    room = LOG_LINE_LIMIT - len(prefix)
    chunk = b""
    try:
        for text in texts:
            line = (prefix + one_line(text, room) + "\n").encode("utf-8")
            if len(chunk) + len(line) > PIPE_BUF:
                os.write(2, chunk)
                chunk = b""
            chunk += line
        if chunk:
            os.write(2, chunk)
    except OSError:
        pass
