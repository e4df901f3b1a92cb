"""The message's own header block: where it ends, reading a value, writing ours, safe values, dates.

Not the MIME parser's header reader (unpack/headers.py): this module reads and rewrites the top
header block of the message as it goes to qmail-queue, the logs and the alerts. Everything
here is plain byte work: the clean delivery path imports it, so no re, email or typing.

The block ends at the first empty line (`\\n\\n`); a line holding only a CR does not end it.
That reads the widest block any mail reader could take for headers, so a forged header of
ours is removed wherever a reader might see it (see rewrite_headers).
"""

from __future__ import annotations

import binascii
import os
import time

from .unpack.headers import line_groups

TYPE_CHECKING = False  # typing costs milliseconds per message; only type checkers look here
if TYPE_CHECKING:
    from .message import Message
    from .settings import Settings

# A header block is looked for in at most this many bytes; beyond that the rest passes unchanged.
HEADER_BLOCK_LIMIT = 1 << 20
TRACE_HEADER_NAME = "x-qmail-scanner-diagnostics"
SPAM_HEADER_PREFIX = b"x-spam-"
# rewrite_headers' shadow of a block: line ends (LF, CR) an LF, blanks ' ', everything else 'x'.
_REWRITE_SHADOW = bytes(10 if c in (10, 13) else 32 if c in (32, 9) else 120 for c in range(256))
ENCODED_WORD_BYTES = 45  # UTF-8 bytes per encoded word: 75 characters at most once in base64 (RFC 2047)


# ---------------------------------------------------------------- values from outside


def header_safe(value: str, limit: int = 200) -> str:
    """A value from outside made safe for a header: no control characters, bounded."""
    return "".join(c if c.isprintable() else "_" for c in value[:limit])


def rfc2822_date(when: float | None = None) -> str:
    """`Wed, 26 Mar 2008 10:00:00 +0100` in local time (the C locale's names): the logs' date."""
    return time.strftime("%a, %d %b %Y %H:%M:%S %z", time.localtime(when))


# ---------------------------------------------------------------- the block


def split_header_block(head: bytes, fd: int | None = None, limit: int = HEADER_BLOCK_LIMIT) -> int:
    """Offset where the header block ends (just after the last header line's newline).

    The block ends at the first empty line, LF or CRLF, as mail readers and the unpacker end
    it. `head` is the start of the message; when the empty line is not in it, more is read
    from `fd` up to `limit`. A message that is all headers ends at its last newline.
    """
    if head.startswith((b"\n", b"\r\n")):
        return 0
    end = _empty_line(head, 0)
    if end >= 0:
        return end
    if fd is not None and len(head) < limit:
        more = bytearray(head)
        while len(more) < limit:
            chunk = os.pread(fd, min(1 << 16, limit - len(more)), len(more))
            if not chunk:
                break
            more += chunk
            end = _empty_line(more, max(0, len(more) - len(chunk) - 2))
            if end >= 0:
                return end
        head = bytes(more)
    return head.rfind(b"\n") + 1


def _empty_line(data: bytes | bytearray, start: int) -> int:
    """Offset just after the newline that precedes the first empty line (LF or CRLF) from `start`, or -1."""
    found = [end for end in (data.find(b"\n\n", start), data.find(b"\n\r\n", start)) if end >= 0]
    return min(found) + 1 if found else -1


def read_header_block(head: bytes, fd: int) -> tuple[bytes, int]:
    """The header block of the message open on `fd` (whose start is `head`), and where its body starts."""
    end = split_header_block(head, fd)
    block = head[:end] if end <= len(head) else os.pread(fd, end, 0)
    return block, end


def header_name(line: bytes) -> bytes:
    """The lower-cased name of a header line, or b"" for a continuation or a non-header."""
    if not line or line[:1] in (b" ", b"\t"):
        return b""
    colon = line.find(b":")
    return line[:colon].rstrip().lower() if colon > 0 else b""


# ---------------------------------------------------------------- reading


def header_values(headers: bytes, name: bytes) -> list[bytes]:
    """Values of every header of that name (first line only: enough for the tokens looked at)."""
    values = []
    for line in headers.split(b"\n"):
        colon = line.find(b":")
        if colon > 0 and line[:colon].strip().lower() == name:
            values.append(line[colon + 1 :])
    return values


def raw_header_value(head: bytes, name: bytes) -> str:
    """The first header of that name in the top header block, unfolded."""
    collected: list[bytes] = []
    for line in head.split(b"\n"):
        if not line:
            break
        if collected:
            if line[:1] in (b" ", b"\t"):
                collected.append(line.strip())
                continue
            break
        colon = line.find(b":")
        if colon > 0 and line[:colon].rstrip().lower() == name:
            collected.append(line[colon + 1 :].strip())
    return b" ".join(collected).decode("utf-8", "replace")


def header_subject(message: Message) -> str:
    """The Subject for display: as the unpacker decoded it, else as written; one line, bounded."""
    value = getattr(message.unpacked, "subject", None)
    if value is None:
        value = raw_header_value(message.area.header_bytes, b"subject")
    return header_safe(" ".join(value.split()), 200)


def header_message_id(message: Message) -> str:
    """The Message-ID header."""
    value = getattr(message.unpacked, "message_id", None)
    if value is None:
        value = raw_header_value(message.area.header_bytes, b"message-id")
    return header_safe(value, 200)


# ---------------------------------------------------------------- writing


def rewrite_headers(block: bytes, drop_names: frozenset, drop_prefixes: tuple = (), subject_tag: str = "") -> bytes:
    """Remove headers by name (with their continuation lines) and tag the first Subject.

    Lines are split as Python's email reads them (a bare CR ends a line too), so a forged
    header hidden behind a CR is removed as well.
    """
    out = []
    tagged = not subject_tag
    tag = subject_tag.encode("utf-8", "replace")
    # A header and the lines folded under it are one group (found with find, C speed: a header
    # folded into a million short lines is not a million Python steps); the shadow marks every
    # line end splitlines knows (LF, CR LF, a bare CR) with an LF at the same offset.
    shadow = (block.replace(b"\r\n", b"x\n") if b"\r" in block else block).translate(_REWRITE_SHADOW)
    for start, first_end, end in line_groups(block, shadow):
        line = block[start:first_end]
        name = header_name(line)
        if name in drop_names or name.startswith(drop_prefixes):
            continue  # with its continuation lines
        if not tagged and name == b"subject":
            tagged = True
            value = line[line.find(b":") + 1 :].lstrip(b" \t")
            if not value.startswith(tag):
                line = b"Subject: " + tag + b" " + value
        out.append(line)
        out.append(block[first_end:end])
    if not tagged:
        out.append(b"Subject: " + tag + b"\n")
    return b"".join(out)


def forged_header_names(settings: Settings) -> tuple[frozenset, tuple]:
    """Names (and prefixes) of headers only this program may write: removed from incoming mail."""
    text = settings.dscr_hdrs_text.lower().encode()
    names = {TRACE_HEADER_NAME.encode(), text, text + b"-mail-from", text + b"-rcpt-to", text + b"-message-id"}
    prefixes: tuple = ()
    if any(scanner.kind == "spam" for scanner in settings.scanners):
        prefixes = (SPAM_HEADER_PREFIX,)
    return frozenset(names), prefixes


def render_header(name: str, value: str) -> bytes:
    """One header line from a name and a (possibly multi-line) value, control characters removed."""
    lines = [header_safe(line.strip(), 2000) for line in value.splitlines() if line.strip()] or [""]
    return (f"{header_safe(name, 100)}: " + "\n\t".join(lines) + "\n").encode("utf-8", "surrogateescape")


def encode_words(text: str) -> str:
    """RFC 2047 encoded words for a header value that is not plain ASCII."""
    if text.isascii():
        return text
    words, chunk = [], ""
    for char in text:
        if len((chunk + char).encode("utf-8")) > ENCODED_WORD_BYTES:
            words.append(chunk)
            chunk = ""
        chunk += char
    words.append(chunk)
    encoded = (binascii.b2a_base64(word.encode("utf-8"), newline=False).decode("ascii") for word in words)
    return " ".join(f"=?UTF-8?B?{text}?=" for text in encoded)
